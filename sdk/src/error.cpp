#include "surf/error.h"

#include <cstdlib>
#include <cstring>
#include <iostream>
#include <mutex>

#include "surf/log.h"

namespace surf {

const char* error_code_name(ErrorCode code) noexcept {
  switch (code) {
    case ErrorCode::ok:
      return "ok";
    case ErrorCode::invalid_argument:
      return "invalid_argument";
    case ErrorCode::not_found:
      return "not_found";
    case ErrorCode::corrupt:
      return "corrupt";
    case ErrorCode::unsupported:
      return "unsupported";
    case ErrorCode::io:
      return "io";
    case ErrorCode::network:
      return "network";
    case ErrorCode::timeout:
      return "timeout";
    case ErrorCode::unauthorized:
      return "unauthorized";
    case ErrorCode::abi_mismatch:
      return "abi_mismatch";
    case ErrorCode::too_large:
      return "too_large";
    case ErrorCode::internal:
      return "internal";
  }
  return "unknown";
}

void fail(ErrorCode code, const std::string& message) { throw Error(code, message); }

namespace {

LogLevel level_from_env() {
  const char* v = std::getenv("SURF_LOG");
  if (v == nullptr) return LogLevel::warn;
  if (!std::strcmp(v, "debug")) return LogLevel::debug;
  if (!std::strcmp(v, "info")) return LogLevel::info;
  if (!std::strcmp(v, "error")) return LogLevel::error;
  if (!std::strcmp(v, "off")) return LogLevel::off;
  return LogLevel::warn;
}

struct LogState {
  std::mutex mutex;
  LogSink sink;
  LogLevel level = level_from_env();
};

LogState& state() {
  static LogState s;
  return s;
}

const char* level_name(LogLevel l) {
  switch (l) {
    case LogLevel::debug:
      return "debug";
    case LogLevel::info:
      return "info";
    case LogLevel::warn:
      return "warning";
    case LogLevel::error:
      return "error";
    default:
      return "";
  }
}

}  // namespace

void set_log_sink(LogSink sink) {
  std::lock_guard lock(state().mutex);
  state().sink = std::move(sink);
}

void set_log_level(LogLevel level) {
  std::lock_guard lock(state().mutex);
  state().level = level;
}

LogLevel log_level() { return state().level; }

void log(LogLevel level, const std::string& message) {
  auto& s = state();
  std::lock_guard lock(s.mutex);
  if (level < s.level) return;
  if (s.sink) {
    s.sink(level, message);
  } else {
    std::cerr << "surf: " << level_name(level) << ": " << message << "\n";
  }
}

}  // namespace surf
