// Loads architecture plugins (Boost.DLL) and wraps their C entry points in a C++ API that
// throws surf::Error on the runtime's side of the boundary.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "surf/plugin.h"
#include "surf/runtime.h"

namespace surf {

class LoadedPlugin;

// A decoding sequence made by a plugin: destroyed by it, which stays loaded meanwhile.
struct SequenceDeleter {
  std::shared_ptr<const LoadedPlugin> plugin;
  void operator()(Sequence* s) const;
};
using SequenceHandle = std::unique_ptr<Sequence, SequenceDeleter>;

// A model instance created by a plugin; destroyed by the plugin, which stays loaded meanwhile.
class PluginModel {
 public:
  PluginModel(std::shared_ptr<const LoadedPlugin> plugin, void* model) : plugin_(std::move(plugin)), model_(model) {}
  ~PluginModel();
  PluginModel(const PluginModel&) = delete;
  PluginModel& operator=(const PluginModel&) = delete;
  void forward(const TensorMap& in, const RunOptions& opt, ComponentSource& src, TensorMap& out);
  // ABI 1.1 plugins: incremental decoding driven by the runtime.
  bool decodes() const;
  std::vector<SequenceHandle> start(const TensorMap& in, int64_t max_new_tokens, ComponentSource& src);
  Tensor step(const std::vector<Sequence*>& sequences, ComponentSource& src);
  // ABI 1.0 plugins: their own greedy loop.
  void generate(const TensorMap& in, const RunOptions& opt, ComponentSource& src, TensorMap& out);

 private:
  std::shared_ptr<const LoadedPlugin> plugin_;
  void* model_;
};

class LoadedPlugin : public std::enable_shared_from_this<LoadedPlugin> {
 public:
  LoadedPlugin(std::shared_ptr<void> library, const SurfPluginDescriptor* d, std::string path)
      : library_(std::move(library)), d_(d), path_(std::move(path)) {}
  std::string name() const { return d_->name; }
  std::string version() const { return d_->version; }
  const std::string& path() const { return path_; }
  ComponentPlan plan(const ModelConfig& config) const;
  std::unique_ptr<PluginModel> create_model(const ModelConfig& config) const;
  const SurfPluginDescriptor& descriptor() const { return *d_; }

 private:
  std::shared_ptr<void> library_;  // keeps the shared library loaded
  const SurfPluginDescriptor* d_;
  std::string path_;
};

class PluginRegistry {
 public:
  explicit PluginRegistry(const std::vector<std::string>& explicit_dirs);
  const std::vector<PluginLoadResult>& results() const { return results_; }
  // Error(not_found) naming the model_type, the directories searched and the types available.
  std::shared_ptr<const LoadedPlugin> find(const std::string& model_type) const;

 private:
  std::vector<std::string> dirs_;
  std::vector<PluginLoadResult> results_;
  std::map<std::string, std::shared_ptr<const LoadedPlugin>> by_type_;
};

// Turns a failed SurfStatus into a surf::Error (prefixing `what`).
void throw_status(const SurfStatus& status, const std::string& what);

}  // namespace surf
