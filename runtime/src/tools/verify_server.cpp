// `surf verify ws[s]://...`: every chunk and file of a weight server's manifest fetched through
// the server and checked against the manifest.
#include "sources/component_provider.h"
#include "surf/runtime.h"
#include "text/model_files.h"

namespace surf {

size_t verify_weight_server(const std::string& url, const OpenOptions& options,
                            const std::function<void(const VerifyItem&)>& each) {
  const WsSource ws = open_ws_source(url, options, std::make_shared<BufferPool>(1));
  const Manifest& m = ws.provider->manifest();
  size_t bad = 0;
  // The provider refuses a chunk or file whose size or checksum differs from the manifest's
  // (Error corrupt) and retries only network failures, so one bad chunk costs one fetch.
  auto check = [&](VerifyItem item, const std::function<void()>& fetch) {
    try {
      fetch();
    } catch (const Error& e) {
      if (e.code() != ErrorCode::corrupt && e.code() != ErrorCode::not_found) throw;
      item.problem = e.what();
    }
    bad += item.problem.empty() ? 0 : 1;
    each(item);
  };
  for (const auto& c : m.components) {
    check({c.id, c.bytes, ""}, [&] { ws.provider->fetch(c.id); });
  }
  for (const auto& f : m.files) {
    check({"files/" + f.name, f.bytes, ""}, [&] { ws.files->read(f.name); });
  }
  return bad;
}

}  // namespace surf
