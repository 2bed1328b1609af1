// The large-buffer TLS stream (runtime/src/transport/tls_stream.h) on its own, over real sockets on
// 127.0.0.1 with certificates made at run time: bulk data both ways in odd-sized pieces, a server
// handshake that starts from bytes already read, close_notify read as end of stream, a cut
// connection read as truncation, and a refused certificate on both ends.
#include <utility>  // Asio wants it first with GCC 12

#include <gtest/gtest.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <chrono>
#include <optional>
#include <random>
#include <vector>

#include "surf/storage/tls.h"
#include "tls_fixtures.h"
#include "transport/tls_stream.h"

namespace surf {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
using tcp = net::ip::tcp;
using boost::system::error_code;

std::vector<unsigned char> random_bytes(size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::vector<unsigned char> v(n);
  for (auto& b : v) b = static_cast<unsigned char>(rng());
  return v;
}

// A client and a server TlsStream joined over a real 127.0.0.1 connection, handshakes not run.
struct Pair {
  net::io_context ioc;
  tcp::acceptor acceptor{ioc, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0)};
  std::optional<tls::TlsStream> server, client;

  Pair(net::ssl::context& server_ctx, net::ssl::context& client_ctx) {
    client.emplace(ioc.get_executor(), client_ctx);
    tls::prepare_client(client->native_handle(), "127.0.0.1");
    client->next_layer().connect(acceptor.local_endpoint());
    server.emplace(beast::tcp_stream(acceptor.accept()), server_ctx);
  }
  void run() {
    ioc.run_for(std::chrono::seconds(60));
    ioc.restart();
  }
};

struct TlsStreamTest : ::testing::Test {
  static void SetUpTestSuite() {
    pki = new test::TestPki();
    pki->ca("ca");
    pki->ca("other");
    pki->leaf("local", "DNS:localhost,IP:127.0.0.1", 30);
  }
  static void TearDownTestSuite() {
    delete pki;
    pki = nullptr;
  }
  static test::TestPki* pki;
  std::shared_ptr<net::ssl::context> server_ctx = tls::server_context(pki->path("local.pem"), pki->path("local.key"));
  std::shared_ptr<net::ssl::context> client_ctx = tls::client_context(pki->path("ca.pem"));

  // Both handshakes; the server's starts from the first five bytes, read beforehand as the weight
  // server's TLS detection does.
  static void handshake(Pair& p) {
    std::optional<error_code> client_ec, server_ec;
    size_t used = 0;
    auto first = std::make_shared<std::array<unsigned char, 5>>();
    p.client->async_handshake(net::ssl::stream_base::client, [&](error_code ec) { client_ec = ec; });
    net::async_read(p.server->next_layer(), net::buffer(*first), [&, first](error_code ec, size_t) {
      ASSERT_FALSE(ec) << ec.message();
      p.server->async_handshake(net::ssl::stream_base::server, net::buffer(*first), [&](error_code hec, size_t n) {
        server_ec = hec;
        used = n;
      });
    });
    p.run();
    ASSERT_TRUE(client_ec && server_ec);
    ASSERT_FALSE(*client_ec) << tls::describe_error(*client_ec, p.client->native_handle());
    ASSERT_FALSE(*server_ec) << server_ec->message();
    EXPECT_EQ(used, 5u);
  }
};
test::TestPki* TlsStreamTest::pki = nullptr;

TEST_F(TlsStreamTest, BulkBothWaysInOddPiecesThenCloseNotifyIsEndOfStream) {
  Pair p(*server_ctx, *client_ctx);
  handshake(p);
  const auto down = random_bytes((6 << 20) + 123, 1);  // server -> client, many write operations
  const auto up = random_bytes(300 << 10, 2);          // client -> server at the same time
  std::vector<unsigned char> got_down, got_up(up.size());
  std::vector<unsigned char> piece(7777);
  std::optional<error_code> end;
  size_t reads = 0;

  std::function<void()> read_down = [&] {
    p.client->async_read_some(net::buffer(piece), [&](error_code ec, size_t n) {
      got_down.insert(got_down.end(), piece.begin(), piece.begin() + static_cast<long>(n));
      ++reads;
      if (ec) {
        end = ec;
        return;
      }
      read_down();
    });
  };
  read_down();
  net::async_write(*p.client, net::buffer(up), [&](error_code ec, size_t n) {
    EXPECT_FALSE(ec) << ec.message();
    EXPECT_EQ(n, up.size());
  });
  net::async_read(*p.server, net::buffer(got_up), [&](error_code ec, size_t n) {
    EXPECT_FALSE(ec) << ec.message();
    EXPECT_EQ(n, up.size());
  });
  net::async_write(*p.server, net::buffer(down), [&](error_code ec, size_t n) {
    EXPECT_FALSE(ec) << ec.message();
    EXPECT_EQ(n, down.size());
    p.server->async_shutdown([&](error_code sec) {
      EXPECT_FALSE(sec) << sec.message();
      error_code ignored;
      p.server->next_layer().socket().shutdown(tcp::socket::shutdown_send, ignored);
    });
  });
  p.run();
  ASSERT_TRUE(end.has_value());
  EXPECT_EQ(*end, net::error::eof) << end->message();  // close_notify, not a cut connection
  EXPECT_TRUE(got_down == down);
  EXPECT_TRUE(got_up == up);
  EXPECT_GT(reads, down.size() / piece.size());
}

TEST_F(TlsStreamTest, ACutConnectionIsTruncationNotEndOfStream) {
  Pair p(*server_ctx, *client_ctx);
  handshake(p);
  const auto down = random_bytes(100000, 3);
  std::optional<error_code> end;
  size_t got = 0;
  std::vector<unsigned char> buf(1 << 20);
  std::function<void()> read_down = [&] {
    p.client->async_read_some(net::buffer(buf), [&](error_code ec, size_t n) {
      got += n;
      if (ec) {
        end = ec;
        return;
      }
      read_down();
    });
  };
  read_down();
  net::async_write(*p.server, net::buffer(down), [&](error_code ec, size_t) {
    EXPECT_FALSE(ec);
    error_code ignored;
    p.server->next_layer().socket().close(ignored);  // no close_notify
  });
  p.run();
  EXPECT_EQ(got, down.size());
  ASSERT_TRUE(end.has_value());
  EXPECT_EQ(*end, net::ssl::error::stream_truncated) << end->message();
}

TEST_F(TlsStreamTest, AnUntrustedCertificateFailsBothHandshakesWithTheReason) {
  auto other_ctx = tls::client_context(pki->path("other.pem"));
  Pair p(*server_ctx, *other_ctx);
  std::optional<error_code> client_ec, server_ec;
  p.client->async_handshake(net::ssl::stream_base::client, [&](error_code ec) { client_ec = ec; });
  p.server->async_handshake(net::ssl::stream_base::server, [&](error_code ec) { server_ec = ec; });
  p.run();
  ASSERT_TRUE(client_ec && server_ec);
  ASSERT_TRUE(*client_ec);
  EXPECT_NE(tls::describe_error(*client_ec, p.client->native_handle()).find("certificate verify failed"),
            std::string::npos)
      << tls::describe_error(*client_ec, p.client->native_handle());
  EXPECT_EQ(tls::error_code_for(*client_ec), ErrorCode::unauthorized);
  EXPECT_TRUE(*server_ec);  // the client's alert reached the server: no hang
}

TEST_F(TlsStreamTest, ATlsClientAgainstAPlainPeerFailsClearly) {
  net::io_context ioc;
  tcp::acceptor acceptor(ioc, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
  tls::TlsStream client(ioc.get_executor(), *client_ctx);
  tls::prepare_client(client.native_handle(), "127.0.0.1");
  client.next_layer().connect(acceptor.local_endpoint());
  tcp::socket plain = acceptor.accept();
  const std::string answer = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n";
  net::write(plain, net::buffer(answer));
  std::optional<error_code> client_ec;
  client.async_handshake(net::ssl::stream_base::client, [&](error_code ec) { client_ec = ec; });
  ioc.run_for(std::chrono::seconds(30));
  ASSERT_TRUE(client_ec.has_value());
  EXPECT_EQ(tls::describe_error(*client_ec, client.native_handle()),
            "the server does not speak TLS (is it a plain ws:// / http:// server?)");
}

}  // namespace
}  // namespace surf
