// The one rule for the cache knobs, shared by the API (Session::open, check_fixture, LayerCache)
// and the CLI (--cache-size, --prefetch).
#include <limits>
#include <string>

#include "surf/error.h"
#include "surf/runtime.h"

namespace surf {

void validate_cache_options(int64_t cache_size, int64_t prefetch) {
  constexpr int64_t kMax = std::numeric_limits<int>::max();
  if (cache_size < 1) {
    fail(ErrorCode::invalid_argument, "cache_size (--cache-size) must be at least 1, got " +
                                          std::to_string(cache_size) + ": the component in use is held in the cache");
  }
  if (prefetch < 0) {
    fail(ErrorCode::invalid_argument,
         "prefetch (--prefetch) must be 0 (none) or more, got " + std::to_string(prefetch));
  }
  if (cache_size > kMax)
    fail(ErrorCode::invalid_argument, "cache_size (--cache-size) is too large: " + std::to_string(cache_size));
  if (prefetch > kMax)
    fail(ErrorCode::invalid_argument, "prefetch (--prefetch) is too large: " + std::to_string(prefetch));
}

}  // namespace surf
