// Built against a newer minor ABI than the runtime's: refused (the runtime cannot know the new fields).
#include "surf/plugin.h"

extern "C" __attribute__((visibility("default"))) const SurfPluginDescriptor* surf_plugin_entry(void) {
  static const char* const types[] = {"surf-test-newer-minor"};
  static SurfPluginDescriptor d{};
  d.abi_major = SURF_ABI_MAJOR;
  d.abi_minor = SURF_ABI_MINOR + 1;
  d.struct_size = sizeof(SurfPluginDescriptor);
  d.build_tag = SURF_BUILD_TAG;
  d.name = "test-newer-minor";
  d.version = "0.0.1";
  d.model_types = types;
  d.model_type_count = 1;
  return &d;
}
