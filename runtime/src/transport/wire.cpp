#include "transport/wire.h"

#include <climits>
#include <cstdint>

#include "surf/storage/msgpack_util.h"

namespace surf::wire {

namespace {

using Packer = msgpack::packer<mp::BufferWriter>;

template <class... Fs>
struct Overloaded : Fs... {
  using Fs::operator()...;
};
template <class... Fs>
Overloaded(Fs...) -> Overloaded<Fs...>;

void pack_key(Packer& pk, std::string_view key) { pk.pack(key); }

// {id, op, ...}: the start of every request.
void begin_request(Packer& pk, uint32_t fields, uint64_t id, std::string_view op) {
  pk.pack_map(fields);
  pack_key(pk, "id");
  pk.pack(id);
  pack_key(pk, "op");
  pk.pack(op);
}

// {id, ok: true, ...}: the start of every successful answer.
void begin_answer(Packer& pk, uint32_t fields, uint64_t id) {
  pk.pack_map(fields + 2);
  pack_key(pk, "id");
  pk.pack(id);
  pack_key(pk, "ok");
  pk.pack(true);
}

// Walks one msgpack value without building it, so a request's shape is refused before msgpack-c
// allocates for it: at most `max_depth` nested containers, `max_values` values in all (keys
// count), no ext, nothing missing, nothing after it. Empty if fine, else what is wrong.
std::string check_shape(const std::byte* data, size_t size, size_t max_depth, size_t max_values) {
  const auto* p = reinterpret_cast<const unsigned char*>(data);
  size_t off = 0, values = 0;
  std::vector<uint64_t> open{1};  // values still to read in each open container; the root holds one
  auto be = [&](size_t bytes, uint64_t& v) {
    if (size - off < bytes) return false;
    v = 0;
    for (size_t i = 0; i < bytes; ++i) v = (v << 8) | p[off + i];
    off += bytes;
    return true;
  };
  while (!open.empty()) {
    if (open.back() == 0) {
      open.pop_back();
      continue;
    }
    --open.back();
    if (++values > max_values) return "it holds more than " + std::to_string(max_values) + " values";
    if (off >= size) return "it is cut short";
    const unsigned char b = p[off++];
    uint64_t skip = 0, children = 0;
    bool container = false;
    if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) {
      // fixint, nil, false, true
    } else if ((b & 0xf0) == 0x80 || (b & 0xf0) == 0x90) {
      children = (b & 0x0f) * ((b & 0xf0) == 0x80 ? 2u : 1u);
      container = true;
    } else if ((b & 0xe0) == 0xa0) {
      skip = b & 0x1f;
    } else {
      switch (b) {
        case 0xc4:
        case 0xd9:
          if (!be(1, skip)) return "it is cut short";
          break;
        case 0xc5:
        case 0xda:
          if (!be(2, skip)) return "it is cut short";
          break;
        case 0xc6:
        case 0xdb:
          if (!be(4, skip)) return "it is cut short";
          break;
        case 0xca:
        case 0xce:
        case 0xd2:
          skip = 4;
          break;
        case 0xcb:
        case 0xcf:
        case 0xd3:
          skip = 8;
          break;
        case 0xcc:
        case 0xd0:
          skip = 1;
          break;
        case 0xcd:
        case 0xd1:
          skip = 2;
          break;
        case 0xdc:
        case 0xde:
          if (!be(2, children)) return "it is cut short";
          container = true;
          break;
        case 0xdd:
        case 0xdf:
          if (!be(4, children)) return "it is cut short";
          container = true;
          break;
        default:
          return "it holds an ext value or the invalid byte 0xc1";
      }
      if (b == 0xde || b == 0xdf) children *= 2;
    }
    if (skip > size - off) return "it is cut short";
    off += skip;
    if (container) {
      if (open.size() > max_depth) return "it nests deeper than " + std::to_string(max_depth) + " levels";
      if (children > max_values) return "it holds more than " + std::to_string(max_values) + " values";
      open.push_back(children);
    }
  }
  if (off != size) return "bytes follow the map";
  return {};
}

// A request's string field: absent is empty, anything but a msgpack str is refused.
bool string_field(const msgpack::object& map, std::string_view key, std::string& out, std::string& error) {
  const msgpack::object* f = mp::field(map, key);
  if (f == nullptr) return true;
  if (f->type != msgpack::type::STR) {
    error = "field '" + std::string(key) + "' must be a string (msgpack str)";
    return false;
  }
  out.assign(f->via.str.ptr, f->via.str.size);
  return true;
}

// The length of the code point starting at s[i] if it is well-formed UTF-8, else 0.
size_t utf8_length(std::string_view s, size_t i) {
  const auto c = static_cast<unsigned char>(s[i]);
  size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 0;
  if (n == 0 || i + n > s.size()) return 0;
  uint32_t cp = n == 1 ? c : c & (0x7f >> n);
  for (size_t k = 1; k < n; ++k) {
    const auto d = static_cast<unsigned char>(s[i + k]);
    if ((d & 0xc0) != 0x80) return 0;
    cp = (cp << 6) | (d & 0x3f);
  }
  const uint32_t min[] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < min[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
  return n;
}

std::string string_or_empty(const msgpack::object& map, std::string_view key) {
  const msgpack::object* f = mp::field(map, key);
  return f ? f->as<std::string>() : std::string();
}

uint64_t uint_or_zero(const msgpack::object& map, std::string_view key) {
  const msgpack::object* f = mp::field(map, key);
  return f ? f->as<uint64_t>() : 0;
}

[[noreturn]] void malformed(const std::string& what) {
  fail(ErrorCode::network, "malformed answer from the weight server: " + what);
}

// An answer nests at most 3 deep (list_models: map, array, map); 4 leaves room. 2^16 values is
// thousands of models.
constexpr size_t kMaxAnswerDepth = 4;
constexpr size_t kMaxAnswerValues = size_t{1} << 16;

// The head of an answer (everything before `data`) is small: names, a checksum, < 64 pad bytes.
constexpr size_t kMaxAnswerHead = 64 * 1024;

}  // namespace

std::string quote(std::string_view text, size_t max_bytes) {
  static const char hex[] = "0123456789abcdef";
  std::string out = "'";
  for (size_t i = 0; i < text.size() && i < max_bytes; ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c == '\'' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 0xf];
    }
  }
  out += "'";
  if (text.size() > max_bytes)
    out += " (" + std::to_string(text.size()) + " bytes, first " + std::to_string(max_bytes) + " shown)";
  return out;
}

std::string valid_utf8(std::string_view text, size_t max_bytes) {
  static const char hex[] = "0123456789abcdef";
  std::string out;
  size_t i = 0;
  while (i < text.size() && out.size() < max_bytes) {
    if (const size_t n = utf8_length(text, i)) {
      out.append(text.substr(i, n));
      i += n;
    } else {
      const auto c = static_cast<unsigned char>(text[i++]);
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 0xf];
    }
  }
  if (i < text.size()) out += "... (" + std::to_string(text.size()) + " bytes)";
  return out;
}

const char* code_for(ErrorCode code) {
  switch (code) {
    case ErrorCode::not_found:
      return "not_found";
    case ErrorCode::invalid_argument:
      return "bad_request";
    case ErrorCode::unauthorized:
      return "unauthorized";
    case ErrorCode::too_large:
      return "too_large";
    case ErrorCode::unsupported:
      return "unsupported_version";
    default:
      return "internal";
  }
}

ErrorCode error_from_code(std::string_view c) {
  if (c == "not_found") return ErrorCode::not_found;
  if (c == "bad_request") return ErrorCode::invalid_argument;
  if (c == "unauthorized") return ErrorCode::unauthorized;
  if (c == "too_large") return ErrorCode::too_large;
  if (c == "unsupported_version") return ErrorCode::unsupported;
  return ErrorCode::internal;
}

const char* op_name(const RequestBody& body) {
  return std::visit(Overloaded{[](const Hello&) { return "hello"; }, [](const ListModels&) { return "list_models"; },
                               [](const GetManifest&) { return "get_manifest"; },
                               [](const GetChunk&) { return "get_chunk"; }, [](const GetFile&) { return "get_file"; }},
                    body);
}

void encode_request(ByteBuffer& out, const Request& r) {
  out.clear();
  mp::BufferWriter w{out};
  Packer pk(w);
  const char* op = op_name(r.body);
  std::visit(Overloaded{[&](const Hello& h) {
                          begin_request(pk, h.token.empty() ? 3 : 4, r.id, op);
                          pack_key(pk, "version");
                          pk.pack(h.version);
                          if (!h.token.empty()) {
                            pack_key(pk, "token");
                            pk.pack(h.token);
                          }
                        },
                        [&](const ListModels&) { begin_request(pk, 2, r.id, op); },
                        [&](const GetManifest& g) {
                          begin_request(pk, 3, r.id, op);
                          pack_key(pk, "model");
                          pk.pack(g.model);
                        },
                        [&](const GetChunk& g) {
                          begin_request(pk, 4, r.id, op);
                          pack_key(pk, "model");
                          pk.pack(g.model);
                          pack_key(pk, "component");
                          pk.pack(g.component);
                        },
                        [&](const GetFile& g) {
                          begin_request(pk, 4, r.id, op);
                          pack_key(pk, "model");
                          pk.pack(g.model);
                          pack_key(pk, "name");
                          pk.pack(g.name);
                        }},
             r.body);
}

std::variant<Request, BadRequest> decode_request(const std::byte* data, size_t size) {
  if (const std::string wrong = check_shape(data, size, kMaxRequestDepth, kMaxRequestValues); !wrong.empty()) {
    return BadRequest{0, "not a msgpack request: " + wrong};
  }
  msgpack::object_handle oh;
  try {
    oh = msgpack::unpack(reinterpret_cast<const char*>(data), size, nullptr, nullptr, mp::limits(size));
  } catch (const std::exception&) {
    return BadRequest{0, "not a msgpack message"};
  }
  const msgpack::object& req = oh.get();
  if (req.type != msgpack::type::MAP) return BadRequest{0, "a request must be a msgpack map"};
  Request r;
  if (const msgpack::object* id = mp::field(req, "id")) {
    if (id->type != msgpack::type::POSITIVE_INTEGER) return BadRequest{0, "field 'id' must be an unsigned integer"};
    r.id = id->via.u64;
  }
  std::string op, model, component, name, token, error;
  if (!string_field(req, "op", op, error) || !string_field(req, "model", model, error) ||
      !string_field(req, "component", component, error) || !string_field(req, "name", name, error) ||
      !string_field(req, "token", token, error)) {
    return BadRequest{r.id, error};
  }
  if (op == "hello") {
    const msgpack::object* v = mp::field(req, "version");
    if (v == nullptr) return BadRequest{r.id, "hello needs 'version' (an integer: the client's protocol version)"};
    int version = 0;
    if (v->type == msgpack::type::POSITIVE_INTEGER) {
      version = static_cast<int>(std::min<uint64_t>(v->via.u64, INT32_MAX));
    } else if (v->type == msgpack::type::NEGATIVE_INTEGER) {
      version = static_cast<int>(std::max<int64_t>(v->via.i64, INT32_MIN));
    } else {
      return BadRequest{r.id, "field 'version' must be an integer"};
    }
    r.body = Hello{version, std::move(token)};
  } else if (op == "list_models") {
    r.body = ListModels{};
  } else if (op == "get_manifest") {
    r.body = GetManifest{std::move(model)};
  } else if (op == "get_chunk") {
    r.body = GetChunk{std::move(model), std::move(component)};
  } else if (op == "get_file") {
    r.body = GetFile{std::move(model), std::move(name)};
  } else if (op.empty()) {
    return BadRequest{r.id, "a request needs 'op' (a string)"};
  } else {
    return BadRequest{r.id, "unknown op " + quote(op)};
  }
  return r;
}

void encode_answer(ByteBuffer& out, uint64_t id, const ErrorAnswer& a) {
  out.clear();
  mp::BufferWriter w{out};
  Packer pk(w);
  pk.pack_map(3);
  pack_key(pk, "id");
  pk.pack(id);
  pack_key(pk, "ok");
  pk.pack(false);
  pack_key(pk, "error");
  pk.pack_map(2);
  pack_key(pk, "code");
  pk.pack(std::string_view(code_for(a.code)));
  pack_key(pk, "message");
  pk.pack(valid_utf8(a.message, kMaxErrorMessage));
}

void encode_answer(ByteBuffer& out, uint64_t id, const HelloAnswer& a) {
  out.clear();
  mp::BufferWriter w{out};
  Packer pk(w);
  begin_answer(pk, 3, id);
  pack_key(pk, "version");
  pk.pack(a.version);
  pack_key(pk, "server");
  pk.pack(a.server);
  pack_key(pk, "max_request_bytes");
  pk.pack(a.max_request_bytes);
}

void encode_answer(ByteBuffer& out, uint64_t id, const ListModelsAnswer& a) {
  out.clear();
  mp::BufferWriter w{out};
  Packer pk(w);
  begin_answer(pk, 1, id);
  pack_key(pk, "models");
  pk.pack_array(static_cast<uint32_t>(a.models.size()));
  for (const auto& m : a.models) {
    pk.pack_map(4);
    pack_key(pk, "name");
    pk.pack(m.name);
    pack_key(pk, "model_type");
    pk.pack(m.model_type);
    pack_key(pk, "components");
    pk.pack(m.components);
    pack_key(pk, "bytes");
    pk.pack(m.bytes);
  }
}

void encode_answer(ByteBuffer& out, uint64_t id, const ManifestAnswer& a) {
  out.clear();
  mp::BufferWriter w{out};
  Packer pk(w);
  begin_answer(pk, 2, id);
  pack_key(pk, "model");
  pk.pack(a.model);
  pack_key(pk, "manifest");
  pk.pack(a.manifest);
}

void encode_answer(ByteBuffer& out, uint64_t id, const FileAnswer& a) {
  if (a.size > 0xffffffffu) fail(ErrorCode::too_large, "file '" + a.name + "' is over 4 GiB");
  out.clear();
  mp::BufferWriter w{out};
  Packer pk(w);
  begin_answer(pk, 4, id);
  pack_key(pk, "model");
  pk.pack(a.model);
  pack_key(pk, "name");
  pk.pack(a.name);
  pack_key(pk, "checksum");
  pk.pack(a.checksum);
  pack_key(pk, "data");
  pk.pack_bin(static_cast<uint32_t>(a.size));
  pk.pack_bin_body(reinterpret_cast<const char*>(a.data), static_cast<uint32_t>(a.size));
}

void encode_chunk_answer_head(ByteBuffer& out, uint64_t id, const ChunkAnswer& a) {
  if (a.size > 0xffffffffu) fail(ErrorCode::too_large, "chunk '" + a.component + "' is over 4 GiB");
  out.clear();
  mp::BufferWriter w{out};
  Packer pk(w);
  begin_answer(pk, 5, id);
  pack_key(pk, "model");
  pk.pack(a.model);
  pack_key(pk, "component");
  pk.pack(a.component);
  pack_key(pk, "checksum");
  pk.pack(a.checksum);
  mp::pack_alignment_pad(pk, out, 5 + 5);  // then "data" (fixstr 5) and the bin32 header (5)
  pack_key(pk, "data");
  mp::append_bin32_header(out, static_cast<uint32_t>(a.size));
}

Answer decode_answer(const std::byte* data, size_t size) {
  // A hostile server must not make the client build millions of objects either; bins (chunks,
  // files) are skipped by the walk, so this costs nothing on large answers.
  if (const std::string wrong = check_shape(data, size, kMaxAnswerDepth, kMaxAnswerValues); !wrong.empty()) {
    malformed(wrong);
  }
  msgpack::object_handle oh;
  try {
    oh = msgpack::unpack(reinterpret_cast<const char*>(data), size, mp::reference_bins, nullptr, mp::limits(size));
  } catch (const std::exception& e) {
    malformed(e.what());
  }
  const msgpack::object& root = oh.get();
  if (root.type != msgpack::type::MAP) malformed("not a map");
  Answer a;
  try {
    a.id = uint_or_zero(root, "id");
    const msgpack::object* ok = mp::field(root, "ok");
    if (!ok || ok->type != msgpack::type::BOOLEAN || !ok->via.boolean) {
      ErrorAnswer e{ErrorCode::internal, "malformed answer"};
      if (const msgpack::object* err = mp::field(root, "error")) {
        if (auto* c = mp::field(*err, "code")) e.code = error_from_code(c->as<std::string>());
        if (auto* m = mp::field(*err, "message")) e.message = m->as<std::string>();
      }
      a.body = std::move(e);
    } else if (const msgpack::object* d = mp::field(root, "data")) {
      const bool file = mp::field(root, "name") != nullptr && mp::field(root, "component") == nullptr;
      if (d->type != msgpack::type::BIN)
        malformed(file ? "file data is not a bin field" : "chunk data is not a bin field");
      if (file) {
        FileAnswer f;
        f.model = string_or_empty(root, "model");
        f.name = string_or_empty(root, "name");
        f.checksum = string_or_empty(root, "checksum");
        f.data = reinterpret_cast<const std::byte*>(d->via.bin.ptr);
        f.size = d->via.bin.size;
        a.body = std::move(f);
        return a;
      }
      ChunkAnswer c;
      c.model = string_or_empty(root, "model");
      c.component = string_or_empty(root, "component");
      c.checksum = string_or_empty(root, "checksum");
      c.data = reinterpret_cast<const std::byte*>(d->via.bin.ptr);
      c.size = d->via.bin.size;
      a.body = std::move(c);
    } else if (const msgpack::object* m = mp::field(root, "manifest")) {
      if (m->type != msgpack::type::STR) malformed("manifest is not a string");
      a.body = ManifestAnswer{string_or_empty(root, "model"), m->as<std::string>()};
    } else if (const msgpack::object* models = mp::field(root, "models")) {
      if (models->type != msgpack::type::ARRAY) malformed("models is not an array");
      ListModelsAnswer l;
      for (uint32_t i = 0; i < models->via.array.size; ++i) {
        const msgpack::object& e = models->via.array.ptr[i];
        l.models.push_back({string_or_empty(e, "name"), string_or_empty(e, "model_type"), uint_or_zero(e, "components"),
                            uint_or_zero(e, "bytes")});
      }
      a.body = std::move(l);
    } else if (const msgpack::object* v = mp::field(root, "version")) {
      a.body = HelloAnswer{v->as<int>(), string_or_empty(root, "server"), uint_or_zero(root, "max_request_bytes")};
    } else {
      malformed("no field of a known answer");
    }
  } catch (const msgpack::type_error&) {
    malformed("a field has the wrong type");
  }
  return a;
}

DataProbe probe_chunk_data(const std::byte* received, size_t size) {
  const auto* p = reinterpret_cast<const unsigned char*>(received);
  auto be = [&](size_t at, int bytes) {
    uint64_t v = 0;
    for (int i = 0; i < bytes; ++i) v = (v << 8) | p[at + static_cast<size_t>(i)];
    return v;
  };
  DataProbe need_more{DataProbe::need_more}, not_a_chunk{DataProbe::not_a_chunk};
  if (size == 0) return need_more;
  // The map's header: fixmap, map16 or map32.
  uint64_t entries = 0;
  size_t off = 0;
  if ((p[0] & 0xf0) == 0x80) {
    entries = p[0] & 0x0f;
    off = 1;
  } else if (p[0] == 0xde || p[0] == 0xdf) {
    const int n = p[0] == 0xde ? 2 : 4;
    if (size < 1 + static_cast<size_t>(n)) return need_more;
    entries = be(1, n);
    off = 1 + static_cast<size_t>(n);
  } else {
    return not_a_chunk;
  }
  const char* bytes = reinterpret_cast<const char*>(received);
  // Bounded by what a head may hold, not by what has arrived: a value cut short must read as
  // "need more", not as too big.
  const msgpack::unpack_limit head_limits = mp::limits(kMaxAnswerHead);
  for (uint64_t i = 0; i < entries && off < kMaxAnswerHead; ++i) {
    try {
      const msgpack::object_handle key = msgpack::unpack(bytes, size, off, mp::reference_bins, nullptr, head_limits);
      const msgpack::object& k = key.get();
      if (k.type == msgpack::type::STR && std::string_view(k.via.str.ptr, k.via.str.size) == "data") {
        // The value's bin header (bin8, bin16, bin32) says where the chunk starts and how long it is.
        if (off >= size) return need_more;
        const int n = p[off] == 0xc4 ? 1 : p[off] == 0xc5 ? 2 : p[off] == 0xc6 ? 4 : 0;
        if (n == 0) return not_a_chunk;
        if (size < off + 1 + static_cast<size_t>(n)) return need_more;
        return {DataProbe::found, off + 1 + static_cast<size_t>(n), static_cast<size_t>(be(off + 1, n))};
      }
      msgpack::unpack(bytes, size, off, mp::reference_bins, nullptr, head_limits);  // skip the value
    } catch (const msgpack::insufficient_bytes&) {
      return need_more;
    } catch (const std::exception&) {
      return not_a_chunk;
    }
  }
  return not_a_chunk;
}

}  // namespace surf::wire
