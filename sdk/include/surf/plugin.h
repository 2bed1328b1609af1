// The plugin contract. A plugin is a shared module that links libsurf-sdk only and exports one
// C entry point, `surf_plugin_entry`, returning a SurfPluginDescriptor. The runtime checks the
// ABI version and the build tag before it passes any C++ object across; every call into the
// plugin goes through the descriptor's function pointers, which catch all exceptions and report
// them as a SurfStatus, so no exception crosses the boundary. Write a plugin by defining a class
// with two static functions and naming it in SURF_PLUGIN (see examples/out_of_tree_plugin).
#pragma once

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "surf/config.h"
#include "surf/error.h"
#include "surf/ops.h"
#include "surf/tensor.h"
#include "surf/version.h"
#include "surf/export.h"

SURF_SDK_PUBLIC_BEGIN

namespace surf {

enum class ComponentRole { resident, streamed };

// One tensor of a component: its name inside the component and the HF names it may have in a
// checkpoint, in order of preference (prefix variants, tied weights).
struct TensorSpec {
  std::string name;
  std::vector<std::string> sources;
  bool required = true;
};

struct ComponentSpec {
  std::string id;  // [A-Za-z0-9_.-]+, e.g. "embed", "layers.3", "encoder.1"
  ComponentRole role = ComponentRole::streamed;
  std::vector<TensorSpec> tensors;
};

struct ComponentPlan {
  std::vector<ComponentSpec> components;
  // Component ids in the order a forward pass uses them (the prefetcher follows it).
  std::vector<std::string> execution_order;
  // HF tensor names that are not parameters (buffers); matched as a suffix of the name.
  std::vector<std::string> ignored_suffixes;
  // HF tensor name prefixes that belong to parts this plugin does not run (task heads).
  std::vector<std::string> ignored_prefixes;
  // ABI 1.1 (appended; the runtime constructs the plan, so an ABI 1.0 plugin's assignment leaves
  // it empty): "component_id/tensor_name" of every nn.Linear weight [out, in] that ops::linear
  // multiplies with. Filled by PlanBuilder::linear / linear_weight. `surf chunk --dtype q8_0|q4_0`
  // quantizes exactly these (blocks along `in`, when `in` is a multiple of 32); everything else
  // (embeddings, norms, biases, GPT-2's Conv1D [in, out] weights) keeps its dtype.
  std::vector<std::string> linear_weights;
};

// A component's tensors, materialised by the runtime: f32 and i64 as stored; f16/bf16 matrices of
// 64K+ elements stay 16-bit (ops::linear, linear_in_out and embedding take them; call
// Tensor::to_f32() for anything else); smaller f16/bf16 tensors arrive as f32. Weights the plan
// lists in linear_weights may arrive as Q8_0/Q4_0 (from a quantized store): ops::linear takes them.
class Component {
 public:
  virtual ~Component() = default;
  virtual const std::string& id() const = 0;
  virtual const Tensor* find(std::string_view name) const = 0;
  // Throws Error(not_found) naming the component and the tensor.
  const Tensor& get(std::string_view name) const;
  const Tensor* get_optional(std::string_view name) const { return find(name); }
};

using ComponentRef = std::shared_ptr<const Component>;

// What the runtime hands to a model: the only way a plugin reaches weights. The runtime owns
// fetching, caching and prefetching (it also marks where each pass begins: plugins need not);
// a held ComponentRef pins its entry in the cache.
class ComponentSource {
 public:
  virtual ~ComponentSource() = default;
  virtual ComponentRef acquire(const std::string& id) = 0;
  // Kept for plugins built against ABI 1.0, which call it at the start of each pass; the runtime
  // now does this itself and plugins should not call it.
  virtual void begin_pass(std::string_view first_id = {}) { (void)first_id; }
};

struct RunOptions {
  bool hidden_states = false;  // also return per-layer hidden states
  int64_t max_new_tokens = 0;  // generate only (ABI 1.0 plugins)
};

// A sequence being decoded incrementally: the tokens it will be fed next and its per-layer
// key/value caches. The runtime drives decoding (sampling, stopping, batching several sequences
// into one pass); the model only runs passes. Plugins may derive from it to keep more per
// sequence (T5: the encoder output and the cross-attention keys/values).
class Sequence {
 public:
  virtual ~Sequence() = default;
  std::vector<int64_t> pending;        // tokens to feed at the next step (the prompt, then one)
  std::vector<int64_t> output_prefix;  // what generated_ids start with (decoder-only: the prompt row)
  int64_t length = 0;                  // tokens fed so far: the next token's position
  int64_t capacity = 0;                // tokens it can hold in all (prompt + new)
  std::vector<ops::KVCache> kv;        // one per attention layer, filled by LayerContext
};

// A model instance. forward reads HF-named inputs and writes HF-named outputs. Models that
// generate implement start and step; the runtime's generation loop calls them.
class Model {
 public:
  virtual ~Model() = default;
  virtual void forward(const TensorMap& inputs, const RunOptions& options, ComponentSource& source,
                       TensorMap& outputs) = 0;
  // One Sequence per row of input_ids (positions where attention_mask is 0 are left out), able to
  // hold `max_new_tokens` more tokens. Encoder-decoder models run their encoder here.
  // Default: Error(unsupported).
  virtual std::vector<std::unique_ptr<Sequence>> start(const TensorMap& inputs, int64_t max_new_tokens,
                                                       ComponentSource& source);
  // Feeds every sequence its pending tokens in one pass over the layers (each layer is acquired
  // once for all of them), appends to their caches, clears pending, and returns the logits of
  // each sequence's last new position: [sequences, vocab]. Default: Error(unsupported).
  virtual Tensor step(const std::vector<Sequence*>& sequences, ComponentSource& source);
  // ABI 1.0's generation entry point; the runtime no longer calls it for ABI 1.1 plugins.
  virtual void generate(const TensorMap& inputs, const RunOptions& options, ComponentSource& source,
                        TensorMap& outputs);  // default: Error(unsupported)
};

// Helpers for plan building.
// {"model.norm.weight", "norm.weight"} from ("model.", "norm.weight") when the prefix is optional.
std::vector<std::string> with_optional_prefix(std::string_view prefix, std::string_view name);
// Input access with clear errors.
const Tensor& require_input(const TensorMap& inputs, std::string_view name);
const Tensor* optional_input(const TensorMap& inputs, std::string_view name);

}  // namespace surf

extern "C" {

typedef struct SurfStatus {
  int code;  // surf::ErrorCode
  char message[1024];
} SurfStatus;

// Grows by appending fields; struct_size tells the runtime which fields exist.
typedef struct SurfPluginDescriptor {
  uint32_t abi_major;
  uint32_t abi_minor;
  uint32_t struct_size;
  const char* build_tag;  // compiler, C++ library ABI and SDK version (SURF_BUILD_TAG)
  const char* name;
  const char* version;
  const char* const* model_types;
  uint32_t model_type_count;
  // C++ objects below are only passed once the build tag matched.
  int (*plan)(const surf::ModelConfig* config, surf::ComponentPlan* out, SurfStatus* status);
  int (*create_model)(const surf::ModelConfig* config, void** model, SurfStatus* status);
  void (*destroy_model)(void* model);
  int (*forward)(void* model, const surf::TensorMap* inputs, const surf::RunOptions* options,
                 surf::ComponentSource* source, surf::TensorMap* outputs, SurfStatus* status);
  int (*generate)(void* model, const surf::TensorMap* inputs, const surf::RunOptions* options,
                  surf::ComponentSource* source, surf::TensorMap* outputs, SurfStatus* status);
  // ABI 1.1: incremental decoding driven by the runtime. Sequences made by start are destroyed
  // by destroy_sequence (in the plugin that made them).
  int (*start)(void* model, const surf::TensorMap* inputs, int64_t max_new_tokens, surf::ComponentSource* source,
               std::vector<surf::Sequence*>* out, SurfStatus* status);
  int (*step)(void* model, const std::vector<surf::Sequence*>* sequences, surf::ComponentSource* source,
              surf::Tensor* logits, SurfStatus* status);
  void (*destroy_sequence)(surf::Sequence* sequence);
} SurfPluginDescriptor;

typedef const SurfPluginDescriptor* (*SurfPluginEntry)(void);

}  // extern "C"

#define SURF_PLUGIN_ENTRY_NAME "surf_plugin_entry"

namespace surf::detail {

inline void set_status(SurfStatus* status, int code, const char* message) {
  status->code = code;
  std::strncpy(status->message, message, sizeof(status->message) - 1);
  status->message[sizeof(status->message) - 1] = '\0';
}

template <class Fn>
int guarded(SurfStatus* status, Fn&& fn) noexcept {
  try {
    fn();
    status->code = 0;
    status->message[0] = '\0';
    return 0;
  } catch (const surf::Error& e) {
    set_status(status, static_cast<int>(e.code()), e.what());
  } catch (const std::bad_alloc&) {
    set_status(status, static_cast<int>(ErrorCode::internal), "out of memory");
  } catch (const std::exception& e) {
    set_status(status, static_cast<int>(ErrorCode::internal), e.what());
  } catch (...) {
    set_status(status, static_cast<int>(ErrorCode::internal), "unknown exception in plugin");
  }
  return status->code;
}

// Arch must provide:
//   static surf::ComponentPlan plan(const surf::ModelConfig&);
//   static std::unique_ptr<surf::Model> create(const surf::ModelConfig&);
template <class Arch>
SurfPluginDescriptor make_descriptor(const char* name, const char* version, const char* const* types,
                                     uint32_t type_count) {
  SurfPluginDescriptor d{};
  d.abi_major = SURF_ABI_MAJOR;
  d.abi_minor = SURF_ABI_MINOR;
  d.struct_size = sizeof(SurfPluginDescriptor);
  d.build_tag = SURF_BUILD_TAG;
  d.name = name;
  d.version = version;
  d.model_types = types;
  d.model_type_count = type_count;
  d.plan = [](const ModelConfig* c, ComponentPlan* out, SurfStatus* s) {
    return guarded(s, [&] { *out = Arch::plan(*c); });
  };
  d.create_model = [](const ModelConfig* c, void** model, SurfStatus* s) {
    return guarded(s, [&] { *model = Arch::create(*c).release(); });
  };
  d.destroy_model = [](void* model) { delete static_cast<Model*>(model); };
  d.forward = [](void* m, const TensorMap* in, const RunOptions* o, ComponentSource* src, TensorMap* out,
                 SurfStatus* s) { return guarded(s, [&] { static_cast<Model*>(m)->forward(*in, *o, *src, *out); }); };
  d.generate = [](void* m, const TensorMap* in, const RunOptions* o, ComponentSource* src, TensorMap* out,
                  SurfStatus* s) { return guarded(s, [&] { static_cast<Model*>(m)->generate(*in, *o, *src, *out); }); };
  d.start = [](void* m, const TensorMap* in, int64_t max_new, ComponentSource* src, std::vector<Sequence*>* out,
               SurfStatus* s) {
    return guarded(s, [&] {
      auto seqs = static_cast<Model*>(m)->start(*in, max_new, *src);
      out->clear();
      for (auto& q : seqs) out->push_back(q.release());
    });
  };
  d.step = [](void* m, const std::vector<Sequence*>* seqs, ComponentSource* src, Tensor* logits, SurfStatus* s) {
    return guarded(s, [&] { *logits = static_cast<Model*>(m)->step(*seqs, *src); });
  };
  d.destroy_sequence = [](Sequence* q) { delete q; };
  return d;
}

}  // namespace surf::detail

// SURF_PLUGIN(MyArch, "my-plugin", "1.0.0", "model_type_a", "model_type_b")
#define SURF_PLUGIN(ARCH, NAME, VERSION, ...)                                                                          \
  extern "C" __attribute__((visibility("default"))) const SurfPluginDescriptor* surf_plugin_entry(void) {              \
    static const char* const surf_types_[] = {__VA_ARGS__};                                                            \
    static const SurfPluginDescriptor surf_descriptor_ =                                                               \
        surf::detail::make_descriptor<ARCH>(NAME, VERSION, surf_types_, sizeof(surf_types_) / sizeof(surf_types_[0])); \
    return &surf_descriptor_;                                                                                          \
  }

SURF_SDK_PUBLIC_END
