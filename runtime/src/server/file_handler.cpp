// get_file: a file the model's manifest lists under `files` (tokenizer.json, tokenizer_config.json,
// special_tokens_map.json, generation_config.json, a SentencePiece model), so a client can
// tokenize with nothing local. Only listed names are served; reads run on the loader pool.
#include <boost/asio/post.hpp>

#include "server/handlers.h"

namespace surf::server {

void handle_get_file(const std::shared_ptr<ServerState>& state, uint64_t id, const wire::GetFile& request,
                     const Respond& respond) {
  const ServedModel* m = find_model(*state, id, request.model, respond);
  if (m == nullptr) return;
  if (!is_valid_component_id(request.name)) {
    return respond(error_answer(*state, id, ErrorCode::invalid_argument,
                                "invalid file name " + wire::quote(request.name) + ": only [A-Za-z0-9_.-], no '..'"));
  }
  const ManifestFile* f = m->manifest.find_file(request.name);
  if (f == nullptr) {
    return respond(error_answer(*state, id, ErrorCode::not_found,
                                "model " + wire::quote(request.model) + " has no file " + wire::quote(request.name)));
  }
  boost::asio::post(state->loaders, [state, id, request, checksum = f->checksum, backend = m->backend, respond] {
    ByteBuffer data;
    try {
      backend->get(file_key(request.name), data);
    } catch (const std::exception& e) {
      return respond(error_answer(*state, id, ErrorCode::internal,
                                  "cannot read file " + wire::quote(request.name) + ": " + e.what()));
    }
    if (data.size() > 0xffffffffu) return respond(error_answer(*state, id, ErrorCode::too_large, "file over 4 GiB"));
    Outgoing o;
    wire::encode_answer(o.head, id, wire::FileAnswer{request.model, request.name, checksum, data.data(), data.size()});
    respond(std::move(o));
  });
}

}  // namespace surf::server
