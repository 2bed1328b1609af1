#include "plugins/plugin_registry.h"

#include <boost/dll/runtime_symbol_info.hpp>
#include <boost/dll/shared_library.hpp>
#include <algorithm>
#include <cstddef>
#include <cstdlib>
#include <filesystem>
#include <set>

#include "surf/log.h"
#include "surf/version.h"

namespace fs = std::filesystem;

namespace surf {

const char* plugin_load_status_name(PluginLoadStatus s) {
  switch (s) {
    case PluginLoadStatus::loaded:
      return "loaded";
    case PluginLoadStatus::open_failed:
      return "open_failed";
    case PluginLoadStatus::missing_entry_point:
      return "missing_entry_point";
    case PluginLoadStatus::wrong_abi:
      return "wrong_abi";
    case PluginLoadStatus::build_mismatch:
      return "build_mismatch";
    case PluginLoadStatus::invalid_descriptor:
      return "invalid_descriptor";
    case PluginLoadStatus::shadowed:
      return "shadowed";
  }
  return "?";
}

void throw_status(const SurfStatus& status, const std::string& what) {
  int code = status.code;
  if (code <= 0 || code > static_cast<int>(ErrorCode::internal)) code = static_cast<int>(ErrorCode::internal);
  throw Error(static_cast<ErrorCode>(code), what.empty() ? status.message : what + ": " + status.message);
}

PluginModel::~PluginModel() { plugin_->descriptor().destroy_model(model_); }

void PluginModel::forward(const TensorMap& in, const RunOptions& opt, ComponentSource& src, TensorMap& out) {
  SurfStatus st{};
  if (plugin_->descriptor().forward(model_, &in, &opt, &src, &out, &st) != 0) throw_status(st, "");
}

void SequenceDeleter::operator()(Sequence* s) const { plugin->descriptor().destroy_sequence(s); }

bool PluginModel::decodes() const {
  const SurfPluginDescriptor& d = plugin_->descriptor();
  return d.struct_size >= offsetof(SurfPluginDescriptor, destroy_sequence) + sizeof(void*) && d.start != nullptr &&
         d.step != nullptr && d.destroy_sequence != nullptr;
}

std::vector<SequenceHandle> PluginModel::start(const TensorMap& in, int64_t max_new_tokens, ComponentSource& src) {
  std::vector<Sequence*> raw;
  SurfStatus st{};
  const int rc = plugin_->descriptor().start(model_, &in, max_new_tokens, &src, &raw, &st);
  std::vector<SequenceHandle> out;
  for (Sequence* s : raw) out.emplace_back(s, SequenceDeleter{plugin_});
  if (rc != 0) throw_status(st, "");
  return out;
}

Tensor PluginModel::step(const std::vector<Sequence*>& sequences, ComponentSource& src) {
  Tensor logits;
  SurfStatus st{};
  if (plugin_->descriptor().step(model_, &sequences, &src, &logits, &st) != 0) throw_status(st, "");
  return logits;
}

void PluginModel::generate(const TensorMap& in, const RunOptions& opt, ComponentSource& src, TensorMap& out) {
  SurfStatus st{};
  if (plugin_->descriptor().generate(model_, &in, &opt, &src, &out, &st) != 0) throw_status(st, "");
}

ComponentPlan LoadedPlugin::plan(const ModelConfig& config) const {
  SurfStatus st{};
  ComponentPlan p;
  if (d_->plan(&config, &p, &st) != 0) throw_status(st, "plugin '" + name() + "'");
  return p;
}

std::unique_ptr<PluginModel> LoadedPlugin::create_model(const ModelConfig& config) const {
  SurfStatus st{};
  void* m = nullptr;
  if (d_->create_model(&config, &m, &st) != 0) throw_status(st, "plugin '" + name() + "' failed to create a model");
  if (m == nullptr) fail(ErrorCode::internal, "plugin '" + name() + "' returned no model");
  return std::make_unique<PluginModel>(shared_from_this(), m);
}

std::vector<std::string> plugin_search_path(const std::vector<std::string>& explicit_dirs) {
  std::vector<std::string> dirs(explicit_dirs.begin(), explicit_dirs.end());
  if (const char* env = std::getenv("SURF_PLUGIN_PATH")) {
    std::string s(env);
    size_t start = 0;
    while (start <= s.size()) {
      size_t colon = s.find(':', start);
      std::string part = s.substr(start, colon == std::string::npos ? std::string::npos : colon - start);
      if (!part.empty()) dirs.push_back(part);
      if (colon == std::string::npos) break;
      start = colon + 1;
    }
  }
  // This copy's own plugins first. An installed tree that was moved (or installed with DESTDIR): its plugins sit beside
  // the library (libdir/surf/plugins), or at the same path relative to an executable's bindir.
  {
    std::error_code loc_ec;
    const fs::path self = boost::dll::this_line_location(loc_ec).string();
    fs::path relocated;
    if (!loc_ec && self.filename().string().rfind("libsurf-runtime.so", 0) == 0) {
      relocated = self.parent_path() / "surf" / "plugins";
    }
#ifdef SURF_PLUGIN_DIR_FROM_BINDIR
    else if (!loc_ec && std::string_view(SURF_PLUGIN_DIR_FROM_BINDIR) != "") {
      relocated = self.parent_path() / SURF_PLUGIN_DIR_FROM_BINDIR;
    }
#endif
    std::error_code dir_ec;
    if (!relocated.empty() && fs::is_directory(relocated, dir_ec)) {
      const std::string r = relocated.lexically_normal().string();
      if (std::find(dirs.begin(), dirs.end(), r) == dirs.end()) dirs.push_back(r);
    }
  }
#ifdef SURF_PLUGIN_INSTALL_DIR
  if (std::find(dirs.begin(), dirs.end(), SURF_PLUGIN_INSTALL_DIR) == dirs.end())
    dirs.push_back(SURF_PLUGIN_INSTALL_DIR);
#endif
    // Uninstalled: an executable inside this build tree uses the build tree's plugins.
#ifdef SURF_BUILD_ROOT
  std::error_code ec;
  const std::string exe = boost::dll::program_location().string();
  const fs::path build_plugins = fs::path(SURF_BUILD_ROOT) / "plugins";
  if (exe.rfind(std::string(SURF_BUILD_ROOT) + "/", 0) == 0 && fs::is_directory(build_plugins, ec)) {
    dirs.push_back(build_plugins.string());
  }
#endif
  return dirs;
}

namespace {

// *.so files in dir and its immediate subdirectories, sorted for a stable order.
std::vector<fs::path> candidate_files(const fs::path& dir) {
  std::vector<fs::path> out;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return out;
  auto consider = [&](const fs::directory_entry& e) {
    if (e.is_regular_file(ec) && e.path().extension() == ".so") out.push_back(e.path());
  };
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    if (e.is_directory(ec)) {
      for (const auto& sub : fs::directory_iterator(e.path(), ec)) consider(sub);
    } else {
      consider(e);
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

constexpr uint32_t kMinDescriptorSize = offsetof(SurfPluginDescriptor, generate) + sizeof(void*);

}  // namespace

PluginRegistry::PluginRegistry(const std::vector<std::string>& explicit_dirs)
    : dirs_(plugin_search_path(explicit_dirs)) {
  std::set<fs::path> seen;
  for (const auto& dir : dirs_) {
    for (const auto& file : candidate_files(dir)) {
      std::error_code ec;
      fs::path canon = fs::weakly_canonical(file, ec);
      if (!seen.insert(canon).second) continue;
      PluginLoadResult r{file.string(), PluginLoadStatus::loaded, "", "", "", {}};
      std::shared_ptr<boost::dll::shared_library> lib;
      try {
        lib = std::make_shared<boost::dll::shared_library>(
            boost::dll::fs::path(file.string()), boost::dll::load_mode::rtld_now | boost::dll::load_mode::rtld_local);
      } catch (const std::exception& e) {
        r.status = PluginLoadStatus::open_failed;
        r.message = std::string("cannot load: ") + e.what();
        results_.push_back(r);
        continue;
      }
      if (!lib->has(SURF_PLUGIN_ENTRY_NAME)) {
        r.status = PluginLoadStatus::missing_entry_point;
        r.message = "no '" SURF_PLUGIN_ENTRY_NAME "' entry point: not a surf plugin";
        results_.push_back(r);
        continue;
      }
      const SurfPluginDescriptor* d = lib->get<const SurfPluginDescriptor*()>(SURF_PLUGIN_ENTRY_NAME)();
      if (d == nullptr || d->struct_size < 3 * sizeof(uint32_t)) {
        r.status = PluginLoadStatus::invalid_descriptor;
        r.message = "entry point returned no valid descriptor";
        results_.push_back(r);
        continue;
      }
      if (d->abi_major != SURF_ABI_MAJOR || d->abi_minor > SURF_ABI_MINOR) {
        r.status = PluginLoadStatus::wrong_abi;
        r.message = "plugin built for SDK ABI " + std::to_string(d->abi_major) + "." + std::to_string(d->abi_minor) +
                    ", this runtime supports ABI " + std::to_string(SURF_ABI_MAJOR) + "." +
                    std::to_string(SURF_ABI_MINOR) +
                    (d->abi_major != SURF_ABI_MAJOR ? " (major differs)" : " (plugin is newer)") +
                    ": rebuild the plugin against this SDK";
        results_.push_back(r);
        continue;
      }
      if (d->struct_size < kMinDescriptorSize || d->name == nullptr || d->version == nullptr ||
          d->build_tag == nullptr || d->model_types == nullptr || d->plan == nullptr || d->create_model == nullptr ||
          d->destroy_model == nullptr || d->forward == nullptr || d->generate == nullptr) {
        r.status = PluginLoadStatus::invalid_descriptor;
        r.message = "descriptor is incomplete (struct_size " + std::to_string(d->struct_size) + ")";
        results_.push_back(r);
        continue;
      }
      r.name = d->name;
      r.version = d->version;
      for (uint32_t i = 0; i < d->model_type_count; ++i) r.model_types.push_back(d->model_types[i]);
      if (std::string(d->build_tag) != SURF_BUILD_TAG) {
        r.status = PluginLoadStatus::build_mismatch;
        r.message = std::string("plugin build '") + d->build_tag + "' differs from the runtime's '" + SURF_BUILD_TAG +
                    "': rebuild the plugin with the same compiler and C++ library";
        results_.push_back(r);
        continue;
      }
      auto plugin = std::make_shared<const LoadedPlugin>(std::shared_ptr<void>(lib, lib.get()), d, file.string());
      bool any_new = false;
      for (const auto& t : r.model_types) {
        if (!by_type_.count(t)) {
          by_type_[t] = plugin;
          any_new = true;
        }
      }
      if (!any_new) {
        r.status = PluginLoadStatus::shadowed;
        r.message = "its model types are served by a plugin found earlier in the search path";
      }
      results_.push_back(r);
    }
  }
  for (const auto& r : results_) {
    if (r.status != PluginLoadStatus::loaded && r.status != PluginLoadStatus::shadowed) {
      log_info("skipped plugin '" + r.path + "': " + r.message);
    }
  }
}

std::shared_ptr<const LoadedPlugin> PluginRegistry::find(const std::string& model_type) const {
  auto it = by_type_.find(model_type);
  if (it != by_type_.end()) return it->second;
  std::string available, searched;
  for (const auto& [t, _] : by_type_) available += (available.empty() ? "" : ", ") + t;
  for (const auto& d : dirs_) searched += (searched.empty() ? "" : ", ") + d;
  fail(ErrorCode::not_found, "no plugin serves model_type '" + model_type +
                                 "' (available: " + (available.empty() ? "none" : available) +
                                 "; searched: " + (searched.empty() ? "nothing" : searched) + ")");
}

std::vector<PluginLoadResult> scan_plugins(const std::vector<std::string>& explicit_dirs) {
  return PluginRegistry(explicit_dirs).results();
}

}  // namespace surf
