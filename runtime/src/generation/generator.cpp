#include "generation/generator.h"

#include <algorithm>
#include <cstring>
#include <set>

#include "generation/sampler.h"

namespace surf {

namespace {

void check_options(const GenerateOptions& o) {
  if (o.max_new_tokens <= 0) fail(ErrorCode::invalid_argument, "max_new_tokens must be at least 1");
  if (o.do_sample && !(o.temperature > 0.0f)) fail(ErrorCode::invalid_argument, "temperature must be above 0 when sampling");
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

GenerationRun run_generation(PluginModel& model, LayerCache& cache, const TensorMap& inputs, const GenerateOptions& options,
                             const std::vector<int64_t>& eos_ids, int64_t pad_id, const Tokenizer* tokenizer) {
  check_options(options);
  if (!options.stop_strings.empty() && tokenizer == nullptr) {
    fail(ErrorCode::not_found, "stop strings need the model's tokenizer files, and this source has none");
  }
  const int64_t max_new = options.max_new_tokens;
  cache.begin_pass(PassKind::start);
  std::vector<SequenceHandle> owned = model.start(inputs, max_new, cache);
  std::vector<Sequence*> sequences;
  for (auto& s : owned) sequences.push_back(s.get());
  const auto rows = static_cast<int64_t>(sequences.size());
  const auto prefix = static_cast<int64_t>(rows ? sequences[0]->output_prefix.size() : 0);
  for (const Sequence* s : sequences) {
    if (static_cast<int64_t>(s->output_prefix.size()) != prefix) fail(ErrorCode::internal, "sequences of one batch differ in prefix length");
  }
  const std::set<int64_t> eos(eos_ids.begin(), eos_ids.end());
  const bool stop_at_eos = options.stop_at_eos && !eos.empty();

  SamplingParams sp;
  sp.sample = options.do_sample;
  sp.temperature = options.temperature;
  sp.top_k = options.top_k;
  sp.top_p = options.top_p;
  sp.min_p = options.min_p;
  sp.repetition_penalty = options.repetition_penalty;
  const Sampler sampler(sp);

  const int64_t width = prefix + max_new;
  Tensor generated = Tensor::empty(DType::I64, {rows, width});
  std::fill_n(generated.i64(), rows * width, pad_id);
  for (int64_t r = 0; r < rows; ++r) std::copy_n(sequences[r]->output_prefix.data(), prefix, generated.i64() + r * width);

  std::vector<RowState> state(static_cast<size_t>(rows));
  std::vector<Rng> rngs;
  std::vector<StreamDecoder> decoders;
  for (int64_t r = 0; r < rows; ++r) {
    state[r].history = sequences[r]->pending;
    rngs.emplace_back(options.seed + static_cast<uint64_t>(r));
    if (tokenizer) decoders.emplace_back(*tokenizer, true);
  }
  const bool want_text = tokenizer != nullptr;

  Tensor step_logits;
  int64_t vocab = 0, steps = 0;
  std::vector<float> row;
  std::vector<int64_t> active;
  std::vector<Sequence*> active_seqs;
  for (int64_t s = 0; s < max_new; ++s) {
    active.clear();
    active_seqs.clear();
    for (int64_t r = 0; r < rows; ++r) {
      if (!state[r].done) {
        active.push_back(r);
        active_seqs.push_back(sequences[r]);
      }
    }
    if (active.empty()) break;
    cache.begin_pass(PassKind::step);
    const Tensor logits = model.step(active_seqs, cache);
    steps = s + 1;
    if (s == 0) {
      vocab = logits.dim(-1);
      if (options.return_logits) {
        step_logits = Tensor::empty(DType::F32, {rows, max_new, vocab});
        std::memset(step_logits.f32(), 0, static_cast<size_t>(rows * max_new * vocab) * sizeof(float));
      }
    }
    for (size_t k = 0; k < active.size(); ++k) {
      const int64_t r = active[k];
      RowState& st = state[r];
      const float* lr = logits.f32() + static_cast<int64_t>(k) * vocab;
      if (options.return_logits) std::copy_n(lr, vocab, step_logits.f32() + (r * max_new + s) * vocab);
      row.assign(lr, lr + vocab);
      const int64_t id = sampler.pick(row, st.history, rngs[r]);
      generated.i64()[r * width + prefix + s] = id;
      st.history.push_back(id);
      ++st.count;
      sequences[r]->pending = {id};
      if (stop_at_eos && eos.count(id)) {
        st.done = true;
        st.reason = "eos";
      } else if (st.count == max_new) {
        st.done = true;
        st.reason = "length";
      }
      std::string piece;
      if (want_text) {
        st.held += decoders[r].push(id);
        if (st.done) st.held += decoders[r].finish();
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
  }

  GenerationRun run;
  Tensor lengths = Tensor::empty(DType::I64, {rows});
  for (int64_t r = 0; r < rows; ++r) {
    lengths.i64()[r] = state[r].count;
    run.texts.push_back(state[r].text);
    run.finish_reasons.push_back(state[r].reason.empty() ? "length" : state[r].reason);
  }
  if (steps < max_new) {
    // Every row stopped early: keep the columns that were generated.
    const int64_t w = prefix + steps;
    Tensor g = Tensor::empty(DType::I64, {rows, w});
    for (int64_t r = 0; r < rows; ++r) std::copy_n(generated.i64() + r * width, w, g.i64() + r * w);
    generated = g;
    if (options.return_logits && vocab > 0) {
      Tensor l = Tensor::empty(DType::F32, {rows, steps, vocab});
      for (int64_t r = 0; r < rows; ++r) {
        std::copy_n(step_logits.f32() + r * max_new * vocab, steps * vocab, l.f32() + r * steps * vocab);
      }
      step_logits = l;
    }
  }
  run.tensors = {{"generated_ids", generated}, {"generated_lengths", lengths}};
  if (options.return_logits && vocab > 0) run.tensors["generation_logits"] = step_logits;
  return run;
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
