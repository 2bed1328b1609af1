#include "args.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <sstream>
#include <stdexcept>

namespace surf::cli {

std::string Args::get(const std::string& name, const std::string& fallback) const {
  auto it = values.find(name);
  return it == values.end() || it->second.empty() ? fallback : it->second.back();
}

const std::vector<std::string>& Args::all(const std::string& name) const {
  static const std::vector<std::string> none;
  auto it = values.find(name);
  return it == values.end() ? none : it->second;
}

long long Args::get_int(const std::string& name, long long fallback) const {
  if (!has(name)) return fallback;
  const std::string v = get(name);
  try {
    size_t used = 0;
    long long n = std::stoll(v, &used);
    if (used != v.size()) throw std::invalid_argument(v);
    return n;
  } catch (const std::exception&) {
    throw std::invalid_argument("--" + name + " expects an integer, got '" + v + "'");
  }
}

long long Args::get_int_in(const std::string& name, long long fallback, long long lo, long long hi) const {
  const long long n = get_int(name, fallback);
  if (n < lo || n > hi) {
    throw std::invalid_argument("--" + name + " must be in " + std::to_string(lo) + ".." + std::to_string(hi) +
                                ", got " + std::to_string(n));
  }
  return n;
}

int Args::get_seconds_ms(const std::string& name, int fallback_ms, double max_seconds) const {
  if (!has(name)) return fallback_ms;
  const std::string v = get(name);
  char* end = nullptr;
  const double s = v.empty() ? 0 : std::strtod(v.c_str(), &end);
  if (v.empty() || end != v.c_str() + v.size() || !std::isfinite(s)) {
    throw std::invalid_argument("--" + name + " expects a number of seconds, got '" + v + "'");
  }
  if (s <= 0 || s > max_seconds) {
    std::ostringstream range;
    range << "--" << name << " must be more than 0 and at most " << max_seconds << " seconds, got " << v;
    throw std::invalid_argument(range.str());
  }
  return std::max(1, static_cast<int>(std::lround(s * 1000)));
}

Args parse(const std::vector<std::string>& argv, const std::vector<Flag>& flags) {
  Args a;
  for (size_t i = 0; i < argv.size(); ++i) {
    const std::string& s = argv[i];
    if (s.size() > 2 && s.rfind("--", 0) == 0) {
      std::string name = s.substr(2), value;
      bool inline_value = false;
      if (auto eq = name.find('='); eq != std::string::npos) {
        value = name.substr(eq + 1);
        name = name.substr(0, eq);
        inline_value = true;
      }
      const Flag* f = nullptr;
      for (const auto& fl : flags) {
        if (fl.name == name) f = &fl;
      }
      if (f == nullptr) throw std::invalid_argument("unknown option --" + name + " (see --help)");
      if (f->takes_value && !inline_value) {
        if (i + 1 >= argv.size()) throw std::invalid_argument("option --" + name + " needs a value");
        value = argv[++i];
      }
      if (!f->takes_value && inline_value) throw std::invalid_argument("option --" + name + " takes no value");
      a.values[name].push_back(value);
    } else {
      a.positional.push_back(s);
    }
  }
  return a;
}

std::string flags_help(const std::vector<Flag>& flags) {
  std::ostringstream s;
  for (const auto& f : flags) {
    std::string left = "  --" + f.name + (f.takes_value ? " VALUE" : "");
    s << left << std::string(left.size() < 28 ? 28 - left.size() : 1, ' ') << f.help << "\n";
  }
  return s.str();
}

}  // namespace surf::cli
