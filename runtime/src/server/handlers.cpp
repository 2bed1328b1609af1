#include "server/handlers.h"

#include <boost/asio/post.hpp>

#include "surf/version.h"

namespace surf::server {

namespace {

template <class Answer>
Outgoing answer(uint64_t id, const Answer& a) {
  Outgoing o;
  wire::encode_answer(o.head, id, a);
  return o;
}

std::shared_ptr<ByteBuffer> read_chunk(StorageBackend& backend, const std::string& key) {
  auto buf = std::make_shared<ByteBuffer>();
  backend.get(key, *buf);
  return buf;
}

}  // namespace

const ServedModel* find_model(ServerState& state, uint64_t id, const std::string& model, const Respond& respond) {
  if (!is_valid_component_id(model)) {
    respond(error_answer(state, id, ErrorCode::invalid_argument, "invalid model name " + wire::quote(model)));
    return nullptr;
  }
  auto it = state.models.find(model);
  if (it == state.models.end()) {
    respond(error_answer(state, id, ErrorCode::not_found, "no model " + wire::quote(model)));
    return nullptr;
  }
  return &it->second;
}

Outgoing error_answer(ServerState& state, uint64_t id, ErrorCode code, const std::string& message) {
  state.metrics.error(wire::code_for(code));
  return answer(id, wire::ErrorAnswer{code, message});
}

void handle_request(const std::shared_ptr<ServerState>& state, ConnectionAuth& auth, const wire::Request& request,
                    const Respond& respond) {
  state->metrics.request(wire::op_name(request.body));
  if (const auto* hello = std::get_if<wire::Hello>(&request.body)) {
    return handle_hello(*state, auth, request.id, *hello, respond);
  }
  if (!state->options.token.empty() && !auth.authed) {
    return respond(error_answer(*state, request.id, ErrorCode::unauthorized,
                                "this server requires a token: send hello with it first"));
  }
  if (std::holds_alternative<wire::ListModels>(request.body)) return handle_list_models(*state, request.id, respond);
  if (const auto* m = std::get_if<wire::GetManifest>(&request.body)) {
    return handle_get_manifest(*state, request.id, *m, respond);
  }
  if (const auto* f = std::get_if<wire::GetFile>(&request.body)) return handle_get_file(state, request.id, *f, respond);
  return handle_get_chunk(state, request.id, std::get<wire::GetChunk>(request.body), respond);
}

void handle_hello(ServerState& state, ConnectionAuth& auth, uint64_t id, const wire::Hello& hello,
                  const Respond& respond) {
  if (hello.version != wire::kProtocolVersion) {
    return respond(error_answer(state, id, ErrorCode::unsupported,
                                "protocol version " + std::to_string(hello.version) +
                                    " is not supported (server speaks " + std::to_string(wire::kProtocolVersion) +
                                    ")"));
  }
  if (!state.options.token.empty()) {
    if (!token_matches(state.options.token, hello.token)) {
      return respond(error_answer(state, id, ErrorCode::unauthorized, "wrong or missing token"));
    }
    auth.authed = true;
  }
  respond(
      answer(id, wire::HelloAnswer{wire::kProtocolVersion, "surf/" SURF_SDK_VERSION, state.options.max_request_bytes}));
}

void handle_list_models(ServerState& state, uint64_t id, const Respond& respond) {
  wire::ListModelsAnswer list;
  for (const auto& [name, m] : state.models) {
    uint64_t bytes = 0;
    for (const auto& c : m.manifest.components) bytes += c.bytes;
    list.models.push_back({name, m.manifest.model_type, m.manifest.components.size(), bytes});
  }
  respond(answer(id, list));
}

void handle_get_manifest(ServerState& state, uint64_t id, const wire::GetManifest& request, const Respond& respond) {
  const ServedModel* m = find_model(state, id, request.model, respond);
  if (m == nullptr) return;
  respond(answer(id, wire::ManifestAnswer{request.model, m->manifest_text}));
}

void handle_get_chunk(const std::shared_ptr<ServerState>& state, uint64_t id, const wire::GetChunk& request,
                      const Respond& respond) {
  const ServedModel* m = find_model(*state, id, request.model, respond);
  if (m == nullptr) return;
  if (!is_valid_component_id(request.component)) {
    return respond(
        error_answer(*state, id, ErrorCode::invalid_argument,
                     "invalid component name " + wire::quote(request.component) + ": only [A-Za-z0-9_.-], no '..'"));
  }
  const ManifestComponent* c = m->manifest.find(request.component);
  if (c == nullptr) {
    return respond(
        error_answer(*state, id, ErrorCode::not_found,
                     "model " + wire::quote(request.model) + " has no component " + wire::quote(request.component)));
  }
  // Storage reads run on the loader pool, not on the connection's thread.
  boost::asio::post(
      state->loaders, [state, id, request, key = c->key, checksum = c->checksum, backend = m->backend, respond] {
        std::shared_ptr<const ByteBuffer> data;
        std::string error;
        ChunkCache::Source source = ChunkCache::Source::load;
        try {
          data = state->cache.get(
              request.model + "/" + key, [&] { return read_chunk(*backend, key); }, &source);
          (source == ChunkCache::Source::cache ? state->metrics.cache_hits : state->metrics.cache_misses)++;
          if (source == ChunkCache::Source::ahead) state->metrics.read_ahead_hits++;
        } catch (const std::exception& e) {
          error = e.what();
        }
        if (!data) {
          return respond(error_answer(*state, id, ErrorCode::internal,
                                      "cannot read component " + wire::quote(request.component) + ": " + error));
        }
        if (data->size() > 0xffffffffu)
          return respond(error_answer(*state, id, ErrorCode::too_large, "chunk over 4 GiB"));
        Outgoing o;
        wire::encode_chunk_answer_head(o.head, id, {request.model, request.component, checksum, nullptr, data->size()});
        o.body = std::move(data);
        respond(std::move(o));
      });
  // Then the next components in execution order, queued behind this read on the same threads.
  // A request that comes first reads its chunk itself, and the read-ahead is skipped.
  if (auto next = m->next.find(c->id); next != m->next.end()) {
    const uint64_t now = state->cache.now();
    for (const ManifestComponent* n : next->second) {
      boost::asio::post(state->loaders, [state, now, model = request.model, key = n->key, backend = m->backend] {
        if (state->cache.read_ahead(
                model + "/" + key, [&] { return read_chunk(*backend, key); }, now))
          state->metrics.read_ahead++;
      });
    }
  }
}

}  // namespace surf::server
