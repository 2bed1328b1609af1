// The C API (surf/surf.h) over the C++ one: every entry point catches everything and turns it
// into a surf_status plus a thread-local message.
#include "surf/surf.h"

#include <atomic>
#include <cstring>
#include <type_traits>
#include <new>
#include <string>
#include <vector>

#include "surf/runtime.h"
#include "surf/version.h"

struct surf_tensors {
  surf::TensorMap map;
  std::vector<std::string> names;  // name order, for surf_tensors_get
};

struct surf_session {
  std::unique_ptr<surf::Session> session;
  std::atomic<bool> cancel{false};
};

namespace {

thread_local std::string last_error;

surf_status failed(surf_status s, const std::string& message) {
  last_error = message;
  return s;
}

// Runs f, mapping any exception to a status.
template <typename F>
surf_status guarded(F&& f) noexcept {
  try {
    f();
    return SURF_OK;
  } catch (const surf::Error& e) {
    return failed(static_cast<surf_status>(e.code()), e.what());
  } catch (const std::bad_alloc&) {
    return failed(SURF_INTERNAL, "out of memory");
  } catch (const std::exception& e) {
    return failed(SURF_INTERNAL, e.what());
  } catch (...) {
    return failed(SURF_INTERNAL, "unknown error");
  }
}

void need(const void* p, const char* what) {
  if (p == nullptr) surf::fail(surf::ErrorCode::invalid_argument, std::string(what) + " is NULL");
}

// A C caller may store any int in the enum field, but C++ may not load an enum value outside its
// enumerators' range (UBSan: invalid enum load), so the field is read as the integer it holds.
surf::DType to_dtype(const surf_dtype& field) {
  std::underlying_type_t<surf_dtype> d;
  std::memcpy(&d, &field, sizeof d);
  switch (d) {
    case SURF_DTYPE_F32:
      return surf::DType::F32;
    case SURF_DTYPE_F16:
      return surf::DType::F16;
    case SURF_DTYPE_BF16:
      return surf::DType::BF16;
    case SURF_DTYPE_I64:
      return surf::DType::I64;
  }
  surf::fail(surf::ErrorCode::invalid_argument, "unknown dtype " + std::to_string(d));
}

surf_dtype from_dtype(surf::DType d) {
  switch (d) {
    case surf::DType::F32:
      return SURF_DTYPE_F32;
    case surf::DType::F16:
      return SURF_DTYPE_F16;
    case surf::DType::BF16:
      return SURF_DTYPE_BF16;
    case surf::DType::I64:
      return SURF_DTYPE_I64;
    case surf::DType::Q8_0:
    case surf::DType::Q4_0:
      break;
  }
  surf::fail(surf::ErrorCode::unsupported, std::string("a ") + surf::dtype_name(d) + " tensor has no C view");
}

// Caller views as tensors over the caller's memory (no copy).
surf::TensorMap to_map(const surf_tensor_view* views, size_t count) {
  if (count > 0) need(views, "tensors");
  surf::TensorMap map;
  for (size_t i = 0; i < count; ++i) {
    const surf_tensor_view& v = views[i];
    need(v.name, "tensor name");
    const std::string name = v.name;
    if (v.rank < 0 || v.rank > 8)
      surf::fail(surf::ErrorCode::invalid_argument, "tensor '" + name + "': rank " + std::to_string(v.rank));
    if (v.rank > 0) need(v.shape, "tensor shape");
    surf::Shape shape(v.shape, v.shape + v.rank);
    for (int64_t d : shape) {
      if (d < 0) surf::fail(surf::ErrorCode::invalid_argument, "tensor '" + name + "': negative dimension");
    }
    const surf::DType dtype = to_dtype(v.dtype);
    const size_t want = surf::shape_bytes(shape, dtype);
    if (v.nbytes != want) {
      surf::fail(surf::ErrorCode::invalid_argument, "tensor '" + name + "': nbytes " + std::to_string(v.nbytes) +
                                                        ", its shape " + surf::shape_string(shape) + " needs " +
                                                        std::to_string(want));
    }
    if (map.count(name)) surf::fail(surf::ErrorCode::invalid_argument, "tensor '" + name + "' given twice");
    map[name] = surf::borrow_tensor(dtype, std::move(shape), v.data);
  }
  return map;
}

surf_tensors* to_handle(surf::TensorMap map) {
  auto* t = new surf_tensors{std::move(map), {}};
  for (const auto& [name, _] : t->map) t->names.push_back(name);
  return t;
}

void fill_view(const std::string& name, const surf::Tensor& t, surf_tensor_view* out) {
  out->name = name.c_str();
  out->dtype = from_dtype(t.dtype());
  out->rank = static_cast<int32_t>(t.shape().size());
  out->shape = t.shape().data();
  out->data = t.raw();
  out->nbytes = t.nbytes();
}

}  // namespace

extern "C" {

const char* surf_status_name(surf_status status) {
  if (status < SURF_OK || status > SURF_INTERNAL) return "unknown";
  return surf::error_code_name(static_cast<surf::ErrorCode>(status));
}

const char* surf_last_error(void) { return last_error.c_str(); }

const char* surf_version(void) { return SURF_SDK_VERSION; }

size_t surf_tensors_count(const surf_tensors* tensors) { return tensors ? tensors->names.size() : 0; }

surf_status surf_tensors_get(const surf_tensors* tensors, size_t index, surf_tensor_view* out) {
  return guarded([&] {
    need(tensors, "tensors");
    need(out, "out");
    if (index >= tensors->names.size()) {
      surf::fail(surf::ErrorCode::invalid_argument,
                 "index " + std::to_string(index) + " past the " + std::to_string(tensors->names.size()) + " tensors");
    }
    const std::string& name = tensors->names[index];
    fill_view(name, tensors->map.at(name), out);
  });
}

surf_status surf_tensors_find(const surf_tensors* tensors, const char* name, surf_tensor_view* out) {
  return guarded([&] {
    need(tensors, "tensors");
    need(name, "name");
    need(out, "out");
    auto it = tensors->map.find(name);
    if (it == tensors->map.end()) surf::fail(surf::ErrorCode::not_found, std::string("no tensor '") + name + "'");
    fill_view(it->first, it->second, out);
  });
}

void surf_tensors_free(surf_tensors* tensors) { delete tensors; }

surf_status surf_load_safetensors(const char* path, surf_tensors** out) {
  if (out) *out = nullptr;
  return guarded([&] {
    need(path, "path");
    need(out, "out");
    *out = to_handle(surf::load_safetensors(path));
  });
}

surf_status surf_save_safetensors(const char* path, const surf_tensor_view* tensors, size_t count) {
  return guarded([&] {
    need(path, "path");
    surf::save_safetensors(path, to_map(tensors, count));
  });
}

void surf_open_options_init(surf_open_options* options) {
  if (!options) return;
  options->cache_size = surf::kDefaultCacheSize;
  options->prefetch = surf::kDefaultPrefetch;
  options->cache_bytes = 0;
  options->plugin_dir = nullptr;
  options->connect_timeout_ms = surf::kDefaultConnectTimeoutMs;
}

surf_status surf_session_open(const char* source, const surf_open_options* options, surf_session** out) {
  if (out) *out = nullptr;
  return guarded([&] {
    need(source, "source");
    need(out, "out");
    surf::OpenOptions o;
    if (options) {
      o.cache_size = options->cache_size;
      o.prefetch = options->prefetch;
      o.cache_bytes = options->cache_bytes;
      if (options->plugin_dir) o.plugin_dirs.emplace_back(options->plugin_dir);
      o.connect_timeout_ms = options->connect_timeout_ms;
    }
    auto s = std::make_unique<surf_session>();
    s->session = surf::Session::open(source, o);
    *out = s.release();
  });
}

void surf_session_close(surf_session* session) {
  try {
    delete session;
  } catch (...) {
  }
}

const char* surf_session_model_type(const surf_session* session) {
  return session ? session->session->info().model_type.c_str() : "";
}

surf_status surf_session_forward(surf_session* session, const surf_tensor_view* inputs, size_t count,
                                 surf_tensors** out) {
  if (out) *out = nullptr;
  return guarded([&] {
    need(session, "session");
    need(out, "out");
    *out = to_handle(session->session->forward(to_map(inputs, count)));
  });
}

void surf_generate_options_init(surf_generate_options* options) {
  if (!options) return;
  options->max_new_tokens = surf::GenerateOptions{}.max_new_tokens;
  options->stop_at_eos = 1;
  options->on_token = nullptr;
  options->user_data = nullptr;
}

surf_status surf_session_generate(surf_session* session, const surf_tensor_view* inputs, size_t count,
                                  const surf_generate_options* options, surf_tensors** out) {
  if (out) *out = nullptr;
  return guarded([&] {
    need(session, "session");
    need(out, "out");
    surf_generate_options o;
    surf_generate_options_init(&o);
    if (options) o = *options;
    surf::GenerateOptions g;
    g.max_new_tokens = o.max_new_tokens;
    g.stop_at_eos = o.stop_at_eos != 0;
    session->cancel.store(false);
    g.on_token = [session, o](int64_t seq, int64_t id, std::string_view piece) {
      if (session->cancel.load()) return false;
      if (o.on_token == nullptr) return true;
      return o.on_token(seq, id, piece.data(), piece.size(), o.user_data) != 0;
    };
    *out = to_handle(session->session->generate(to_map(inputs, count), g));
  });
}

void surf_session_cancel(surf_session* session) {
  if (session) session->cancel.store(true);
}

surf_status surf_session_cache_stats(const surf_session* session, surf_cache_stats* out) {
  return guarded([&] {
    need(session, "session");
    need(out, "out");
    const surf::CacheStats s = session->session->cache_stats();
    *out = surf_cache_stats{s.hits,
                            s.misses,
                            s.evictions,
                            s.fetches,
                            s.bytes_fetched,
                            s.prefetch_issued,
                            s.prefetch_used,
                            s.prefetch_wasted,
                            s.resident_bytes,
                            s.cached_bytes,
                            s.peak_cached_bytes,
                            s.cached_components,
                            static_cast<double>(s.fetch_ns) / 1e6,
                            static_cast<double>(s.wait_ns) / 1e6};
  });
}

surf_status surf_session_warm_up(surf_session* session, const char* const* ids, size_t count) {
  return guarded([&] {
    need(session, "session");
    if (count > 0) need(ids, "ids");
    std::vector<std::string> v;
    for (size_t i = 0; i < count; ++i) {
      need(ids[i], "component id");
      v.emplace_back(ids[i]);
    }
    session->session->warm_up(v);
  });
}

surf_status surf_session_clear_cache(surf_session* session) {
  return guarded([&] {
    need(session, "session");
    session->session->clear_cache();
  });
}

}  // extern "C"
