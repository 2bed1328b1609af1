// libsurf-runtime is built with hidden symbol visibility and a version script: only what its
// public headers (runtime.h, tokenizer.h, tensor_io.h, surf.h) declare is exported. Each C++
// public header brackets its declarations with these; the C API marks each function SURF_C_API.
#pragma once

#if defined(SURF_RUNTIME_BUILD)
#define SURF_RUNTIME_PUBLIC_BEGIN _Pragma("GCC visibility push(default)")
#define SURF_RUNTIME_PUBLIC_END _Pragma("GCC visibility pop")
#else
#define SURF_RUNTIME_PUBLIC_BEGIN
#define SURF_RUNTIME_PUBLIC_END
#endif
