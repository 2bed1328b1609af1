#include "surf/plugin.h"

namespace surf {

const Tensor& Component::get(std::string_view name) const {
  const Tensor* t = find(name);
  if (t == nullptr) {
    fail(ErrorCode::not_found, "component '" + id() + "' has no tensor '" + std::string(name) + "'");
  }
  return *t;
}

std::vector<std::unique_ptr<Sequence>> Model::start(const TensorMap&, int64_t, ComponentSource&) {
  fail(ErrorCode::unsupported, "this architecture does not support generation");
}

Tensor Model::step(const std::vector<Sequence*>&, ComponentSource&) {
  fail(ErrorCode::unsupported, "this architecture does not support generation");
}

void Model::generate(const TensorMap&, const RunOptions&, ComponentSource&, TensorMap&) {
  fail(ErrorCode::unsupported, "this architecture does not support generation");
}

std::vector<std::string> with_optional_prefix(std::string_view prefix, std::string_view name) {
  return {std::string(prefix) + std::string(name), std::string(name)};
}

const Tensor& require_input(const TensorMap& inputs, std::string_view name) {
  auto it = inputs.find(name);
  if (it == inputs.end()) fail(ErrorCode::invalid_argument, "missing input '" + std::string(name) + "'");
  return it->second;
}

const Tensor* optional_input(const TensorMap& inputs, std::string_view name) {
  auto it = inputs.find(name);
  return it == inputs.end() ? nullptr : &it->second;
}

}  // namespace surf
