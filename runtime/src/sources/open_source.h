// Turns a SOURCE string into a provider and the plugin that serves its model_type.
#pragma once

#include <memory>
#include <string>

#include "plugins/plugin_registry.h"
#include "sources/component_provider.h"
#include "text/model_files.h"

namespace surf {

struct SourceDescription {
  std::string kind;
  std::shared_ptr<ComponentProvider> provider;
  std::shared_ptr<const LoadedPlugin> plugin;
  std::shared_ptr<ModelFiles> files;  // tokenizer files, generation_config.json
};

// The files of SOURCE alone (no plugin, no weights): for tokenizing without opening the model.
std::shared_ptr<ModelFiles> open_model_files(const std::string& source, const OpenOptions& options);

SourceDescription open_source(const std::string& source, const OpenOptions& options, PluginRegistry& registry,
                              std::shared_ptr<BufferPool> pool);

}  // namespace surf
