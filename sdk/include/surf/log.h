// Logging facade: the host application decides where messages go.
#pragma once

#include <functional>
#include <string>
#include "surf/export.h"

SURF_SDK_PUBLIC_BEGIN

namespace surf {

enum class LogLevel : int { debug = 0, info = 1, warn = 2, error = 3, off = 4 };

using LogSink = std::function<void(LogLevel, const std::string&)>;

// Replaces the sink (default: stderr, level from SURF_LOG=debug|info|warn|error|off, default warn).
void set_log_sink(LogSink sink);
void set_log_level(LogLevel level);
LogLevel log_level();
void log(LogLevel level, const std::string& message);

inline void log_debug(const std::string& m) {
  if (log_level() <= LogLevel::debug) log(LogLevel::debug, m);
}
inline void log_info(const std::string& m) {
  if (log_level() <= LogLevel::info) log(LogLevel::info, m);
}
inline void log_warn(const std::string& m) { log(LogLevel::warn, m); }

}  // namespace surf

SURF_SDK_PUBLIC_END
