// Soak: the real `surf serve` on 127.0.0.1 against 32 clients for N minutes through a
// fault-injecting TCP proxy (drops, stalls, truncation, resets), plus idle and slow clients.
// Reports requests served, errors by kind, wrong outputs (an ok answer whose chunk does not match
// the manifest's checksum: must be 0) and the server's RSS over time. Not part of CI: run it with
// scripts/soak.sh.
//
//   build/tests/bench/soak [--minutes 10] [--clients 32] [--idle 16] [--slow 4]
#include <utility>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/websocket.hpp>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include "../server_process.h"
#include "../test_util.h"
#include "surf/runtime.h"
#include "surf/storage/chunk.h"
#include "surf/storage/manifest.h"
#include "surf/storage/safetensors.h"
#include "transport/wire.h"

using namespace surf;
namespace net = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
using tcp = net::ip::tcp;
using Clock = std::chrono::steady_clock;

namespace {

std::atomic<bool> stopping{false};
std::atomic<uint64_t> served{0}, wrong{0}, bytes_ok{0};
std::mutex errors_mutex;
std::map<std::string, uint64_t> errors;  // by kind
std::map<std::string, uint64_t> faults;  // injected, by kind
std::atomic<int> pumps{0};               // proxied connections open
int pause_ms = 5;                        // between a client's requests

void count(std::map<std::string, uint64_t>& m, const std::string& kind) {
  std::lock_guard lock(errors_mutex);
  m[kind]++;
}

int listen_any(int& port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  ::inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd, 512) != 0) {
    throw std::runtime_error("proxy: cannot listen");
  }
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  port = ntohs(a.sin_port);
  return fd;
}

int connect_to(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  ::inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

void reset_close(int fd) {
  linger l{1, 0};  // RST instead of FIN
  ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
  ::close(fd);
}

// One proxied connection: forwards both ways; one in `fault_every` connections misbehaves once,
// at a random point: drop (close both), stall (forward nothing for 2-6 s), truncate (cut the
// server's bytes short and close), reset (RST both ways).
void pump(int client, int upstream, uint64_t seed, int fault_every) {
  std::mt19937_64 rng(seed);
  enum Fault { none, drop, stall, truncate, reset } fault = none;
  if (static_cast<int>(rng() % static_cast<uint64_t>(fault_every)) == 0) fault = static_cast<Fault>(1 + rng() % 4);
  const uint64_t at = rng() % (512 * 1024);  // bytes from the server before the fault
  uint64_t from_server = 0;
  bool fired = false;
  std::vector<char> buf(64 * 1024);
  pollfd p[2] = {{client, POLLIN, 0}, {upstream, POLLIN, 0}};
  while (!stopping) {
    if (::poll(p, 2, 200) < 0) break;
    bool closed = false;
    for (int i = 0; i < 2 && !closed; ++i) {
      if (!(p[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      const int from = p[i].fd, to = p[1 - i].fd;
      ssize_t n = ::read(from, buf.data(), buf.size());
      if (n <= 0) {
        closed = true;
        break;
      }
      if (from == upstream && fault != none && !fired && from_server + static_cast<uint64_t>(n) > at) {
        fired = true;
        const char* names[] = {"", "drop", "stall", "truncate", "reset"};
        count(faults, names[fault]);
        if (fault == drop) {
          closed = true;
          break;
        }
        if (fault == reset) {
          reset_close(client);
          reset_close(upstream);
          return;
        }
        if (fault == truncate) {
          const size_t keep = static_cast<size_t>(at - from_server);
          if (keep > 0 && ::write(to, buf.data(), keep) < 0) {
          }
          closed = true;
          break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(2000 + rng() % 4000));  // stall
      }
      if (from == upstream) from_server += static_cast<uint64_t>(n);
      for (ssize_t off = 0; off < n;) {
        const ssize_t w = ::write(to, buf.data() + off, static_cast<size_t>(n - off));
        if (w <= 0) {
          closed = true;
          break;
        }
        off += w;
      }
    }
    if (closed) break;
  }
  ::close(client);
  ::close(upstream);
}

void pump_and_count(int client, int upstream, uint64_t seed, int fault_every) {
  pump(client, upstream, seed, fault_every);
  pumps--;
}

class ChaosProxy {
 public:
  ChaosProxy(int target, int fault_every) : target_(target), fault_every_(fault_every) {
    listener_ = listen_any(port_);
    thread_ = std::thread([this] { run(); });
  }
  ~ChaosProxy() {
    ::shutdown(listener_, SHUT_RDWR);
    ::close(listener_);
    thread_.join();
    for (int i = 0; i < 100 && pumps.load() > 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  int port() const { return port_; }

 private:
  void run() {
    uint64_t n = 0;
    while (!stopping) {
      pollfd p{listener_, POLLIN, 0};
      if (::poll(&p, 1, 200) <= 0) continue;
      const int c = ::accept(listener_, nullptr, nullptr);
      if (c < 0) continue;
      const int u = connect_to(target_);
      if (u < 0) {
        ::close(c);
        continue;
      }
      pumps++;
      std::thread(pump_and_count, c, u, 0x5eed + n++, fault_every_).detach();
    }
  }
  int target_, fault_every_, listener_ = -1, port_ = 0;
  std::thread thread_;
};

uint64_t rss_kib(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoull(line.substr(6));
  }
  return 0;
}

struct Ws {
  net::io_context ioc;
  websocket::stream<tcp::socket> ws{ioc};
  explicit Ws(int port, int timeout_s) {
    ws.next_layer().connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), static_cast<uint16_t>(port)));
    timeval tv{timeout_s, 0};
    ::setsockopt(ws.next_layer().native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(ws.next_layer().native_handle(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    ws.handshake("127.0.0.1", "/llama");
    ws.binary(true);
  }
};

std::string kind_of(const std::exception& e) {
  if (const auto* s = dynamic_cast<const boost::system::system_error*>(&e)) {
    const auto c = s->code();
    if (c == net::error::eof || c == websocket::error::closed) return "closed by peer";
    if (c == net::error::connection_reset) return "connection reset";
    if (c == net::error::would_block || c == net::error::try_again || c == net::error::timed_out) return "timeout";
    if (c == net::error::broken_pipe) return "broken pipe";
    return "network: " + c.message();
  }
  return std::string("other: ") + e.what();
}

// A client: get_chunk for random components, each answer checked against the manifest, on
// connections of 1-100 requests.
void client(int port, const Manifest& m, uint64_t seed, bool slow) {
  std::mt19937_64 rng(seed);
  uint64_t id = 0;
  while (!stopping) {
    try {
      Ws c(port, 10);
      // Connections come and go (1-100 requests each), so the proxy's faults keep coming too.
      for (uint64_t left = 1 + rng() % 100; left > 0 && !stopping; --left) {
        const ManifestComponent& comp = m.components[rng() % m.components.size()];
        ByteBuffer req;
        wire::encode_request(req, {++id, wire::GetChunk{"llama", comp.id}});
        c.ws.write(net::buffer(req.data(), req.size()));
        beast::flat_buffer in;
        if (slow) {  // 4 KiB at a time, 20 ms apart: the server's writes back up
          do {
            c.ws.read_some(in, 4096);
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
          } while (!c.ws.is_message_done() && !stopping);
          if (stopping) break;
        } else {
          c.ws.read(in);
        }
        const wire::Answer a = wire::decode_answer(static_cast<const std::byte*>(in.data().data()), in.size());
        const auto* chunk = std::get_if<wire::ChunkAnswer>(&a.body);
        if (chunk == nullptr) {
          const auto* e = std::get_if<wire::ErrorAnswer>(&a.body);
          count(errors, std::string("error answer: ") + (e ? wire::code_for(e->code) : "unexpected"));
          continue;
        }
        if (a.id != id || chunk->component != comp.id || chunk->size != comp.bytes ||
            checksum_of(chunk->data, chunk->size) != comp.checksum) {
          wrong++;
          continue;
        }
        served++;
        bytes_ok += chunk->size;
        std::this_thread::sleep_for(std::chrono::milliseconds(pause_ms));
      }
    } catch (const std::exception& e) {
      if (stopping) break;
      count(errors, kind_of(e));
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
}

// Idle clients: connect straight to the server, say hello, then sit until the end.
void idle(int port) {
  try {
    Ws c(port, 5);
    ByteBuffer req;
    wire::encode_request(req, {1, wire::Hello{}});
    c.ws.write(net::buffer(req.data(), req.size()));
    beast::flat_buffer in;
    c.ws.read(in);
    while (!stopping) std::this_thread::sleep_for(std::chrono::milliseconds(200));
  } catch (const std::exception& e) {
    count(errors, "idle client: " + kind_of(e));
  }
}

}  // namespace

int main(int argc, char** argv) {
  double minutes = 10;
  int clients = 32, idle_clients = 16, slow_clients = 4, fault_every = 4;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--minutes")
      minutes = std::stod(argv[i + 1]);
    else if (a == "--clients")
      clients = std::stoi(argv[i + 1]);
    else if (a == "--idle")
      idle_clients = std::stoi(argv[i + 1]);
    else if (a == "--slow")
      slow_clients = std::stoi(argv[i + 1]);
    else if (a == "--fault-every")
      fault_every = std::stoi(argv[i + 1]);
    else if (a == "--pause-ms")
      pause_ms = std::stoi(argv[i + 1]);
    else {
      std::fprintf(
          stderr,
          "usage: soak [--minutes 10] [--clients 32] [--idle 16] [--slow 4] [--fault-every 4] [--pause-ms 5]\n");
      return 2;
    }
  }
  test::TempDir dir;
  ChunkOptions o;
  o.plugin_dirs = {test::plugin_dir()};
  const std::string store = dir.str("llama");
  chunk_checkpoint((test::fixtures_dir() / "llama-tiny-random").string(), store, o);
  const Manifest m = Manifest::from_json(read_text_file(std::filesystem::path(store) / "manifest.json"));
  test::ServerProcess server({"--store", store, "--cache-mb", "4"}, 0, dir.str("server.log"));
  ChaosProxy proxy(server.port(), fault_every);
  std::printf("soak: %.1f min, %d clients through a fault proxy (1 in %d connections faulted), %d slow, %d idle\n",
              minutes, clients, fault_every, slow_clients, idle_clients);
  std::printf("time_s served wrong errors server_rss_kib\n");
  std::vector<std::thread> threads;
  for (int i = 0; i < clients; ++i) threads.emplace_back(client, proxy.port(), std::cref(m), 1000 + i, false);
  for (int i = 0; i < slow_clients; ++i) threads.emplace_back(client, server.port(), std::cref(m), 2000 + i, true);
  for (int i = 0; i < idle_clients; ++i) threads.emplace_back(idle, server.port());
  const auto start = Clock::now();
  const Clock::time_point end =
      start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(minutes * 60));
  std::vector<uint64_t> rss;
  while (Clock::now() < end) {
    const auto step = std::chrono::milliseconds(static_cast<int64_t>(std::min(30.0, minutes * 60 / 4) * 1000));
    std::this_thread::sleep_until(std::min(Clock::now() + step, end));
    uint64_t total_errors = 0;
    {
      std::lock_guard lock(errors_mutex);
      for (const auto& [k, v] : errors) total_errors += v;
    }
    rss.push_back(rss_kib(server.pid()));
    std::printf("%6.0f %8llu %5llu %6llu %8llu\n", std::chrono::duration<double>(Clock::now() - start).count(),
                static_cast<unsigned long long>(served.load()), static_cast<unsigned long long>(wrong.load()),
                static_cast<unsigned long long>(total_errors), static_cast<unsigned long long>(rss.back()));
    std::fflush(stdout);
  }
  stopping = true;
  for (auto& t : threads) t.join();
  std::printf("\nrequests served (verified): %llu (%.1f MB)\nwrong outputs: %llu\n",
              static_cast<unsigned long long>(served.load()), static_cast<double>(bytes_ok.load()) / 1e6,
              static_cast<unsigned long long>(wrong.load()));
  std::printf("client errors by kind:\n");
  for (const auto& [k, v] : errors) std::printf("  %-40s %llu\n", k.c_str(), static_cast<unsigned long long>(v));
  std::printf("faults injected by the proxy:\n");
  for (const auto& [k, v] : faults) std::printf("  %-40s %llu\n", k.c_str(), static_cast<unsigned long long>(v));
  if (rss.size() >= 2) {
    const uint64_t half = rss[rss.size() / 2];
    std::printf("server RSS: first %llu KiB, middle %llu KiB, last %llu KiB, max %llu KiB\n",
                static_cast<unsigned long long>(rss.front()), static_cast<unsigned long long>(half),
                static_cast<unsigned long long>(rss.back()),
                static_cast<unsigned long long>(*std::max_element(rss.begin(), rss.end())));
  }
  const bool alive = server.running() && ::kill(server.pid(), 0) == 0;
  std::printf("server alive at the end: %s\n", alive ? "yes" : "NO");
  return wrong.load() == 0 && alive ? 0 : 1;
}
