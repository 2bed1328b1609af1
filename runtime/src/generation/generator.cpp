#include "generation/generator.h"

#include <algorithm>
#include <cstring>
#include <set>

#include "generation/sampler.h"

namespace surf {

namespace {

void check_options(const GenerateOptions& o) {
  if (o.max_new_tokens <= 0) fail(ErrorCode::invalid_argument, "max_new_tokens must be at least 1");
  if (o.do_sample && !(o.temperature > 0.0f))
    fail(ErrorCode::invalid_argument, "temperature must be above 0 when sampling");
  if (o.top_k < 0) fail(ErrorCode::invalid_argument, "top_k must not be negative");
  if (!(o.top_p > 0.0f && o.top_p <= 1.0f)) fail(ErrorCode::invalid_argument, "top_p must be in (0, 1]");
  if (!(o.min_p >= 0.0f && o.min_p <= 1.0f)) fail(ErrorCode::invalid_argument, "min_p must be in [0, 1]");
  if (!(o.repetition_penalty > 0.0f)) fail(ErrorCode::invalid_argument, "repetition_penalty must be above 0");
  for (const auto& s : o.stop_strings) {
    if (s.empty()) fail(ErrorCode::invalid_argument, "stop strings must not be empty");
  }
}

// Length of the longest suffix of `text` that is a proper prefix of one of `stops`.
size_t partial_stop_suffix(const std::string& text, const std::vector<std::string>& stops) {
  size_t best = 0;
  for (const auto& s : stops) {
    for (size_t n = std::min(text.size(), s.size() - 1); n > best; --n) {
      if (text.compare(text.size() - n, n, s, 0, n) == 0) {
        best = n;
        break;
      }
    }
  }
  return best;
}

struct RowState {
  bool done = false;
  std::string reason;
  int64_t count = 0;
  std::vector<int64_t> history;  // for the repetition penalty
  std::string held;              // decoded text not yet handed out (a possible stop-string start)
  std::string text;              // text handed out
};

}  // namespace

struct GenerationRequest::State {
  GenerateOptions options;
  const Tokenizer* tokenizer = nullptr;
  std::vector<SequenceHandle> owned;
  std::vector<Sequence*> sequences;
  int64_t rows = 0, prefix = 0, max_new = 0, width = 0;
  std::set<int64_t> eos;
  bool stop_at_eos = false;
  std::unique_ptr<Sampler> sampler;
  Tensor generated, step_logits;
  std::vector<RowState> state;
  std::vector<Rng> rngs;
  std::vector<StreamDecoder> decoders;
  int64_t vocab = 0, steps = 0;
  std::vector<float> row;
  std::vector<int64_t> active;
  std::vector<Sequence*> active_seqs;

  // The rows still running, for the next step.
  void collect() {
    active.clear();
    active_seqs.clear();
    if (steps == max_new) return;
    for (int64_t r = 0; r < rows; ++r) {
      if (!state[r].done) {
        active.push_back(r);
        active_seqs.push_back(sequences[r]);
      }
    }
  }
};

GenerationRequest::GenerationRequest(PluginModel& model, LayerCache& cache, const TensorMap& inputs,
                                     const GenerateOptions& options, const std::vector<int64_t>& eos_ids,
                                     int64_t pad_id, const Tokenizer* tokenizer)
    : s_(std::make_unique<State>()) {
  check_options(options);
  if (!options.stop_strings.empty() && tokenizer == nullptr) {
    fail(ErrorCode::not_found, "stop strings need the model's tokenizer files, and this source has none");
  }
  State& g = *s_;
  g.options = options;
  g.tokenizer = tokenizer;
  g.max_new = options.max_new_tokens;
  cache.begin_pass(PassKind::start);
  g.owned = model.start(inputs, g.max_new, cache);
  for (auto& s : g.owned) g.sequences.push_back(s.get());
  g.rows = static_cast<int64_t>(g.sequences.size());
  g.prefix = static_cast<int64_t>(g.rows ? g.sequences[0]->output_prefix.size() : 0);
  for (const Sequence* s : g.sequences) {
    if (static_cast<int64_t>(s->output_prefix.size()) != g.prefix)
      fail(ErrorCode::internal, "sequences of one batch differ in prefix length");
  }
  g.eos = std::set<int64_t>(eos_ids.begin(), eos_ids.end());
  g.stop_at_eos = options.stop_at_eos && !g.eos.empty();

  SamplingParams sp;
  sp.sample = options.do_sample;
  sp.temperature = options.temperature;
  sp.top_k = options.top_k;
  sp.top_p = options.top_p;
  sp.min_p = options.min_p;
  sp.repetition_penalty = options.repetition_penalty;
  g.sampler = std::make_unique<Sampler>(sp);

  g.width = g.prefix + g.max_new;
  g.generated = Tensor::empty(DType::I64, {g.rows, g.width});
  std::fill_n(g.generated.i64(), g.rows * g.width, pad_id);
  for (int64_t r = 0; r < g.rows; ++r)
    std::copy_n(g.sequences[r]->output_prefix.data(), g.prefix, g.generated.i64() + r * g.width);

  g.state.resize(static_cast<size_t>(g.rows));
  for (int64_t r = 0; r < g.rows; ++r) {
    g.state[r].history = g.sequences[r]->pending;
    g.rngs.emplace_back(options.seed + static_cast<uint64_t>(r));
    if (tokenizer) g.decoders.emplace_back(*tokenizer, true);
  }
  g.collect();
}

GenerationRequest::~GenerationRequest() = default;
GenerationRequest::GenerationRequest(GenerationRequest&&) noexcept = default;

const std::vector<Sequence*>& GenerationRequest::active() const { return s_->active_seqs; }
bool GenerationRequest::done() const { return s_->active_seqs.empty(); }

void GenerationRequest::absorb(const float* logits, int64_t vocab) {
  State& g = *s_;
  const GenerateOptions& options = g.options;
  const int64_t s = g.steps;
  const int64_t max_new = g.max_new;
  g.steps = s + 1;
  if (s == 0) {
    g.vocab = vocab;
    if (options.return_logits) {
      g.step_logits = Tensor::empty(DType::F32, {g.rows, max_new, vocab});
      std::memset(g.step_logits.f32(), 0, static_cast<size_t>(g.rows * max_new * vocab) * sizeof(float));
    }
  }
  for (size_t k = 0; k < g.active.size(); ++k) {
    const int64_t r = g.active[k];
    RowState& st = g.state[r];
    const float* lr = logits + static_cast<int64_t>(k) * vocab;
    if (options.return_logits) std::copy_n(lr, vocab, g.step_logits.f32() + (r * max_new + s) * vocab);
    g.row.assign(lr, lr + vocab);
    const int64_t id = g.sampler->pick(g.row, st.history, g.rngs[r]);
    g.generated.i64()[r * g.width + g.prefix + s] = id;
    st.history.push_back(id);
    ++st.count;
    g.sequences[r]->pending = {id};
    if (g.stop_at_eos && g.eos.count(id)) {
      st.done = true;
      st.reason = "eos";
    } else if (st.count == max_new) {
      st.done = true;
      st.reason = "length";
    }
    std::string piece;
    if (g.tokenizer) {
      st.held += g.decoders[r].push(id);
      if (st.done) st.held += g.decoders[r].finish();
      size_t stop_at = std::string::npos;
      for (const auto& stop : options.stop_strings) stop_at = std::min(stop_at, st.held.find(stop));
      if (stop_at != std::string::npos) {
        piece = st.held.substr(0, stop_at);
        st.held.clear();
        st.done = true;
        st.reason = "stop_string";
      } else {
        const size_t keep = st.done ? 0 : partial_stop_suffix(st.held, options.stop_strings);
        piece = st.held.substr(0, st.held.size() - keep);
        st.held.erase(0, st.held.size() - keep);
      }
      st.text += piece;
    }
    if (options.on_token && !options.on_token(r, id, piece) && !st.done) {
      st.done = true;
      st.reason = "cancelled";
    }
  }
  g.collect();
}

GenerationRun GenerationRequest::finish() {
  State& g = *s_;
  const int64_t rows = g.rows, max_new = g.max_new, steps = g.steps, vocab = g.vocab;
  GenerationRun run;
  Tensor lengths = Tensor::empty(DType::I64, {rows});
  for (int64_t r = 0; r < rows; ++r) {
    lengths.i64()[r] = g.state[r].count;
    run.texts.push_back(g.state[r].text);
    run.finish_reasons.push_back(g.state[r].reason.empty() ? "length" : g.state[r].reason);
  }
  Tensor generated = g.generated, step_logits = g.step_logits;
  if (steps < max_new) {
    // Every row stopped early: keep the columns that were generated.
    const int64_t w = g.prefix + steps;
    Tensor out = Tensor::empty(DType::I64, {rows, w});
    for (int64_t r = 0; r < rows; ++r) std::copy_n(generated.i64() + r * g.width, w, out.i64() + r * w);
    generated = out;
    if (g.options.return_logits && vocab > 0) {
      Tensor l = Tensor::empty(DType::F32, {rows, steps, vocab});
      for (int64_t r = 0; r < rows; ++r) {
        std::copy_n(step_logits.f32() + r * max_new * vocab, steps * vocab, l.f32() + r * steps * vocab);
      }
      step_logits = l;
    }
  }
  run.tensors = {{"generated_ids", generated}, {"generated_lengths", lengths}};
  if (g.options.return_logits && vocab > 0) run.tensors["generation_logits"] = step_logits;
  return run;
}

GenerationRun run_generation(PluginModel& model, LayerCache& cache, const TensorMap& inputs,
                             const GenerateOptions& options, const std::vector<int64_t>& eos_ids, int64_t pad_id,
                             const Tokenizer* tokenizer) {
  GenerationRequest request(model, cache, inputs, options, eos_ids, pad_id, tokenizer);
  while (!request.done()) {
    cache.begin_pass(PassKind::step);
    const Tensor logits = model.step(request.active(), cache);
    request.absorb(logits.f32(), logits.dim(-1));
  }
  return request.finish();
}

TensorMap generate_greedy(PluginModel& model, LayerCache& cache, const TensorMap& inputs, int64_t max_new_tokens) {
  GenerateOptions o;
  o.max_new_tokens = max_new_tokens;
  o.stop_at_eos = false;
  TensorMap out = run_generation(model, cache, inputs, o, {}, 0, nullptr).tensors;
  out.erase("generated_lengths");
  return out;
}

}  // namespace surf
