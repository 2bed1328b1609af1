// Throws from plan() and create(): the runtime must turn both into errors, never crash.
#include <stdexcept>

#include "surf/plugin.h"

namespace {
struct ThrowingArch {
  static surf::ComponentPlan plan(const surf::ModelConfig& c) {
    if (c.get_bool("throw_in_plan", false)) throw std::runtime_error("boom from plan");
    surf::ComponentPlan p;
    p.components.push_back({"bias", surf::ComponentRole::resident, {{"value", {"bias"}, true}}});
    p.execution_order = {"bias"};
    return p;
  }
  static std::unique_ptr<surf::Model> create(const surf::ModelConfig&) { throw std::runtime_error("boom from create"); }
};
}  // namespace

SURF_PLUGIN(ThrowingArch, "test-throwing", "0.0.1", "surf-test-throwing")
