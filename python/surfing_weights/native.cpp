// surfing_weights._native: the runtime's C++ API for Python (pybind11). The Python layer
// (__init__.py) adds the iterator and asyncio forms. The GIL is released while the runtime works;
// token callbacks take it back only to call Python.
#include <pybind11/functional.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <optional>

#include "surf/runtime.h"
#include "surf/version.h"

namespace py = pybind11;

namespace {

PyObject* surf_error_type = nullptr;

// numpy array -> tensor. C-contiguous float32/float16/int64 arrays are borrowed (no copy; `keep`
// holds them for the call); int32 and other integer arrays become int64, float64 float32.
surf::Tensor to_tensor(const std::string& name, py::handle obj, py::list& keep) {
  py::array a = py::array::ensure(obj);
  if (!a) throw surf::Error(surf::ErrorCode::invalid_argument, "input '" + name + "' is not an array");
  surf::DType dtype;
  if (a.dtype().is(py::dtype::of<float>())) {
    dtype = surf::DType::F32;
  } else if (a.dtype().is(py::dtype::of<int64_t>())) {
    dtype = surf::DType::I64;
  } else if (a.dtype().kind() == 'f' && a.dtype().itemsize() == 2) {
    dtype = surf::DType::F16;
  } else if (a.dtype().kind() == 'i' || a.dtype().kind() == 'u' || a.dtype().kind() == 'b') {
    a = py::array_t<int64_t, py::array::c_style | py::array::forcecast>::ensure(a);
    dtype = surf::DType::I64;
  } else if (a.dtype().kind() == 'f') {
    a = py::array_t<float, py::array::c_style | py::array::forcecast>::ensure(a);
    dtype = surf::DType::F32;
  } else {
    throw surf::Error(
        surf::ErrorCode::invalid_argument,
        "input '" + name + "': dtype " + py::str(a.dtype()).cast<std::string>() + " (float32, float16 or integers)");
  }
  if (!(a.flags() & py::array::c_style)) a = py::array::ensure(a, py::array::c_style | py::array::forcecast);
  surf::Shape shape(a.shape(), a.shape() + a.ndim());
  keep.append(a);
  return surf::borrow_tensor(dtype, std::move(shape), a.data());
}

surf::TensorMap to_map(const py::dict& inputs, py::list& keep) {
  surf::TensorMap map;
  for (auto [k, v] : inputs) {
    const std::string name = py::str(k);
    map[name] = to_tensor(name, v, keep);
  }
  return map;
}

// tensor -> numpy array over the tensor's own buffer (the capsule keeps it alive; read-only).
// BF16 has no numpy dtype: it becomes a float32 copy.
py::array to_array(const surf::Tensor& t) {
  std::vector<py::ssize_t> shape(t.shape().begin(), t.shape().end());
  if (t.dtype() == surf::DType::BF16) {
    py::array_t<float> out(shape);
    const auto* src = static_cast<const uint16_t*>(t.raw());
    float* dst = out.mutable_data();
    for (int64_t i = 0; i < t.numel(); ++i) {
      const uint32_t bits = static_cast<uint32_t>(src[i]) << 16;
      std::memcpy(&dst[i], &bits, 4);
    }
    return out;
  }
  if (t.dtype() != surf::DType::F32 && t.dtype() != surf::DType::I64 && t.dtype() != surf::DType::F16) {
    throw surf::Error(surf::ErrorCode::unsupported,
                      std::string("a ") + surf::dtype_name(t.dtype()) + " tensor has no numpy form");
  }
  py::dtype dt = t.dtype() == surf::DType::F32   ? py::dtype::of<float>()
                 : t.dtype() == surf::DType::I64 ? py::dtype::of<int64_t>()
                                                 : py::dtype("float16");
  auto* holder = new surf::Tensor(t);
  py::capsule base(holder, [](void* p) { delete static_cast<surf::Tensor*>(p); });
  py::array a(dt, shape, {}, t.raw(), base);
  py::detail::array_proxy(a.ptr())->flags &= ~py::detail::npy_api::NPY_ARRAY_WRITEABLE_;
  return a;
}

py::dict to_dict(const surf::TensorMap& map) {
  py::dict d;
  for (const auto& [name, t] : map) d[py::str(name)] = to_array(t);
  return d;
}

py::dict stats_dict(const surf::CacheStats& s) {
  py::dict d;
  d["hits"] = s.hits;
  d["misses"] = s.misses;
  d["evictions"] = s.evictions;
  d["fetches"] = s.fetches;
  d["bytes_fetched"] = s.bytes_fetched;
  d["prefetch_issued"] = s.prefetch_issued;
  d["prefetch_used"] = s.prefetch_used;
  d["prefetch_wasted"] = s.prefetch_wasted;
  d["fetch_ms"] = static_cast<double>(s.fetch_ns) / 1e6;
  d["wait_ms"] = static_cast<double>(s.wait_ns) / 1e6;
  d["resident_bytes"] = s.resident_bytes;
  d["cached_bytes"] = s.cached_bytes;
  d["peak_cached_bytes"] = s.peak_cached_bytes;
  d["cached_components"] = s.cached_components;
  return d;
}

// Generation options from Python keywords; on_token (sequence, id, piece) -> bool|None (False stops
// that sequence). A Python exception in the callback stops generation and is re-raised after.
struct PyGenerate {
  surf::GenerateOptions options;
  std::optional<py::error_already_set> error;
};

void set_generate(PyGenerate& g, int64_t max_new_tokens, bool stop_at_eos, const std::vector<int64_t>& eos_token_ids,
                  const std::vector<std::string>& stop_strings, bool do_sample, float temperature, int64_t top_k,
                  float top_p, float min_p, float repetition_penalty, uint64_t seed, py::object on_token) {
  auto& o = g.options;
  o.max_new_tokens = max_new_tokens;
  o.stop_at_eos = stop_at_eos;
  o.eos_token_ids = eos_token_ids;
  o.stop_strings = stop_strings;
  o.do_sample = do_sample;
  o.temperature = temperature;
  o.top_k = top_k;
  o.top_p = top_p;
  o.min_p = min_p;
  o.repetition_penalty = repetition_penalty;
  o.seed = seed;
  if (!on_token.is_none()) {
    // The callable is shared and released with the GIL held (the options may be destroyed without it).
    auto* fn = new py::object(std::move(on_token));
    std::shared_ptr<py::object> cb(fn, [](py::object* p) {
      py::gil_scoped_acquire gil;
      delete p;
    });
    PyGenerate* gp = &g;
    o.on_token = [cb, gp](int64_t seq, int64_t id, std::string_view piece) {
      py::gil_scoped_acquire gil;
      if (gp->error) return false;
      try {
        py::object r = (*cb)(seq, id, py::bytes(piece.data(), piece.size()).attr("decode")("utf-8", "replace"));
        return r.is_none() || r.cast<bool>();
      } catch (py::error_already_set& e) {
        gp->error.emplace(std::move(e));
        return false;
      }
    };
  }
}

class PySession {
 public:
  static std::unique_ptr<PySession> open(const std::string& source, int cache_size, int prefetch, uint64_t cache_bytes,
                                         const std::vector<std::string>& plugin_dirs,
                                         const std::vector<std::string>& warmup, int spare_buffers, int retry_attempts,
                                         int request_timeout_ms, int connect_timeout_ms) {
    surf::OpenOptions o;
    o.cache_size = cache_size;
    o.prefetch = prefetch;
    o.cache_bytes = cache_bytes;
    o.plugin_dirs = plugin_dirs;
    o.warmup = warmup;
    o.spare_buffers = spare_buffers;
    o.retry_attempts = retry_attempts;
    o.request_timeout_ms = request_timeout_ms;
    o.connect_timeout_ms = connect_timeout_ms;
    auto s = std::make_unique<PySession>();
    py::gil_scoped_release nogil;
    s->session_ = surf::Session::open(source, o);
    return s;
  }

  py::dict forward(const py::dict& inputs, bool hidden_states) {
    py::list keep;
    const surf::TensorMap in = to_map(inputs, keep);
    surf::RunOptions ro;
    ro.hidden_states = hidden_states;
    surf::TensorMap out;
    {
      py::gil_scoped_release nogil;
      out = get().forward(in, ro);
    }
    return to_dict(out);
  }

  py::dict generate(const py::dict& inputs, int64_t max_new_tokens, bool stop_at_eos,
                    const std::vector<int64_t>& eos_token_ids, const std::vector<std::string>& stop_strings,
                    bool do_sample, float temperature, int64_t top_k, float top_p, float min_p,
                    float repetition_penalty, uint64_t seed, py::object on_token) {
    py::list keep;
    const surf::TensorMap in = to_map(inputs, keep);
    PyGenerate g;
    set_generate(g, max_new_tokens, stop_at_eos, eos_token_ids, stop_strings, do_sample, temperature, top_k, top_p,
                 min_p, repetition_penalty, seed, std::move(on_token));
    surf::TensorMap out;
    {
      py::gil_scoped_release nogil;
      out = get().generate(in, g.options);
    }
    if (g.error) throw std::move(*g.error);
    return to_dict(out);
  }

  py::tuple generate_text(const std::vector<std::string>& prompts, int64_t max_new_tokens, bool stop_at_eos,
                          const std::vector<int64_t>& eos_token_ids, const std::vector<std::string>& stop_strings,
                          bool do_sample, float temperature, int64_t top_k, float top_p, float min_p,
                          float repetition_penalty, uint64_t seed, py::object on_token) {
    PyGenerate g;
    set_generate(g, max_new_tokens, stop_at_eos, eos_token_ids, stop_strings, do_sample, temperature, top_k, top_p,
                 min_p, repetition_penalty, seed, std::move(on_token));
    surf::TextGeneration r;
    {
      py::gil_scoped_release nogil;
      r = get().generate_text(prompts, g.options);
    }
    if (g.error) throw std::move(*g.error);
    return py::make_tuple(r.texts, r.finish_reasons, to_dict(r.tensors));
  }

  bool has_tokenizer() {
    py::gil_scoped_release nogil;
    return get().has_tokenizer();
  }
  std::vector<int64_t> encode(const std::string& text, bool add_special_tokens) {
    py::gil_scoped_release nogil;
    return get().tokenizer().encode(text, add_special_tokens);
  }
  std::string decode(const std::vector<int64_t>& ids, bool skip_special_tokens) {
    py::gil_scoped_release nogil;
    return get().tokenizer().decode(ids, skip_special_tokens);
  }
  void warm_up(const std::vector<std::string>& ids) {
    py::gil_scoped_release nogil;
    get().warm_up(ids);
  }
  void clear_cache() {
    py::gil_scoped_release nogil;
    get().clear_cache();
  }
  py::dict cache_stats() { return stats_dict(get().cache_stats()); }
  void reset_cache_stats() { get().reset_cache_stats(); }
  py::dict info() {
    const surf::ModelInfo& i = get().info();
    py::dict d;
    d["source"] = i.source;
    d["source_kind"] = i.source_kind;
    d["model_type"] = i.model_type;
    d["plugin"] = i.plugin;
    d["config_json"] = i.config_json;
    d["execution_order"] = i.execution_order;
    py::list comps;
    for (const auto& c : i.components) {
      py::dict cd;
      cd["id"] = c.id;
      cd["resident"] = c.resident;
      cd["bytes"] = c.bytes;
      cd["raw_bytes"] = c.raw_bytes;
      cd["tensors"] = c.tensors;
      comps.append(cd);
    }
    d["components"] = comps;
    return d;
  }
  // Waits for a running call (the session serialises them) and frees the model.
  void close() {
    py::gil_scoped_release nogil;
    session_.reset();
  }
  bool closed() const { return !session_; }

 private:
  surf::Session& get() {
    if (!session_) throw surf::Error(surf::ErrorCode::invalid_argument, "the session is closed");
    return *session_;
  }
  std::unique_ptr<surf::Session> session_;
};

}  // namespace

PYBIND11_MODULE(_native, m) {
  m.doc() = "Surfing Weights runtime (native part; use the surfing_weights package)";
  m.attr("__version__") = SURF_SDK_VERSION;

  surf_error_type = PyErr_NewExceptionWithDoc(
      "surfing_weights.SurfError", "A runtime error. code: its name ('not_found', ...); code_value: the number.",
      PyExc_RuntimeError, nullptr);
  m.attr("SurfError") = py::handle(surf_error_type);
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const surf::Error& e) {
      py::object inst = py::handle(surf_error_type)(e.what());
      inst.attr("code") = surf::error_code_name(e.code());
      inst.attr("code_value") = static_cast<int>(e.code());
      PyErr_SetObject(surf_error_type, inst.ptr());
    }
  });

  py::class_<PySession>(m, "_Session")
      .def_static("open", &PySession::open, py::arg("source"), py::arg("cache_size"), py::arg("prefetch"),
                  py::arg("cache_bytes"), py::arg("plugin_dirs"), py::arg("warmup"), py::arg("spare_buffers"),
                  py::arg("retry_attempts"), py::arg("request_timeout_ms"), py::arg("connect_timeout_ms"))
      .def("forward", &PySession::forward, py::arg("inputs"), py::arg("hidden_states") = false)
      .def("generate", &PySession::generate)
      .def("generate_text", &PySession::generate_text)
      .def("has_tokenizer", &PySession::has_tokenizer)
      .def("encode", &PySession::encode, py::arg("text"), py::arg("add_special_tokens") = true)
      .def("decode", &PySession::decode, py::arg("ids"), py::arg("skip_special_tokens") = true)
      .def("warm_up", &PySession::warm_up)
      .def("clear_cache", &PySession::clear_cache)
      .def("cache_stats", &PySession::cache_stats)
      .def("reset_cache_stats", &PySession::reset_cache_stats)
      .def("info", &PySession::info)
      .def("close", &PySession::close)
      .def_property_readonly("closed", &PySession::closed);
}
