// JSON from files and the network (manifests, safetensors headers, index files), parsed with a
// nesting limit: nlohmann's parser is iterative, but dump() and some accessors recurse, so a
// document nested 100k deep must be refused before anything walks it. Include only from .cpp
// files: nlohmann stays out of public headers.
#pragma once

#include <nlohmann/json.hpp>
#include <string_view>

#include "surf/error.h"

namespace surf {

inline constexpr int kMaxJsonDepth = 64;

// Error(corrupt) "WHAT is not valid JSON: ..." or "... nests deeper than 64 levels".
inline nlohmann::json parse_json(std::string_view text, std::string_view what, int max_depth = kMaxJsonDepth) {
  try {
    return nlohmann::json::parse(text, [&](int depth, nlohmann::json::parse_event_t, nlohmann::json&) {
      if (depth > max_depth) throw std::length_error("nesting");
      return true;
    });
  } catch (const std::length_error&) {
  } catch (const nlohmann::json::exception& e) {
    fail(ErrorCode::corrupt, std::string(what) + " is not valid JSON: " + e.what());
  }
  fail(ErrorCode::corrupt, std::string(what) + " nests deeper than " + std::to_string(max_depth) + " levels");
}

// An unsigned integer field that must be one (not a float, not negative): Error(corrupt) naming it.
inline uint64_t json_uint(const nlohmann::json& value, std::string_view what) {
  if (!value.is_number_unsigned()) {
    fail(ErrorCode::corrupt, std::string(what) + " is not a non-negative integer");
  }
  return value.get<uint64_t>();
}

}  // namespace surf
