// Turns a SOURCE string into a provider and the plugin that serves its model_type.
#pragma once

#include <memory>
#include <string>

#include "plugins/plugin_registry.h"
#include "sources/component_provider.h"

namespace surf {

struct SourceDescription {
  std::string kind;
  std::shared_ptr<ComponentProvider> provider;
  std::shared_ptr<const LoadedPlugin> plugin;
};

SourceDescription open_source(const std::string& source, const OpenOptions& options, PluginRegistry& registry,
                              std::shared_ptr<BufferPool> pool);

}  // namespace surf
