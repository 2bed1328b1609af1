#include "transport/wire.h"

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

// The head of an answer (everything before `data`) is small: names, a checksum, < 64 pad bytes.
constexpr size_t kMaxAnswerHead = 64 * 1024;

}  // namespace

const char* code_for(ErrorCode code) {
  switch (code) {
    case ErrorCode::not_found: return "not_found";
    case ErrorCode::invalid_argument: return "bad_request";
    case ErrorCode::unauthorized: return "unauthorized";
    case ErrorCode::too_large: return "too_large";
    case ErrorCode::unsupported: return "unsupported_version";
    default: return "internal";
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
  return std::visit(Overloaded{[](const Hello&) { return "hello"; },
                               [](const ListModels&) { return "list_models"; },
                               [](const GetManifest&) { return "get_manifest"; },
                               [](const GetChunk&) { return "get_chunk"; },
                               [](const GetFile&) { return "get_file"; }},
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
  msgpack::object_handle oh;
  try {
    oh = msgpack::unpack(reinterpret_cast<const char*>(data), size, nullptr, nullptr, mp::limits(size));
  } catch (const std::exception&) {
    return BadRequest{0, "not a msgpack message"};
  }
  const msgpack::object& req = oh.get();
  Request r;
  std::string op, model, component, name, token;
  int version = -1;
  try {
    if (req.type != msgpack::type::MAP) throw msgpack::type_error();
    r.id = uint_or_zero(req, "id");
    op = string_or_empty(req, "op");
    model = string_or_empty(req, "model");
    component = string_or_empty(req, "component");
    name = string_or_empty(req, "name");
    token = string_or_empty(req, "token");
    if (auto* f = mp::field(req, "version")) version = f->as<int>();
  } catch (const std::exception&) {
    return BadRequest{r.id, "request must be a map with id, op and string fields"};
  }
  if (op == "hello") {
    r.body = Hello{version, std::move(token)};
  } else if (op == "list_models") {
    r.body = ListModels{};
  } else if (op == "get_manifest") {
    r.body = GetManifest{std::move(model)};
  } else if (op == "get_chunk") {
    r.body = GetChunk{std::move(model), std::move(component)};
  } else if (op == "get_file") {
    r.body = GetFile{std::move(model), std::move(name)};
  } else {
    return BadRequest{r.id, "unknown op '" + op + "'"};
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
  pk.pack(a.message);
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
      if (d->type != msgpack::type::BIN) malformed(file ? "file data is not a bin field" : "chunk data is not a bin field");
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
