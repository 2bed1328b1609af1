#include "surf/plan.h"

#include "surf/ops.h"

namespace surf {

const Tensor& get(const Component& c, const TensorName& t) { return c.get(t.name); }

Tensor linear(const Tensor& x, const Component& c, const LinearName& l) {
  return ops::linear(x, c.get(l.weight()), c.find(l.bias()));
}

Tensor linear_in_out(const Tensor& x, const Component& c, const LinearName& l) {
  return ops::linear_in_out(x, c.get(l.weight()), c.find(l.bias()));
}

PlanBuilder::PlanBuilder(std::string optional_prefix) {
  variants_ = [prefix = std::move(optional_prefix)](const std::string& hf) {
    return prefix.empty() ? std::vector<std::string>{hf} : with_optional_prefix(prefix, hf);
  };
}

PlanBuilder& PlanBuilder::variants(Variants v) {
  variants_ = std::move(v);
  return *this;
}

PlanBuilder::ComponentBuilder& PlanBuilder::add(std::string id, ComponentRole role, std::string hf_prefix) {
  plan_.execution_order.push_back(id);
  plan_.components.push_back({std::move(id), role, {}});
  builders_.push_back(std::unique_ptr<ComponentBuilder>(
      new ComponentBuilder(*this, plan_.components.size() - 1, std::move(hf_prefix))));
  return *builders_.back();
}

PlanBuilder::ComponentBuilder& PlanBuilder::ComponentBuilder::tensor(const TensorName& t, bool required) {
  const std::string hf = hf_prefix_ + (t.hf ? t.hf : t.name);
  return tensor_from(t.name, plan_.variants_(hf), required);
}

PlanBuilder::ComponentBuilder& PlanBuilder::ComponentBuilder::linear(const LinearName& l, Bias bias) {
  linear_in_out(l, bias);
  return linear_weight(l.weight());
}

PlanBuilder::ComponentBuilder& PlanBuilder::ComponentBuilder::linear_in_out(const LinearName& l, Bias bias) {
  tensor_from(l.weight(), plan_.variants_(hf_prefix_ + l.weight()), true);
  if (bias != Bias::none) tensor_from(l.bias(), plan_.variants_(hf_prefix_ + l.bias()), bias == Bias::required);
  return *this;
}

PlanBuilder::ComponentBuilder& PlanBuilder::ComponentBuilder::linear_weight(const std::string& name) {
  plan_.plan_.linear_weights.push_back(plan_.plan_.components[index_].id + "/" + name);
  return *this;
}

PlanBuilder::ComponentBuilder& PlanBuilder::ComponentBuilder::tensor_from(std::string name,
                                                                          std::vector<std::string> hf_names,
                                                                          bool required) {
  plan_.plan_.components[index_].tensors.push_back({std::move(name), std::move(hf_names), required});
  return *this;
}

PlanBuilder& PlanBuilder::ignore_suffix(std::string suffix) {
  plan_.ignored_suffixes.push_back(std::move(suffix));
  return *this;
}

PlanBuilder& PlanBuilder::ignore_prefix(std::string prefix) {
  plan_.ignored_prefixes.push_back(std::move(prefix));
  return *this;
}

ComponentPlan PlanBuilder::build() { return plan_; }

}  // namespace surf
