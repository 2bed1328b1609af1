// Models of tokenizer.json: BPE (merges by rank, byte fallback, unk fusing, continuing-subword
// prefix / end-of-word suffix, ignore_merges), WordPiece (greedy longest match), Unigram (Viterbi
// over the pieces' log probabilities, unknowns fused) and WordLevel.
#include <mutex>
#include <nlohmann/json.hpp>
#include <queue>
#include <unordered_map>

#include "surf/error.h"
#include "text/pipeline.h"
#include "text/unicode.h"

namespace surf::text {

int parse_byte_token(std::string_view t) {
  if (t.size() != 6 || t.substr(0, 3) != "<0x" || t[5] != '>') return -1;
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  const int h = hex(t[3]), l = hex(t[4]);
  return h < 0 || l < 0 ? -1 : h * 16 + l;
}

namespace {

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using VocabMap = std::unordered_map<std::string, int64_t, StringHash, std::equal_to<>>;

// The vocabulary shared by the models: token -> id and id -> token.
class Vocab {
 public:
  void add(const std::string& token, int64_t id, const std::string& path) {
    if (id < 0 || id > (1LL << 31)) json_fail(path, "id " + std::to_string(id) + " out of range", false);
    map_[token] = id;
    if (static_cast<size_t>(id) >= tokens_.size()) tokens_.resize(static_cast<size_t>(id) + 1);
    tokens_[static_cast<size_t>(id)] = token;
    present_.resize(tokens_.size(), false);
    present_[static_cast<size_t>(id)] = true;
  }
  // Every "token": id of a JSON object (BPE, WordPiece and WordLevel vocabularies).
  void add_all(const Json& v, const std::string& path) {
    for (auto it = v.begin(); it != v.end(); ++it) add(it.key(), json_int(it.value(), path), path);
  }
  std::optional<int64_t> find(std::string_view t) const {
    auto it = map_.find(t);
    return it == map_.end() ? std::nullopt : std::optional<int64_t>(it->second);
  }
  const std::string* token(int64_t id) const {
    if (id < 0 || static_cast<size_t>(id) >= tokens_.size() || !present_[static_cast<size_t>(id)]) return nullptr;
    return &tokens_[static_cast<size_t>(id)];
  }
  int64_t size() const { return static_cast<int64_t>(tokens_.size()); }

 private:
  VocabMap map_;
  std::vector<std::string> tokens_;
  std::vector<bool> present_;
};

std::optional<std::string> opt_string(const Json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return std::nullopt;
  return it->get<std::string>();
}

// Merge pairs (id a, id b) -> (rank, new id) in an open-addressing table: the merge loop looks
// pairs up several times per merge, and node-based maps made that the bulk of encode time.
class PairTable {
 public:
  void reserve(size_t n) {
    size_t cap = 16;
    while (cap < n * 2) cap <<= 1;
    keys_.assign(cap, kEmpty);
    values_.assign(cap, 0);
    mask_ = cap - 1;
  }
  void insert(uint64_t key, int32_t rank, int32_t id) {
    size_t i = slot(key);
    while (keys_[i] != kEmpty && keys_[i] != key) i = (i + 1) & mask_;
    keys_[i] = key;  // a pair listed twice keeps its last rank, as HF's map does
    values_[i] = (static_cast<uint64_t>(static_cast<uint32_t>(rank)) << 32) | static_cast<uint32_t>(id);
  }
  // false when the pair has no merge; else rank and new id.
  bool find(uint64_t key, int32_t& rank, int32_t& id) const {
    if (keys_.empty()) return false;
    for (size_t i = slot(key);; i = (i + 1) & mask_) {
      if (keys_[i] == key) {
        rank = static_cast<int32_t>(values_[i] >> 32);
        id = static_cast<int32_t>(values_[i] & 0xFFFFFFFFu);
        return true;
      }
      if (keys_[i] == kEmpty) return false;
    }
  }

 private:
  static constexpr uint64_t kEmpty = ~0ull;
  size_t slot(uint64_t k) const {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    k ^= k >> 33;
    return static_cast<size_t>(k) & mask_;
  }
  std::vector<uint64_t> keys_, values_;
  size_t mask_ = 0;
};

class BpeModel final : public Model {
 public:
  BpeModel(const Json& j, const std::string& path) {
    const Json& v = j.at("vocab");
    if (!v.is_object()) json_fail(path + ".vocab", "expected an object", false);
    vocab_.add_all(v, path + ".vocab");
    prefix_ = opt_string(j, "continuing_subword_prefix").value_or("");
    suffix_ = opt_string(j, "end_of_word_suffix").value_or("");
    fuse_unk_ = j.value("fuse_unk", false);
    byte_fallback_ = j.value("byte_fallback", false);
    ignore_merges_ = j.value("ignore_merges", false);
    if (auto unk = opt_string(j, "unk_token")) unk_ = vocab_.find(*unk);
    for (int b = 0; b < 256; ++b) {
      char name[8];
      std::snprintf(name, sizeof(name), "<0x%02X>", b);
      byte_ids_[b] = vocab_.find(name).value_or(-1);
    }
    for (int c = 0; c < 128; ++c) ascii_ids_[c] = vocab_.find(std::string(1, static_cast<char>(c))).value_or(-1);
    const Json& merges = j.at("merges");
    merges_.reserve(merges.size());  // (PairTable)
    for (size_t r = 0; r < merges.size(); ++r) {
      std::string a, b;
      if (merges[r].is_string()) {
        const std::string m = merges[r].get<std::string>();
        const size_t sp = m.find(' ');
        if (sp == std::string::npos || m.find(' ', sp + 1) != std::string::npos) {
          json_fail(path + ".merges[" + std::to_string(r) + "]", "expected 'a b'", false);
        }
        a = m.substr(0, sp);
        b = m.substr(sp + 1);
      } else {
        a = merges[r].at(0).get<std::string>();
        b = merges[r].at(1).get<std::string>();
      }
      const auto ia = vocab_.find(a), ib = vocab_.find(b);
      const std::string joined = a + (b.rfind(prefix_, 0) == 0 ? b.substr(prefix_.size()) : b);
      const auto in = vocab_.find(joined);
      if (!ia || !ib || !in)
        json_fail(path + ".merges[" + std::to_string(r) + "]", "token not in the vocabulary", false);
      merges_.insert(key(*ia, *ib), static_cast<int32_t>(r), static_cast<int32_t>(*in));
    }
  }

  void tokenize(std::string_view word, std::vector<int64_t>& out) const override {
    if (word.empty()) return;
    if (ignore_merges_) {
      if (auto id = vocab_.find(word)) {
        out.push_back(*id);
        return;
      }
    }
    const bool cacheable = word.size() <= 64;
    if (cacheable) {
      std::lock_guard lock(cache_mutex_);
      auto it = cache_.find(word);
      if (it != cache_.end()) {
        out.insert(out.end(), it->second.begin(), it->second.end());
        return;
      }
    }
    const size_t before = out.size();
    merge_word(word, out);
    if (cacheable) {
      std::lock_guard lock(cache_mutex_);
      if (cache_.size() >= 100000) cache_.clear();
      cache_.emplace(std::string(word),
                     std::vector<int64_t>(out.begin() + static_cast<std::ptrdiff_t>(before), out.end()));
    }
  }

  std::optional<int64_t> token_to_id(std::string_view t) const override { return vocab_.find(t); }
  const std::string* id_to_token(int64_t id) const override { return vocab_.token(id); }
  int64_t size() const override { return vocab_.size(); }
  std::string kind() const override { return "bpe"; }

 private:
  static uint64_t key(int64_t a, int64_t b) { return (static_cast<uint64_t>(a) << 32) | static_cast<uint64_t>(b); }

  struct Symbol {
    int64_t id;
    int32_t prev, next;
    bool alive;
  };
  struct Merge {
    int32_t rank, pos;
    int64_t new_id;
    bool operator>(const Merge& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };

  void merge_word(std::string_view w, std::vector<int64_t>& out) const {
    std::vector<Symbol> syms;
    syms.reserve(w.size());
    int64_t pending_unk = -1;  // an unknown not yet pushed (fused with the next when fuse_unk)
    auto push = [&](int64_t id) {
      syms.push_back({id, static_cast<int32_t>(syms.size()) - 1, static_cast<int32_t>(syms.size()) + 1, true});
    };
    std::string buf;
    size_t i = 0;
    while (i < w.size()) {
      const size_t start = i;
      i += utf8_length(static_cast<unsigned char>(w[i]));
      if (i > w.size()) i = w.size();
      const std::string_view ch = w.substr(start, i - start);
      std::string_view s = ch;
      if ((!prefix_.empty() && start > 0) || (!suffix_.empty() && i == w.size())) {
        buf.clear();
        if (!prefix_.empty() && start > 0) buf += prefix_;
        buf += ch;
        if (!suffix_.empty() && i == w.size()) buf += suffix_;
        s = buf;
      }
      std::optional<int64_t> id;
      if (s.size() == 1 && ascii_ids_[static_cast<unsigned char>(s[0]) & 0x7F] >= 0 &&
          static_cast<unsigned char>(s[0]) < 0x80) {
        id = ascii_ids_[static_cast<unsigned char>(s[0])];
      } else {
        id = vocab_.find(s);
      }
      if (id) {
        if (pending_unk >= 0) {
          push(pending_unk);
          pending_unk = -1;
        }
        push(*id);
        continue;
      }
      if (byte_fallback_) {
        // As HF: the bytes of s (prefix and suffix included); a pending unknown stays pending.
        bool all = true;
        for (char c : s) all = all && byte_ids_[static_cast<unsigned char>(c)] >= 0;
        if (all) {
          for (char c : s) push(byte_ids_[static_cast<unsigned char>(c)]);
          continue;
        }
      }
      if (unk_) {
        if (pending_unk >= 0 && !fuse_unk_) push(pending_unk);
        pending_unk = *unk_;
      }
    }
    if (pending_unk >= 0) push(pending_unk);
    if (syms.empty()) return;
    syms.back().next = -1;

    std::priority_queue<Merge, std::vector<Merge>, std::greater<>> queue;
    auto consider = [&](int32_t pos) {
      const int32_t nx = syms[static_cast<size_t>(pos)].next;
      if (nx < 0) return;
      int32_t rank, id;
      if (merges_.find(key(syms[static_cast<size_t>(pos)].id, syms[static_cast<size_t>(nx)].id), rank, id))
        queue.push({rank, pos, id});
    };
    for (int32_t p = 0; p + 1 < static_cast<int32_t>(syms.size()); ++p) consider(p);
    while (!queue.empty()) {
      const Merge top = queue.top();
      queue.pop();
      Symbol& cur = syms[static_cast<size_t>(top.pos)];
      if (!cur.alive || cur.next < 0) continue;
      Symbol& right = syms[static_cast<size_t>(cur.next)];
      int32_t rank, id;
      if (!merges_.find(key(cur.id, right.id), rank, id) || id != top.new_id) continue;
      cur.id = top.new_id;
      right.alive = false;
      cur.next = right.next;
      if (cur.next >= 0) syms[static_cast<size_t>(cur.next)].prev = top.pos;
      if (cur.prev >= 0) consider(cur.prev);
      consider(top.pos);
    }
    for (const auto& s : syms) {
      if (s.alive) out.push_back(s.id);
    }
  }

  Vocab vocab_;
  PairTable merges_;
  std::string prefix_, suffix_;
  bool fuse_unk_ = false, byte_fallback_ = false, ignore_merges_ = false;
  std::optional<int64_t> unk_;
  int64_t byte_ids_[256];
  int64_t ascii_ids_[128];  // one-character ASCII tokens, looked up without hashing
  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int64_t>, StringHash, std::equal_to<>> cache_;
};

class WordPieceModel final : public Model {
 public:
  WordPieceModel(const Json& j, const std::string& path) {
    const Json& v = j.at("vocab");
    vocab_.add_all(v, path + ".vocab");
    prefix_ = opt_string(j, "continuing_subword_prefix").value_or("##");
    max_chars_ = j.value("max_input_chars_per_word", static_cast<size_t>(100));
    const std::string unk = opt_string(j, "unk_token").value_or("[UNK]");
    auto id = vocab_.find(unk);
    if (!id) json_fail(path + ".unk_token", "'" + unk + "' is not in the vocabulary", false);
    unk_ = *id;
  }

  void tokenize(std::string_view w, std::vector<int64_t>& out) const override {
    size_t chars = 0;
    for (size_t i = 0; i < w.size(); i += utf8_length(static_cast<unsigned char>(w[i]))) ++chars;
    if (chars > max_chars_) {
      out.push_back(unk_);
      return;
    }
    const size_t before = out.size();
    std::string buf;
    size_t start = 0;
    while (start < w.size()) {
      size_t end = w.size();
      std::optional<int64_t> found;
      while (start < end) {
        std::string_view sub = w.substr(start, end - start);
        if (start > 0) {
          buf = prefix_;
          buf += sub;
          sub = buf;
        }
        if ((found = vocab_.find(sub))) break;
        // Step back one character.
        size_t k = end - 1;
        while (k > start && (static_cast<unsigned char>(w[k]) & 0xC0) == 0x80) --k;
        end = k;
      }
      if (!found) {
        out.resize(before);
        out.push_back(unk_);
        return;
      }
      out.push_back(*found);
      start = end;
    }
  }

  std::optional<int64_t> token_to_id(std::string_view t) const override { return vocab_.find(t); }
  const std::string* id_to_token(int64_t id) const override { return vocab_.token(id); }
  int64_t size() const override { return vocab_.size(); }
  std::string kind() const override { return "wordpiece"; }

 private:
  Vocab vocab_;
  std::string prefix_;
  size_t max_chars_ = 100;
  int64_t unk_ = 0;
};

class WordLevelModel final : public Model {
 public:
  WordLevelModel(const Json& j, const std::string& path) {
    const Json& v = j.at("vocab");
    vocab_.add_all(v, path + ".vocab");
    if (auto unk = opt_string(j, "unk_token")) unk_ = vocab_.find(*unk);
  }
  void tokenize(std::string_view w, std::vector<int64_t>& out) const override {
    if (auto id = vocab_.find(w)) {
      out.push_back(*id);
    } else if (unk_) {
      out.push_back(*unk_);
    } else {
      fail(ErrorCode::invalid_argument,
           "word '" + std::string(w) + "' is not in the vocabulary and there is no unk token");
    }
  }
  std::optional<int64_t> token_to_id(std::string_view t) const override { return vocab_.find(t); }
  const std::string* id_to_token(int64_t id) const override { return vocab_.token(id); }
  int64_t size() const override { return vocab_.size(); }
  std::string kind() const override { return "wordlevel"; }

 private:
  Vocab vocab_;
  std::optional<int64_t> unk_;
};

class UnigramModel final : public Model {
 public:
  UnigramModel(const Json& j, const std::string& path) {
    const Json& v = j.at("vocab");
    if (!v.is_array()) json_fail(path + ".vocab", "expected a list of [piece, score]", false);
    scores_.reserve(v.size());
    for (size_t i = 0; i < v.size(); ++i) {
      const std::string piece = v[i].at(0).get<std::string>();
      if (!v[i].at(1).is_number()) json_fail(path + ".vocab", "a score is not a number", false);
      const double score = v[i].at(1).get<double>();
      vocab_.add(piece, static_cast<int64_t>(i), path + ".vocab");
      scores_.push_back(score);
      min_score_ = std::min(min_score_, score);
      max_len_ = std::max(max_len_, piece.size());
    }
    if (j.contains("unk_id") && !j["unk_id"].is_null()) {
      unk_ = json_int(j["unk_id"], path + ".unk_id");
      if (*unk_ < 0 || *unk_ >= static_cast<int64_t>(scores_.size()))
        json_fail(path + ".unk_id", "out of range", false);
    }
    byte_fallback_ = j.value("byte_fallback", false);
    for (int b = 0; b < 256; ++b) {
      char name[8];
      std::snprintf(name, sizeof(name), "<0x%02X>", b);
      byte_ids_[b] = vocab_.find(name).value_or(-1);
    }
  }

  void tokenize(std::string_view s, std::vector<int64_t>& out) const override {
    if (s.empty()) return;
    struct Node {
      int64_t id = -1;
      double score = 0;
      int64_t starts_at = -1;
    };
    const size_t n = s.size();
    std::vector<Node> best(n + 1);
    const double unk_score = min_score_ - 10.0;
    size_t start = 0;
    while (start < n) {
      const double base = best[start].score;
      const size_t mblen = std::min(utf8_length(static_cast<unsigned char>(s[start])), n - start);
      bool single = false;
      size_t end = start;
      while (end < n && end - start < max_len_) {
        end += utf8_length(static_cast<unsigned char>(s[end]));
        if (end > n) break;
        if (auto id = vocab_.find(s.substr(start, end - start))) {
          Node& t = best[end];
          const double cand = scores_[static_cast<size_t>(*id)] + base;
          if (t.starts_at < 0 || cand > t.score) t = {*id, cand, static_cast<int64_t>(start)};
          if (end - start == mblen) single = true;
        }
      }
      if (!single) {
        Node& t = best[start + mblen];
        const double cand = unk_score + base;
        if (t.starts_at < 0 || cand > t.score) t = {unk_.value_or(-1), cand, static_cast<int64_t>(start)};
      }
      start += mblen;
    }
    // Back from the end; consecutive unknowns fuse into one.
    std::vector<std::pair<size_t, size_t>> pieces;
    std::vector<bool> unknown;
    size_t end = n;
    while (end > 0) {
      const Node& node = best[end];
      const auto b = static_cast<size_t>(node.starts_at);
      const bool is_unk = unk_ && node.id == *unk_;
      if (is_unk && !pieces.empty() && unknown.back()) {
        pieces.back().first = b;
      } else {
        pieces.emplace_back(b, end);
        unknown.push_back(is_unk);
      }
      end = b;
    }
    for (size_t k = pieces.size(); k-- > 0;) {
      const std::string_view piece = s.substr(pieces[k].first, pieces[k].second - pieces[k].first);
      if (auto id = vocab_.find(piece)) {
        out.push_back(*id);
        continue;
      }
      if (byte_fallback_) {
        bool all = true;
        for (char c : piece) all = all && byte_ids_[static_cast<unsigned char>(c)] >= 0;
        if (all) {
          for (char c : piece) out.push_back(byte_ids_[static_cast<unsigned char>(c)]);
          continue;
        }
      }
      if (!unk_)
        fail(ErrorCode::invalid_argument, "text has characters outside the Unigram vocabulary and there is no unk_id");
      out.push_back(*unk_);
    }
  }

  std::optional<int64_t> token_to_id(std::string_view t) const override { return vocab_.find(t); }
  const std::string* id_to_token(int64_t id) const override { return vocab_.token(id); }
  int64_t size() const override { return vocab_.size(); }
  std::string kind() const override { return "unigram"; }

 private:
  Vocab vocab_;
  std::vector<double> scores_;
  double min_score_ = 0;
  size_t max_len_ = 1;
  std::optional<int64_t> unk_;
  bool byte_fallback_ = false;
  int64_t byte_ids_[256];
};

}  // namespace

std::unique_ptr<Model> make_model(const Json& j, const std::string& path) {
  if (!j.is_object()) json_fail(path, "expected an object", false);
  std::string type;
  if (j.contains("type")) {
    type = j["type"].get<std::string>();
  } else if (j.contains("merges")) {
    type = "BPE";  // older files leave the type out
  } else if (j.contains("vocab") && j["vocab"].is_array()) {
    type = "Unigram";
  } else if (j.contains("continuing_subword_prefix") || j.contains("max_input_chars_per_word")) {
    type = "WordPiece";
  } else {
    json_fail(path + ".type", "missing");
  }
  if (type == "BPE") return std::make_unique<BpeModel>(j, path);
  if (type == "WordPiece") return std::make_unique<WordPieceModel>(j, path);
  if (type == "Unigram") return std::make_unique<UnigramModel>(j, path);
  if (type == "WordLevel") return std::make_unique<WordLevelModel>(j, path);
  json_fail(path + ".type", "unsupported '" + type + "'");
}

}  // namespace surf::text
