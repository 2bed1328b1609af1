/* The C API of the Surfing Weights runtime (libsurf-runtime.so): for C hosts and other
   languages' foreign-function interfaces. Plain C11; no C++ type appears here and no C++
   exception crosses it: every failure is a surf_status, with a one-line message for this thread
   from surf_last_error().

     surf_session* s = NULL;
     if (surf_session_open("ws://127.0.0.1:8765/llama", NULL, &s) != SURF_OK) {
       fprintf(stderr, "%s\n", surf_last_error());
       return 1;
     }
     int64_t ids[3] = {1, 15043, 3186}, shape[2] = {1, 3};
     surf_tensor_view in = {"input_ids", SURF_DTYPE_I64, 2, shape, ids, sizeof ids};
     surf_tensors* out = NULL;
     if (surf_session_forward(s, &in, 1, &out) == SURF_OK) {
       surf_tensor_view logits;
       surf_tensors_find(out, "logits", &logits);   // points into the runtime's buffer: no copy
       ...
       surf_tensors_free(out);
     }
     surf_session_close(s);

   Link: pkg-config --cflags --libs surf-runtime-c */
#ifndef SURF_SURF_H
#define SURF_SURF_H

#include <stddef.h>
#include <stdint.h>

#if defined(SURF_RUNTIME_BUILD)
#define SURF_C_API __attribute__((visibility("default")))
#else
#define SURF_C_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* The same codes as surf::ErrorCode. */
typedef enum surf_status {
  SURF_OK = 0,
  SURF_INVALID_ARGUMENT = 1, /* bad input from the caller: a null pointer, shape, dtype, option */
  SURF_NOT_FOUND = 2,        /* unknown source, model type without a plugin, file, tensor */
  SURF_CORRUPT = 3,          /* checksum mismatch, truncated or malformed data */
  SURF_UNSUPPORTED = 4,
  SURF_IO = 5,
  SURF_NETWORK = 6,
  SURF_TIMEOUT = 7,
  SURF_UNAUTHORIZED = 8,
  SURF_ABI_MISMATCH = 9,
  SURF_TOO_LARGE = 10,
  SURF_INTERNAL = 11 /* also: out of memory, any unexpected C++ exception */
} surf_status;

/* "ok", "invalid_argument", ...; "unknown" for a value outside the enum. */
SURF_C_API const char* surf_status_name(surf_status status);
/* The message of the last failing call on this thread ("" if none failed yet). Valid until the
   next failing call on this thread. */
SURF_C_API const char* surf_last_error(void);
/* The runtime's version, "0.1.0". */
SURF_C_API const char* surf_version(void);

typedef enum surf_dtype { SURF_DTYPE_F32 = 0, SURF_DTYPE_F16 = 1, SURF_DTYPE_BF16 = 2, SURF_DTYPE_I64 = 3 } surf_dtype;

/* A tensor as memory somebody else owns: inputs are the caller's (not copied: they must stay
   valid and unchanged during the call), outputs are the runtime's (valid until their
   surf_tensors is freed). Row-major, contiguous. nbytes: the size of data (checked on input). */
typedef struct surf_tensor_view {
  const char* name;
  surf_dtype dtype;
  int32_t rank;
  const int64_t* shape;
  const void* data;
  size_t nbytes;
} surf_tensor_view;

/* A set of named tensors the runtime returns (outputs, a safetensors file's contents). */
typedef struct surf_tensors surf_tensors;
SURF_C_API size_t surf_tensors_count(const surf_tensors* tensors);
/* By index, in name order; SURF_INVALID_ARGUMENT past the end. */
SURF_C_API surf_status surf_tensors_get(const surf_tensors* tensors, size_t index, surf_tensor_view* out);
/* By name; SURF_NOT_FOUND when absent. */
SURF_C_API surf_status surf_tensors_find(const surf_tensors* tensors, const char* name, surf_tensor_view* out);
SURF_C_API void surf_tensors_free(surf_tensors* tensors); /* NULL is fine */

/* Tensor files. I32 tensors load as I64. */
SURF_C_API surf_status surf_load_safetensors(const char* path, surf_tensors** out);
SURF_C_API surf_status surf_save_safetensors(const char* path, const surf_tensor_view* tensors, size_t count);

typedef struct surf_session surf_session;

typedef struct surf_open_options {
  int32_t cache_size;     /* streamed components kept (default 2) */
  int32_t prefetch;       /* components fetched ahead (default 1) */
  uint64_t cache_bytes;   /* 0: no byte bound */
  const char* plugin_dir; /* NULL: the default search path */
  /* ws[s]:// sources: milliseconds to reach the server (TCP connect, TLS, WebSocket upgrade,
     hello) over all of open's attempts, > 0 (default 30000) */
  int32_t connect_timeout_ms;
} surf_open_options;
/* Fills in the defaults. */
SURF_C_API void surf_open_options_init(surf_open_options* options);

/* SOURCE: a chunk store directory, an HF checkpoint directory, s3://bucket/prefix or
   ws://host:port[/model]. options NULL: the defaults. On failure *out is NULL. */
SURF_C_API surf_status surf_session_open(const char* source, const surf_open_options* options, surf_session** out);
/* Waits for nothing: the caller must not close a session another thread is using. NULL is fine. */
SURF_C_API void surf_session_close(surf_session* session);

/* The model's type ("llama", ...), valid while the session lives. */
SURF_C_API const char* surf_session_model_type(const surf_session* session);

/* One forward pass. *out receives the outputs (free with surf_tensors_free). */
SURF_C_API surf_status surf_session_forward(surf_session* session, const surf_tensor_view* inputs, size_t count,
                                            surf_tensors** out);

/* Called after each new token of each sequence, on the generating thread, with the token's piece
   of text (empty without tokenizer files, for special tokens and inside a multi-byte character;
   not NUL-terminated: piece_len bytes). Return 0 to stop that sequence (it finishes "cancelled"),
   nonzero to continue. */
typedef int (*surf_token_callback)(int64_t sequence, int64_t token_id, const char* piece, size_t piece_len,
                                   void* user_data);

typedef struct surf_generate_options {
  int64_t max_new_tokens;       /* default 32 */
  int32_t stop_at_eos;          /* default 1: a sequence stops after the model's EOS id */
  surf_token_callback on_token; /* may be NULL */
  void* user_data;
} surf_generate_options;
SURF_C_API void surf_generate_options_init(surf_generate_options* options);

/* Greedy generation. inputs: input_ids [rows, len] (and attention_mask). *out: generated_ids
   [rows, len + steps], generated_lengths [rows], generation_logits [rows, steps, vocab]. */
SURF_C_API surf_status surf_session_generate(surf_session* session, const surf_tensor_view* inputs, size_t count,
                                             const surf_generate_options* options, surf_tensors** out);
/* Asks a generation running on this session (on another thread) to stop: each sequence stops
   after its next token. Safe from any thread; the flag is cleared when the next generate starts. */
SURF_C_API void surf_session_cancel(surf_session* session);

typedef struct surf_cache_stats {
  uint64_t hits, misses, evictions, fetches, bytes_fetched;
  uint64_t prefetch_issued, prefetch_used, prefetch_wasted;
  uint64_t resident_bytes, cached_bytes, peak_cached_bytes, cached_components;
  double fetch_ms, wait_ms;
} surf_cache_stats;
SURF_C_API surf_status surf_session_cache_stats(const surf_session* session, surf_cache_stats* out);
/* Loads components now: ids (a component id, or "all"). */
SURF_C_API surf_status surf_session_warm_up(surf_session* session, const char* const* ids, size_t count);
/* Drops every cached component; the next call fetches again. */
SURF_C_API surf_status surf_session_clear_cache(surf_session* session);

#ifdef __cplusplus
}
#endif

#endif /* SURF_SURF_H */
