// libsurf-sdk is built with hidden symbol visibility: only what its public headers declare is
// exported. Each public header brackets its declarations with these.
#pragma once

#if defined(SURF_SDK_BUILD)
#define SURF_SDK_PUBLIC_BEGIN _Pragma("GCC visibility push(default)")
#define SURF_SDK_PUBLIC_END _Pragma("GCC visibility pop")
#else
#define SURF_SDK_PUBLIC_BEGIN
#define SURF_SDK_PUBLIC_END
#endif
