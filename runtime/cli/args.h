// A small command-line parser: declared flags only, `--flag value` or `--flag=value`. Any flag
// may be given several times: Args::get takes the last value, Args::all every one.
#pragma once

#include <map>
#include <string>
#include <vector>

namespace surf::cli {

struct Flag {
  std::string name;  // without the leading "--"
  bool takes_value;
  std::string help;
};

struct Args {
  std::vector<std::string> positional;
  std::map<std::string, std::vector<std::string>> values;
  bool has(const std::string& name) const { return values.count(name) > 0; }
  std::string get(const std::string& name, const std::string& fallback = "") const;
  const std::vector<std::string>& all(const std::string& name) const;
  long long get_int(const std::string& name, long long fallback) const;
  // Same, and std::invalid_argument naming the flag and its range when outside [lo, hi].
  long long get_int_in(const std::string& name, long long fallback, long long lo, long long hi) const;
  // A duration in seconds (decimals allowed) as milliseconds; std::invalid_argument naming the
  // flag unless it is a number in (0, max_seconds].
  int get_seconds_ms(const std::string& name, int fallback_ms, double max_seconds) const;
};

// Throws std::invalid_argument with a one-line message on unknown flags or missing values.
Args parse(const std::vector<std::string>& argv, const std::vector<Flag>& flags);
std::string flags_help(const std::vector<Flag>& flags);

}  // namespace surf::cli
