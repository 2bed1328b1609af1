// Errors shared by the SDK, the runtime and plugins. Inside one module they are
// exceptions; at the plugin boundary they become a SurfStatus (see plugin.h).
#pragma once

#include <stdexcept>
#include <string>
#include "surf/export.h"

SURF_SDK_PUBLIC_BEGIN

namespace surf {

enum class ErrorCode : int {
  ok = 0,
  invalid_argument = 1,  // bad input from the caller (shape, dtype, token id, option)
  not_found = 2,         // unknown model, component, tensor, key, file
  corrupt = 3,           // checksum mismatch, truncated or malformed data
  unsupported = 4,       // a feature or format version we do not handle
  io = 5,                // filesystem or storage failure
  network = 6,           // connection lost, protocol violation
  timeout = 7,
  unauthorized = 8,
  abi_mismatch = 9,  // plugin built against an incompatible SDK
  too_large = 10,
  internal = 11,
};

const char* error_code_name(ErrorCode code) noexcept;

class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
  ErrorCode code() const noexcept { return code_; }

 private:
  ErrorCode code_;
};

[[noreturn]] void fail(ErrorCode code, const std::string& message);

}  // namespace surf

SURF_SDK_PUBLIC_END
