// A shared library that is not a surf plugin: no surf_plugin_entry.
extern "C" __attribute__((visibility("default"))) int some_other_function(void) { return 42; }
