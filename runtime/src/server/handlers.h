// One handler per operation of the protocol (docs/protocol.md). Requests arrive decoded
// (wire::decode_request); a handler answers through `respond`, at once or, for get_chunk, later
// from the loader pool. Every failure is an error answer, never a dropped connection.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "server/server_state.h"
#include "surf/storage/buffer.h"
#include "transport/wire.h"

namespace surf::server {

// An answer ready to send: the encoded map (for a chunk: its head) and, for a chunk, the stored
// chunk, sent after the head from the cache's buffer without a copy.
struct Outgoing {
  ByteBuffer head;
  std::shared_ptr<const ByteBuffer> body;
};
// Queues an answer on its connection; callable from any thread.
using Respond = std::function<void(Outgoing)>;

// Per connection: whether the token was presented (upgrade header or hello). Connection thread only.
struct ConnectionAuth {
  bool authed = false;
};

// An error answer, counted in the metrics by its wire code.
Outgoing error_answer(ServerState& state, uint64_t id, ErrorCode code, const std::string& message);

// Counts the request, checks authorisation and runs the handler of its op.
void handle_request(const std::shared_ptr<ServerState>& state, ConnectionAuth& auth, const wire::Request& request,
                    const Respond& respond);

void handle_hello(ServerState& state, ConnectionAuth& auth, uint64_t id, const wire::Hello& hello,
                  const Respond& respond);
void handle_list_models(ServerState& state, uint64_t id, const Respond& respond);
void handle_get_manifest(ServerState& state, uint64_t id, const wire::GetManifest& request, const Respond& respond);
void handle_get_chunk(const std::shared_ptr<ServerState>& state, uint64_t id, const wire::GetChunk& request,
                      const Respond& respond);
// file_handler.cpp: a file the model's manifest lists (tokenizer files, generation_config.json).
void handle_get_file(const std::shared_ptr<ServerState>& state, uint64_t id, const wire::GetFile& request,
                     const Respond& respond);
// The served model a request names, or nullptr once an error answer has been sent.
const ServedModel* find_model(ServerState& state, uint64_t id, const std::string& model, const Respond& respond);

}  // namespace surf::server
