// Claims an ABI major the runtime does not speak.
#include "surf/plugin.h"

extern "C" __attribute__((visibility("default"))) const SurfPluginDescriptor* surf_plugin_entry(void) {
  static const char* const types[] = {"surf-test-wrong-abi"};
  static SurfPluginDescriptor d{};
  d.abi_major = SURF_ABI_MAJOR + 1;
  d.abi_minor = 0;
  d.struct_size = sizeof(SurfPluginDescriptor);
  d.build_tag = SURF_BUILD_TAG;
  d.name = "test-wrong-abi";
  d.version = "0.0.1";
  d.model_types = types;
  d.model_type_count = 1;
  return &d;
}
