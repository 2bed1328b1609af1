// Read-only view of a HuggingFace config.json with typed accessors whose errors name the key.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>
#include "surf/export.h"

SURF_SDK_PUBLIC_BEGIN

namespace surf {

class ModelConfig {
 public:
  ModelConfig();
  ~ModelConfig();
  ModelConfig(const ModelConfig&);
  ModelConfig& operator=(const ModelConfig&);

  // Throws Error(invalid_argument) if the text is not a JSON object.
  static ModelConfig parse(std::string_view json_text);

  std::string model_type() const;             // "" if absent
  bool has(std::string_view key) const;       // present and not null
  bool contains(std::string_view key) const;  // written in the file, even as null (null often means "off")
  // Keys may be dotted ("rope_parameters.rope_theta") to reach nested objects.
  int64_t get_int(std::string_view key) const;
  int64_t get_int(std::string_view key, int64_t fallback) const;
  double get_float(std::string_view key) const;
  double get_float(std::string_view key, double fallback) const;
  bool get_bool(std::string_view key, bool fallback) const;
  std::string get_string(std::string_view key) const;
  std::string get_string(std::string_view key, std::string_view fallback) const;
  std::vector<int64_t> get_int_list(std::string_view key) const;
  std::string dump() const;  // compact JSON

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace surf

SURF_SDK_PUBLIC_END
