/* The C API end to end, and every entry point's error path: a test (tests/meson.build, suite
   integration, compiled as C11) and the C example installed hosts build with
     cc -std=c11 surf_c_example.c $(pkg-config --cflags --libs surf-runtime-c)

   surf_c_example SOURCE GOLDEN.safetensors [PLUGIN_DIR]

   SOURCE: a model whose golden file (tests/fixtures/<name>/golden.safetensors: input_ids,
   attention_mask, position_ids, logits, gen_input_ids, generated_ids, generation_logits, computed
   by the independent reference) it must reproduce: logits and generation_logits within
   atol = rtol = 5e-5 (the fixtures' fp32 tolerance), generated ids exactly. Prints "ok" and exits
   0, or names the first failed check and exits 1. */
#define _POSIX_C_SOURCE 200809L /* mkstemp */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <surf/surf.h>

static int failures = 0;

#define CHECK(cond, ...)                                         \
  do {                                                           \
    if (!(cond)) {                                               \
      fprintf(stderr, "FAILED line %d: %s: ", __LINE__, #cond);  \
      fprintf(stderr, __VA_ARGS__);                              \
      fprintf(stderr, " [last error: %s]\n", surf_last_error()); \
      failures++;                                                \
    }                                                            \
  } while (0)

/* The call must succeed; stop the program if it does not (what follows depends on it). */
#define MUST(call)                                                                                                \
  do {                                                                                                            \
    surf_status st_ = (call);                                                                                     \
    if (st_ != SURF_OK) {                                                                                         \
      fprintf(stderr, "FAILED line %d: %s: %s: %s\n", __LINE__, #call, surf_status_name(st_), surf_last_error()); \
      exit(1);                                                                                                    \
    }                                                                                                             \
  } while (0)

static int64_t numel(const surf_tensor_view* v) {
  int64_t n = 1;
  for (int32_t i = 0; i < v->rank; ++i) n *= v->shape[i];
  return n;
}

/* |a - e| <= 5e-5 + 5e-5 |e| for every element (rows with mask 0 skipped when mask is given:
   positions the reference leaves unspecified). Returns the number of elements outside. */
static long compare_f32(const surf_tensor_view* got, const surf_tensor_view* want, const surf_tensor_view* mask) {
  if (got->dtype != SURF_DTYPE_F32 || want->dtype != SURF_DTYPE_F32 || numel(got) != numel(want)) return -1;
  const float* a = (const float*)got->data;
  const float* e = (const float*)want->data;
  const int64_t n = numel(got);
  const int64_t per_position = mask ? n / numel(mask) : 1;
  long bad = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (mask && ((const int64_t*)mask->data)[i / per_position] == 0) continue;
    if (fabs((double)a[i] - (double)e[i]) > 5e-5 + 5e-5 * fabs((double)e[i])) bad++;
  }
  return bad;
}

struct stream {
  int64_t ids[64];
  int count;
  int stop_after;   /* return 0 at this token (0: never) */
  int cancel_after; /* call surf_session_cancel at this token (0: never) */
  surf_session* session;
};

static int on_token(int64_t sequence, int64_t id, const char* piece, size_t piece_len, void* user) {
  struct stream* s = (struct stream*)user;
  (void)piece;
  (void)piece_len;
  if (sequence != 0 || s->count >= 64) return 0;
  s->ids[s->count++] = id;
  if (s->cancel_after && s->count == s->cancel_after) surf_session_cancel(s->session);
  return !(s->stop_after && s->count == s->stop_after);
}

int main(int argc, char** argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: surf_c_example SOURCE GOLDEN.safetensors [PLUGIN_DIR]\n");
    return 2;
  }
  const char* source = argv[1];
  const char* plugin_dir = argc > 3 ? argv[3] : NULL;

  /* --- status names, version --- */
  CHECK(strcmp(surf_status_name(SURF_OK), "ok") == 0, "ok name");
  CHECK(strcmp(surf_status_name(SURF_NOT_FOUND), "not_found") == 0, "not_found name");
  CHECK(strcmp(surf_status_name((surf_status)99), "unknown") == 0, "out of range name");
  CHECK(strlen(surf_version()) > 0, "version");
  printf("runtime %s\n", surf_version());

  /* --- tensor files --- */
  surf_tensors* golden = NULL;
  CHECK(surf_load_safetensors("/nonexistent/golden.safetensors", &golden) == SURF_NOT_FOUND && golden == NULL,
        "missing file");
  CHECK(strstr(surf_last_error(), "/nonexistent/golden.safetensors") != NULL, "message names the file");
  CHECK(surf_load_safetensors(NULL, &golden) == SURF_INVALID_ARGUMENT, "NULL path");
  MUST(surf_load_safetensors(argv[2], &golden));
  CHECK(surf_tensors_count(golden) >= 7, "golden has %zu tensors", surf_tensors_count(golden));
  CHECK(surf_tensors_count(NULL) == 0, "count of NULL");
  surf_tensor_view first, ids, mask, pos, logits_want, gen_ids, gen_ids_want, gen_logits_want, missing;
  MUST(surf_tensors_get(golden, 0, &first));
  CHECK(first.name != NULL && first.rank > 0, "first tensor");
  CHECK(surf_tensors_get(golden, surf_tensors_count(golden), &first) == SURF_INVALID_ARGUMENT, "index past the end");
  CHECK(surf_tensors_get(NULL, 0, &first) == SURF_INVALID_ARGUMENT, "NULL tensors");
  CHECK(surf_tensors_find(golden, "no_such_tensor", &missing) == SURF_NOT_FOUND, "unknown name");
  CHECK(surf_tensors_find(golden, NULL, &missing) == SURF_INVALID_ARGUMENT, "NULL name");
  MUST(surf_tensors_find(golden, "input_ids", &ids));
  MUST(surf_tensors_find(golden, "attention_mask", &mask));
  MUST(surf_tensors_find(golden, "position_ids", &pos));
  MUST(surf_tensors_find(golden, "logits", &logits_want));
  MUST(surf_tensors_find(golden, "gen_input_ids", &gen_ids));
  MUST(surf_tensors_find(golden, "generated_ids", &gen_ids_want));
  MUST(surf_tensors_find(golden, "generation_logits", &gen_logits_want));
  CHECK(ids.dtype == SURF_DTYPE_I64 && ids.rank == 2, "input_ids view");
  gen_ids.name = "input_ids"; /* the prompt, under the name generate reads */

  /* --- open --- */
  surf_open_options oo;
  surf_open_options_init(&oo);
  CHECK(oo.cache_size > 0 && oo.prefetch >= 0 && oo.plugin_dir == NULL, "defaults");
  oo.plugin_dir = plugin_dir;
  surf_session* s = NULL;
  CHECK(surf_session_open("/nonexistent/model", &oo, &s) != SURF_OK && s == NULL, "unknown source");
  CHECK(strlen(surf_last_error()) > 0, "message for the unknown source");
  CHECK(surf_session_open(NULL, &oo, &s) == SURF_INVALID_ARGUMENT, "NULL source");
  surf_open_options bad = oo;
  bad.cache_size = 0;
  CHECK(surf_session_open(source, &bad, &s) == SURF_INVALID_ARGUMENT && s == NULL, "cache_size 0: %s",
        surf_last_error());
  CHECK(surf_session_open(source, &oo, NULL) == SURF_INVALID_ARGUMENT, "NULL out");
  CHECK(oo.connect_timeout_ms == 30000, "default connect timeout %d", (int)oo.connect_timeout_ms);
  bad = oo;
  bad.connect_timeout_ms = 0; /* refused before any connection is tried */
  CHECK(surf_session_open("ws://127.0.0.1:9/m", &bad, &s) == SURF_INVALID_ARGUMENT && s == NULL,
        "connect_timeout_ms 0: %s", surf_last_error());
  CHECK(strstr(surf_last_error(), "connect timeout must be positive") != NULL, "names the timeout: %s",
        surf_last_error());
  MUST(surf_session_open(source, &oo, &s));
  printf("model %s\n", surf_session_model_type(s));
  CHECK(strlen(surf_session_model_type(s)) > 0, "model type");

  surf_cache_stats st0, st1, st2;
  MUST(surf_session_cache_stats(s, &st0));
  CHECK(st0.fetches == 0, "opening fetches no weights (%llu)", (unsigned long long)st0.fetches);
  CHECK(surf_session_cache_stats(NULL, &st0) == SURF_INVALID_ARGUMENT, "stats of NULL");

  /* --- forward: the caller's memory in, the runtime's out --- */
  surf_tensor_view in[3] = {ids, mask, pos};
  surf_tensors* out = NULL;
  MUST(surf_session_forward(s, in, 3, &out));
  surf_tensor_view logits;
  MUST(surf_tensors_find(out, "logits", &logits));
  long bad_logits = compare_f32(&logits, &logits_want, &mask);
  CHECK(bad_logits == 0, "logits: %ld elements outside 5e-5", bad_logits);
  MUST(surf_session_cache_stats(s, &st1));
  CHECK(st1.fetches > st0.fetches && st1.bytes_fetched > 0, "forward fetched");

  /* save and load back: the same bytes */
  CHECK(surf_save_safetensors("/nonexistent/dir/out.safetensors", &logits, 1) != SURF_OK, "unwritable path");
  char path[] = "/tmp/surf-c-example-XXXXXX";
  int fd = mkstemp(path);
  CHECK(fd >= 0, "mkstemp");
  if (fd >= 0) close(fd);
  MUST(surf_save_safetensors(path, &logits, 1));
  surf_tensors* back = NULL;
  MUST(surf_load_safetensors(path, &back));
  surf_tensor_view lb;
  MUST(surf_tensors_find(back, "logits", &lb));
  CHECK(lb.nbytes == logits.nbytes && memcmp(lb.data, logits.data, lb.nbytes) == 0, "round trip");
  surf_tensors_free(back);
  remove(path);
  surf_tensors_free(out);

  /* bad inputs */
  surf_tensor_view wrong = ids;
  wrong.nbytes = ids.nbytes - 8;
  CHECK(surf_session_forward(s, &wrong, 1, &out) == SURF_INVALID_ARGUMENT && out == NULL, "nbytes mismatch");
  CHECK(strstr(surf_last_error(), "input_ids") != NULL, "message names the tensor");
  wrong = ids;
  wrong.dtype = (surf_dtype)42;
  CHECK(surf_session_forward(s, &wrong, 1, &out) == SURF_INVALID_ARGUMENT, "unknown dtype");
  wrong = ids;
  wrong.data = NULL;
  CHECK(surf_session_forward(s, &wrong, 1, &out) == SURF_INVALID_ARGUMENT, "NULL data");
  CHECK(surf_session_forward(s, in, 0, &out) != SURF_OK, "no inputs: %s", surf_last_error());
  CHECK(surf_session_forward(NULL, in, 3, &out) == SURF_INVALID_ARGUMENT, "NULL session");

  /* --- generate, streamed --- */
  surf_generate_options go;
  surf_generate_options_init(&go);
  CHECK(go.max_new_tokens > 0 && go.stop_at_eos == 1 && go.on_token == NULL, "generate defaults");
  struct stream str;
  memset(&str, 0, sizeof str);
  str.session = s;
  go.max_new_tokens = gen_ids_want.shape[1] - gen_ids.shape[1];
  go.stop_at_eos = 0;
  go.on_token = on_token;
  go.user_data = &str;
  MUST(surf_session_generate(s, &gen_ids, 1, &go, &out));
  surf_tensor_view got_ids, got_logits;
  MUST(surf_tensors_find(out, "generated_ids", &got_ids));
  MUST(surf_tensors_find(out, "generation_logits", &got_logits));
  CHECK(got_ids.nbytes == gen_ids_want.nbytes && memcmp(got_ids.data, gen_ids_want.data, got_ids.nbytes) == 0,
        "generated_ids differ from the golden");
  CHECK(str.count == (int)go.max_new_tokens, "streamed %d tokens", str.count);
  for (int i = 0; i < str.count; ++i) {
    CHECK(str.ids[i] == ((const int64_t*)gen_ids_want.data)[gen_ids.shape[1] + i], "streamed token %d", i);
  }
  long bad_gen = compare_f32(&got_logits, &gen_logits_want, NULL);
  CHECK(bad_gen == 0, "generation_logits: %ld elements outside 5e-5", bad_gen);
  surf_tensors_free(out);

  /* cancellation: by the callback, and by surf_session_cancel */
  memset(&str, 0, sizeof str);
  str.session = s;
  str.stop_after = 2;
  MUST(surf_session_generate(s, &gen_ids, 1, &go, &out));
  surf_tensor_view lengths;
  MUST(surf_tensors_find(out, "generated_lengths", &lengths));
  CHECK(((const int64_t*)lengths.data)[0] == 2 && str.count == 2, "stopped by the callback after 2 (%lld, %d)",
        (long long)((const int64_t*)lengths.data)[0], str.count);
  surf_tensors_free(out);
  memset(&str, 0, sizeof str);
  str.session = s;
  str.cancel_after = 3;
  MUST(surf_session_generate(s, &gen_ids, 1, &go, &out));
  MUST(surf_tensors_find(out, "generated_lengths", &lengths));
  CHECK(((const int64_t*)lengths.data)[0] < go.max_new_tokens && str.count == 3,
        "surf_session_cancel stopped it (%lld new tokens, %d streamed)", (long long)((const int64_t*)lengths.data)[0],
        str.count);
  surf_tensors_free(out);
  surf_session_cancel(NULL);
  CHECK(surf_session_generate(s, NULL, 0, &go, &out) != SURF_OK && out == NULL, "generate without inputs");
  CHECK(surf_session_generate(NULL, &gen_ids, 1, &go, &out) == SURF_INVALID_ARGUMENT, "generate NULL session");

  /* --- cache control --- */
  MUST(surf_session_clear_cache(s));
  MUST(surf_session_cache_stats(s, &st1));
  CHECK(st1.cached_bytes == 0 && st1.resident_bytes == 0 && st1.cached_components == 0, "cleared");
  const char* all[] = {"all"};
  MUST(surf_session_warm_up(s, all, 1));
  MUST(surf_session_cache_stats(s, &st2));
  CHECK(st2.fetches > st1.fetches && st2.resident_bytes > 0, "warm-up fetched again");
  const char* unknown[] = {"no.such.component"};
  CHECK(surf_session_warm_up(s, unknown, 1) == SURF_NOT_FOUND, "unknown component: %s", surf_last_error());
  CHECK(surf_session_warm_up(s, NULL, 1) == SURF_INVALID_ARGUMENT, "NULL ids");
  CHECK(surf_session_warm_up(NULL, all, 1) == SURF_INVALID_ARGUMENT, "warm-up NULL session");
  CHECK(surf_session_clear_cache(NULL) == SURF_INVALID_ARGUMENT, "clear NULL session");

  surf_session_close(s);
  surf_session_close(NULL);
  surf_tensors_free(golden);
  surf_tensors_free(NULL);
  if (failures) {
    fprintf(stderr, "%d checks failed\n", failures);
    return 1;
  }
  printf("ok\n");
  return 0;
}
