#include <gtest/gtest.h>

#include "../test_util.h"
#include "surf/storage/backend.h"

using namespace surf;

TEST(FilesystemBackend, PutGetRangeListExists) {
  test::TempDir d;
  auto b = open_filesystem_backend(d.path(), true);
  const std::string data = "hello chunk store";
  b->put("chunks/a.msgpack", data.data(), data.size());
  b->put("manifest.json", "{}", 2);
  EXPECT_TRUE(b->exists("chunks/a.msgpack"));
  EXPECT_FALSE(b->exists("chunks/b.msgpack"));
  EXPECT_EQ(b->size("chunks/a.msgpack"), data.size());
  ByteBuffer buf;
  b->get("chunks/a.msgpack", buf);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(buf.data()), buf.size()), data);
  char part[5];
  b->get_range("chunks/a.msgpack", 6, 5, part);
  EXPECT_EQ(std::string(part, 5), "chunk");
  EXPECT_THROW(b->get_range("chunks/a.msgpack", 10, 100, part), Error);
  EXPECT_EQ(b->list("chunks/"), (std::vector<std::string>{"chunks/a.msgpack"}));
  test::expect_error([&] { b->get("chunks/missing.msgpack", buf); }, ErrorCode::not_found, "missing.msgpack");
  b->remove("chunks/a.msgpack");
  EXPECT_FALSE(b->exists("chunks/a.msgpack"));
}

TEST(FilesystemBackend, KeysCannotEscapeTheRoot) {
  test::TempDir d;
  auto b = open_filesystem_backend(d.path(), true);
  ByteBuffer buf;
  for (const char* bad : {"../x", "/etc/passwd", "a/../../b", "a//b", "a/./b", "", "a\\b"}) {
    EXPECT_THROW(b->get(bad, buf), Error) << bad;
    EXPECT_THROW(b->put(bad, "x", 1), Error) << bad;
  }
  EXPECT_THROW(open_filesystem_backend(d.path() / "missing"), Error);
}
