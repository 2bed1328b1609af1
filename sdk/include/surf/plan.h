// Building a component plan, and naming each tensor once. An architecture keeps one table of
// tensor names; the plan maps them to HuggingFace names and forward reads them by the same entry:
//
//   namespace names {
//   constexpr surf::TensorName attn_norm{"input_layernorm.weight"};
//   constexpr surf::LinearName q{"self_attn.q_proj"};          // q.weight (+ q.bias)
//   }
//   PlanBuilder p("model.");                                      // optional base-model prefix
//   p.add("embed", ComponentRole::resident).tensor({"weight", "embed_tokens.weight"});
//   p.add("layers.0", ComponentRole::streamed, "layers.0.").tensor(names::attn_norm).linear(names::q);
//   ...
//   const Tensor& w = layer.get(names::attn_norm);  Tensor y = linear(x, layer, names::q);
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "surf/plugin.h"
#include "surf/export.h"

SURF_SDK_PUBLIC_BEGIN

namespace surf {

// A tensor's name inside its component; its HF name is the component's HF prefix + `hf`
// (or + `name` when `hf` is null).
struct TensorName {
  const char* name;
  const char* hf = nullptr;
};

// A linear layer: NAME.weight and, when present, NAME.bias.
struct LinearName {
  const char* name;
  std::string weight() const { return std::string(name) + ".weight"; }
  std::string bias() const { return std::string(name) + ".bias"; }
};

enum class Bias { none, optional, required };

const Tensor& get(const Component& c, const TensorName& t);
// y = x W^T (+ b): nn.Linear layout.
Tensor linear(const Tensor& x, const Component& c, const LinearName& l);
// y = x W (+ b): GPT-2's Conv1D layout.
Tensor linear_in_out(const Tensor& x, const Component& c, const LinearName& l);

class PlanBuilder {
 public:
  // The HF names a tensor may have, most preferred first. Default: with and without the
  // base-model prefix given to the constructor.
  using Variants = std::function<std::vector<std::string>(const std::string& hf_name)>;

  class ComponentBuilder {
   public:
    ComponentBuilder& tensor(const TensorName& t, bool required = true);
    // An nn.Linear layer (weight [out, in]): its weight is listed in ComponentPlan::linear_weights,
    // so quantized stores may hold it as Q8_0/Q4_0.
    ComponentBuilder& linear(const LinearName& l, Bias bias = Bias::none);
    // A GPT-2 style Conv1D layer (weight [in, out], for linear_in_out): not listed, never quantized.
    ComponentBuilder& linear_in_out(const LinearName& l, Bias bias = Bias::none);
    // Lists a tensor of this component, added with tensor()/tensor_from(), as an nn.Linear weight
    // [out, in] that the model only passes to ops::linear (T5's projections, an untied lm_head).
    ComponentBuilder& linear_weight(const std::string& name);
    // Tensors added after this take HF names `prefix` + their name (sublayers under other paths).
    ComponentBuilder& hf_prefix(std::string prefix) {
      hf_prefix_ = std::move(prefix);
      return *this;
    }
    // Explicit HF candidates, used as given (no prefix variants).
    ComponentBuilder& tensor_from(std::string name, std::vector<std::string> hf_names, bool required = true);

   private:
    friend class PlanBuilder;
    ComponentBuilder(PlanBuilder& plan, size_t index, std::string hf_prefix)
        : plan_(plan), index_(index), hf_prefix_(std::move(hf_prefix)) {}
    PlanBuilder& plan_;
    size_t index_;
    std::string hf_prefix_;
  };

  explicit PlanBuilder(std::string optional_prefix = "");
  // Replaces the default variants (e.g. to accept legacy names as well).
  PlanBuilder& variants(Variants v);
  // A component and its place in the execution order, in one call. Tensors added to it get HF
  // names `hf_prefix` + their name.
  ComponentBuilder& add(std::string id, ComponentRole role, std::string hf_prefix = "");
  // HF tensors that are not parameters (buffers) or belong to parts this plugin does not run.
  PlanBuilder& ignore_suffix(std::string suffix);
  PlanBuilder& ignore_prefix(std::string prefix);
  ComponentPlan build();

 private:
  ComponentPlan plan_;
  Variants variants_;
  std::vector<std::unique_ptr<ComponentBuilder>> builders_;
};

}  // namespace surf

SURF_SDK_PUBLIC_END
