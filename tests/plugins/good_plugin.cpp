// A minimal plugin: one resident component; "forward" adds its bias to input_ids (as f32).
#include "surf/plugin.h"

namespace {

class EchoModel final : public surf::Model {
 public:
  void forward(const surf::TensorMap& in, const surf::RunOptions&, surf::ComponentSource& src,
               surf::TensorMap& out) override {
    const surf::Tensor& ids = surf::require_input(in, "input_ids");
    surf::ComponentRef c = src.acquire("bias");
    const float b = c->get("value").f32()[0];
    surf::Tensor y = surf::Tensor::empty(surf::DType::F32, ids.shape());
    for (int64_t i = 0; i < ids.numel(); ++i) y.f32()[i] = static_cast<float>(ids.i64()[i]) + b;
    out["echo"] = y;
  }
};

struct EchoArch {
  static surf::ComponentPlan plan(const surf::ModelConfig&) {
    surf::ComponentPlan p;
    p.components.push_back({"bias", surf::ComponentRole::resident, {{"value", {"bias"}, true}}});
    p.execution_order = {"bias"};
    return p;
  }
  static std::unique_ptr<surf::Model> create(const surf::ModelConfig&) { return std::make_unique<EchoModel>(); }
};

}  // namespace

SURF_PLUGIN(EchoArch, "test-good", "1.2.3", "surf-test-echo")
