#include "targets.h"

#include <string_view>

#include "surf/config.h"
#include "surf/error.h"
#include "surf/storage/chunk.h"
#include "surf/storage/manifest.h"
#include "surf/storage/s3_xml.h"
#include "surf/storage/safetensors.h"
#include "surf/storage/torch_checkpoint.h"
#include "surf/tokenizer.h"
#include "transport/wire.h"

namespace surf::fuzz {

namespace {

template <class Fn>
std::optional<std::string> refusal(Fn&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return std::string(e.what());
  }
  return std::nullopt;
}

std::string_view text(const uint8_t* data, size_t size) { return {reinterpret_cast<const char*>(data), size}; }

std::optional<std::string> chunk(const uint8_t* data, size_t size) {
  return refusal([&] {
    ByteBuffer scratch;
    const DecodedChunk d = decode_chunk(reinterpret_cast<const std::byte*>(data), size, "", scratch);
    for (const auto& t : d.tensors) {  // touch every byte the decoder claims is there
      volatile std::byte sink{};
      for (size_t i = 0; i < t.length; i += 4096) sink = t.data[i];
      (void)sink;
    }
  });
}

std::optional<std::string> safetensors_header(const uint8_t* data, size_t size) {
  return refusal([&] { parse_safetensors_header(text(data, size), 1 << 20, "fuzz"); });
}

std::optional<std::string> manifest(const uint8_t* data, size_t size) {
  return refusal([&] {
    const Manifest m = Manifest::from_json(std::string(text(data, size)));
    (void)ModelConfig::parse(m.config_json).model_type();
  });
}

std::optional<std::string> config(const uint8_t* data, size_t size) {
  return refusal([&] {
    const ModelConfig c = ModelConfig::parse(text(data, size));
    (void)c.model_type();
    (void)c.get_int("num_hidden_layers", 0);
    (void)c.get_float("rope_theta", 0.0);
    (void)c.dump();
  });
}

// data.pkl of a pytorch_model.bin: the restricted unpickler.
std::optional<std::string> torch_pickle(const uint8_t* data, size_t size) {
  return refusal([&] { (void)parse_torch_state_dict(text(data, size), "fuzz"); });
}

// What the weight server does with a message from a client.
std::optional<std::string> wire_request(const uint8_t* data, size_t size) {
  const auto decoded = wire::decode_request(reinterpret_cast<const std::byte*>(data), size);
  if (const auto* bad = std::get_if<wire::BadRequest>(&decoded)) return bad->message;
  return std::nullopt;
}

// What the client does with a message from a server: locate a chunk's data while it arrives (at
// every length), then decode the whole answer.
std::optional<std::string> wire_answer(const uint8_t* data, size_t size) {
  const auto* bytes = reinterpret_cast<const std::byte*>(data);
  for (size_t n = 0; n <= size; n += 1 + n / 8) {
    const wire::DataProbe p = wire::probe_chunk_data(bytes, n);
    if (p.status == wire::DataProbe::found && p.offset > n)
      fail(ErrorCode::internal, "probe found data past the bytes seen");
  }
  return refusal([&] {
    const wire::Answer a = wire::decode_answer(bytes, size);
    if (const auto* c = std::get_if<wire::ChunkAnswer>(&a.body)) {
      volatile std::byte sink{};
      for (size_t i = 0; i < c->size; i += 4096) sink = c->data[i];
      (void)sink;
    }
  });
}

// What the S3 client reads from an answer: a ListObjectsV2 page, an error body, an upload id.
// Nothing here refuses; the checks are that every value is bounded by the answer and that an
// error's text is what an error message may quote.
std::optional<std::string> s3_xml(const uint8_t* data, size_t size) {
  const std::string_view xml = text(data, size);
  const s3xml::ListPage page = s3xml::parse_list_page(xml);
  size_t total = 0;
  for (const auto& k : page.keys) total += k.size();
  if (total > size || page.next_token.size() > size) fail(ErrorCode::internal, "values longer than the answer");
  const s3xml::ErrorBody e = s3xml::parse_error(xml);
  for (const std::string* t : {&e.code, &e.message}) {
    if (t->size() > s3xml::kMaxErrorText + 8) fail(ErrorCode::internal, "error text not cut");
    for (char c : *t) {
      if (c < 0x20 || c > 0x7e) fail(ErrorCode::internal, "error text not printable ASCII");
    }
  }
  (void)s3xml::value(xml, "UploadId");
  return std::nullopt;
}

// A tokenizer.json (the loader: vocabularies, merges, normalizers, pre-tokenizers with their
// regular expressions, post-processor, decoders) and, when it loads, a round of encoding and
// decoding with it.
std::optional<std::string> tokenizer_json(const uint8_t* data, size_t size) {
  return refusal([&] {
    const auto tok = Tokenizer::from_json(text(data, size));
    const int64_t vocab = tok->vocab_size();
    for (const char* sample : {"Hello world", " the  cat's 12 \xc3\xa9t\xc3\xa9\n", "[CLS] <s> </s> <unk>"}) {
      const std::vector<int64_t> ids = tok->encode(sample);
      for (int64_t id : ids) {
        if (id < 0 || id >= vocab) fail(ErrorCode::internal, "encode made an id outside the vocabulary");
      }
      (void)tok->decode(ids, false);
      (void)tok->decode(ids, true);
      (void)tok->tokenize(sample);
    }
  });
}

}  // namespace

const std::vector<Target>& targets() {
  static const std::vector<Target> all = {{"chunk", chunk},
                                          {"safetensors_header", safetensors_header},
                                          {"manifest", manifest},
                                          {"config", config},
                                          {"torch_pickle", torch_pickle},
                                          {"wire_request", wire_request},
                                          {"wire_answer", wire_answer},
                                          {"s3_xml", s3_xml},
                                          {"tokenizer_json", tokenizer_json}};
  return all;
}

const Target& target(const std::string& name) {
  for (const auto& t : targets()) {
    if (name == t.name) return t;
  }
  fail(ErrorCode::not_found, "no fuzz target '" + name + "'");
}

}  // namespace surf::fuzz
