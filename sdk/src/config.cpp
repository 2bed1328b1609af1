#include "surf/config.h"

#include <nlohmann/json.hpp>

#include "surf/error.h"

namespace surf {

struct ModelConfig::Impl {
  nlohmann::json json = nlohmann::json::object();
};

ModelConfig::ModelConfig() : impl_(std::make_unique<Impl>()) {}
ModelConfig::~ModelConfig() = default;
ModelConfig::ModelConfig(const ModelConfig& o) : impl_(std::make_unique<Impl>(*o.impl_)) {}
ModelConfig& ModelConfig::operator=(const ModelConfig& o) {
  if (this != &o) *impl_ = *o.impl_;
  return *this;
}

ModelConfig ModelConfig::parse(std::string_view text) {
  ModelConfig c;
  try {
    // dump() recurses: refuse absurd nesting before anything walks the document.
    c.impl_->json = nlohmann::json::parse(text, [](int depth, nlohmann::json::parse_event_t, nlohmann::json&) {
      if (depth > 64) throw std::length_error("config.json nests deeper than 64 levels");
      return true;
    });
  } catch (const std::length_error& e) {
    fail(ErrorCode::invalid_argument, e.what());
  } catch (const nlohmann::json::exception& e) {
    fail(ErrorCode::invalid_argument, std::string("config.json is not valid JSON: ") + e.what());
  }
  if (!c.impl_->json.is_object()) fail(ErrorCode::invalid_argument, "config.json is not a JSON object");
  return c;
}

namespace {

const nlohmann::json* lookup(const nlohmann::json& root, std::string_view key, bool keep_null = false) {
  const nlohmann::json* node = &root;
  size_t start = 0;
  while (true) {
    size_t dot = key.find('.', start);
    std::string part(key.substr(start, dot == std::string_view::npos ? key.npos : dot - start));
    if (!node->is_object()) return nullptr;
    auto it = node->find(part);
    if (it == node->end()) return nullptr;
    node = &*it;
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  return node->is_null() && !keep_null ? nullptr : node;
}

[[noreturn]] void wrong_type(std::string_view key, const char* want, const nlohmann::json& got) {
  fail(ErrorCode::invalid_argument, "config.json: key '" + std::string(key) + "' must be " + want + ", got " +
                                        got.type_name() + " (" + got.dump() + ")");
}

const nlohmann::json& require(const nlohmann::json& root, std::string_view key) {
  const nlohmann::json* v = lookup(root, key);
  if (v == nullptr) fail(ErrorCode::invalid_argument, "config.json: missing key '" + std::string(key) + "'");
  return *v;
}

int64_t as_int(std::string_view key, const nlohmann::json& v) {
  if (v.is_number_integer()) return v.get<int64_t>();
  if (v.is_number_float()) {
    double d = v.get<double>();
    if (d == static_cast<double>(static_cast<int64_t>(d))) return static_cast<int64_t>(d);
  }
  wrong_type(key, "an integer", v);
}

double as_float(std::string_view key, const nlohmann::json& v) {
  if (v.is_number()) return v.get<double>();
  wrong_type(key, "a number", v);
}

}  // namespace

std::string ModelConfig::model_type() const { return get_string("model_type", ""); }

bool ModelConfig::has(std::string_view key) const { return lookup(impl_->json, key) != nullptr; }

bool ModelConfig::contains(std::string_view key) const { return lookup(impl_->json, key, true) != nullptr; }

int64_t ModelConfig::get_int(std::string_view key) const { return as_int(key, require(impl_->json, key)); }

int64_t ModelConfig::get_int(std::string_view key, int64_t fallback) const {
  const auto* v = lookup(impl_->json, key);
  return v ? as_int(key, *v) : fallback;
}

double ModelConfig::get_float(std::string_view key) const { return as_float(key, require(impl_->json, key)); }

double ModelConfig::get_float(std::string_view key, double fallback) const {
  const auto* v = lookup(impl_->json, key);
  return v ? as_float(key, *v) : fallback;
}

bool ModelConfig::get_bool(std::string_view key, bool fallback) const {
  const auto* v = lookup(impl_->json, key);
  if (v == nullptr) return fallback;
  if (!v->is_boolean()) wrong_type(key, "a boolean", *v);
  return v->get<bool>();
}

std::string ModelConfig::get_string(std::string_view key) const {
  const auto& v = require(impl_->json, key);
  if (!v.is_string()) wrong_type(key, "a string", v);
  return v.get<std::string>();
}

std::string ModelConfig::get_string(std::string_view key, std::string_view fallback) const {
  const auto* v = lookup(impl_->json, key);
  if (v == nullptr) return std::string(fallback);
  if (!v->is_string()) wrong_type(key, "a string", *v);
  return v->get<std::string>();
}

std::vector<int64_t> ModelConfig::get_int_list(std::string_view key) const {
  const auto& v = require(impl_->json, key);
  std::vector<int64_t> out;
  if (v.is_number()) {
    out.push_back(as_int(key, v));
    return out;
  }
  if (!v.is_array()) wrong_type(key, "an integer or a list of integers", v);
  for (const auto& e : v) out.push_back(as_int(key, e));
  return out;
}

std::string ModelConfig::dump() const { return impl_->json.dump(); }

}  // namespace surf
