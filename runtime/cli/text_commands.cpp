#include "text_commands.h"

#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

namespace surf::cli {

const std::vector<Flag> kGenerationFlags = {
    {"temperature", true, "sample with this temperature (0: greedy; default greedy)"},
    {"top-k", true, "sample from the K most likely tokens"},
    {"top-p", true, "sample from the smallest set of tokens whose probability reaches P"},
    {"min-p", true, "drop tokens below P x the most likely token's probability"},
    {"repetition-penalty", true, "divide the logits of tokens already seen by R (HF's rule; greedy too)"},
    {"seed", true, "sampling seed (default 0): the same seed gives the same tokens"},
    {"sample", false, "sample (with temperature 1 unless given)"},
    {"stop", true, "stop a sequence when its text contains STR (repeatable); the text ends before it"},
    {"eos-id", true, "stop on these ids (comma-separated; default: the model's generation_config.json / config.json)"},
    {"ignore-eos", false, "never stop on EOS: always generate --max-new-tokens"},
};

namespace {

double get_double(const Args& a, const std::string& name, double fallback) {
  if (!a.has(name)) return fallback;
  const std::string v = a.get(name);
  try {
    size_t used = 0;
    const double d = std::stod(v, &used);
    if (used != v.size()) throw std::invalid_argument(v);
    return d;
  } catch (const std::exception&) {
    throw std::invalid_argument("--" + name + " expects a number, got '" + v + "'");
  }
}

std::vector<int64_t> parse_ids(const std::string& flag, const std::vector<std::string>& values) {
  std::vector<int64_t> ids;
  for (const auto& v : values) {
    std::stringstream ss(v);
    std::string part;
    while (std::getline(ss, part, ',')) {
      while (!part.empty() && std::isspace(static_cast<unsigned char>(part.back()))) part.pop_back();
      while (!part.empty() && std::isspace(static_cast<unsigned char>(part.front()))) part.erase(part.begin());
      if (part.empty()) continue;
      try {
        size_t used = 0;
        const long long id = std::stoll(part, &used);
        if (used != part.size()) throw std::invalid_argument(part);
        ids.push_back(id);
      } catch (const std::exception&) {
        throw std::invalid_argument("--" + flag + " expects comma-separated integers, got '" + part + "'");
      }
    }
  }
  return ids;
}

const Flag kConnectTimeoutFlag = {
    "connect-timeout", true,
    "ws[s]:// sources: seconds to reach the server (default " + std::to_string(kDefaultConnectTimeoutMs / 1000) + ")"};

std::vector<Flag> with_help(std::vector<Flag> flags) {
  flags.push_back({"help", false, "show this help"});
  return flags;
}

bool wants_help(const std::vector<std::string>& argv) {
  for (const auto& a : argv) {
    if (a == "--help" || a == "-h") return true;
  }
  return false;
}

OpenOptions source_options(const Args& a) {
  OpenOptions o;
  o.token = a.get("token");
  o.connect_timeout_ms = a.get_seconds_ms("connect-timeout", kDefaultConnectTimeoutMs, 86400);
  return o;
}

}  // namespace

GenerateOptions generation_options(const Args& a, int64_t max_new_tokens) {
  GenerateOptions o;
  o.max_new_tokens = max_new_tokens;
  const double t = get_double(a, "temperature", 1.0);
  o.do_sample =
      a.has("sample") || a.has("top-k") || a.has("top-p") || a.has("min-p") || (a.has("temperature") && t > 0);
  if (a.has("temperature") && t <= 0 && (a.has("sample") || a.has("top-k") || a.has("top-p") || a.has("min-p"))) {
    throw std::invalid_argument("--temperature must be above 0 when sampling");
  }
  o.temperature = static_cast<float>(t);
  o.top_k = a.get_int_in("top-k", 0, 0, 1LL << 31);
  o.top_p = static_cast<float>(get_double(a, "top-p", 1.0));
  o.min_p = static_cast<float>(get_double(a, "min-p", 0.0));
  o.repetition_penalty = static_cast<float>(get_double(a, "repetition-penalty", 1.0));
  const long long seed = a.get_int("seed", 0);
  if (seed < 0) throw std::invalid_argument("--seed must not be negative");
  o.seed = static_cast<uint64_t>(seed);
  o.stop_strings = a.all("stop");
  o.eos_token_ids = parse_ids("eos-id", a.all("eos-id"));
  o.stop_at_eos = !a.has("ignore-eos");
  return o;
}

TextGeneration generate_prompts(Session& session, const std::vector<std::string>& prompts, GenerateOptions options) {
  if (prompts.size() == 1) {
    options.on_token = [](int64_t, int64_t, std::string_view piece) {
      std::fwrite(piece.data(), 1, piece.size(), stdout);
      std::fflush(stdout);
      return true;
    };
  }
  TextGeneration g = session.generate_text(prompts, options);
  if (prompts.size() == 1) {
    std::fputs("\n", stdout);
  } else {
    for (size_t i = 0; i < g.texts.size(); ++i) std::printf("[%zu] %s\n", i, g.texts[i].c_str());
  }
  std::fflush(stdout);
  return g;
}

int cmd_tokenize(const std::vector<std::string>& argv) {
  const auto flags = with_help({{"text", true, "text to encode"},
                                {"no-special", false, "no special tokens added (BOS, [CLS] ... [SEP], </s>)"},
                                {"json", false, "print {\"ids\": [...], \"tokens\": [...]}"},
                                {"token", true, "bearer token for ws:// sources"},
                                kConnectTimeoutFlag});
  if (wants_help(argv)) {
    std::cout << "usage: surf tokenize SOURCE --text \"...\" [--no-special] [--json]\n\n"
                 "Encodes text with the tokenizer that travels with the model (tokenizer.json, or a\n"
                 "SentencePiece model) and prints the ids, comma-separated.\n\noptions:\n"
              << flags_help(flags);
    return 0;
  }
  Args a = parse(argv, flags);
  if (a.positional.size() != 1) throw std::invalid_argument("expected one SOURCE (see --help)");
  if (!a.has("text")) throw std::invalid_argument("missing required option --text");
  const auto tok = load_tokenizer(a.positional[0], source_options(a));
  const std::string text = a.all("text").back();
  const bool special = !a.has("no-special");
  const auto ids = tok->encode(text, special);
  if (a.has("json")) {
    nlohmann::json tokens = nlohmann::json::array();
    for (int64_t id : ids) tokens.push_back(tok->id_to_token(id).value_or(""));
    std::cout << nlohmann::json({{"ids", ids}, {"tokens", tokens}})
                     .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)
              << "\n";
    return 0;
  }
  for (size_t i = 0; i < ids.size(); ++i) std::cout << (i ? "," : "") << ids[i];
  std::cout << "\n";
  return 0;
}

int cmd_detokenize(const std::vector<std::string>& argv) {
  const auto flags = with_help({{"ids", true, "comma-separated token ids"},
                                {"skip-special", false, "leave special tokens out of the text"},
                                {"token", true, "bearer token for ws:// sources"},
                                kConnectTimeoutFlag});
  if (wants_help(argv)) {
    std::cout << "usage: surf detokenize SOURCE --ids 1,2,3 [--skip-special]\n\n"
                 "Decodes token ids to text with the model's tokenizer.\n\noptions:\n"
              << flags_help(flags);
    return 0;
  }
  Args a = parse(argv, flags);
  if (a.positional.size() != 1) throw std::invalid_argument("expected one SOURCE (see --help)");
  if (!a.has("ids")) throw std::invalid_argument("missing required option --ids");
  const auto ids = parse_ids("ids", a.all("ids"));
  const auto tok = load_tokenizer(a.positional[0], source_options(a));
  for (int64_t id : ids) {
    if (id < 0 || id >= tok->vocab_size() || !tok->id_to_token(id)) {
      fail(ErrorCode::invalid_argument, "token id " + std::to_string(id) + " is out of range (vocabulary of " +
                                            std::to_string(tok->vocab_size()) + ")");
    }
  }
  std::cout << tok->decode(ids, a.has("skip-special")) << "\n";
  return 0;
}

}  // namespace surf::cli
