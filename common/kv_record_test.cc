#include "common/kv_record.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>

#include "common/fs.h"

namespace axl {
namespace {

struct TempDir {
  std::string path;
  TempDir() {
    char t[] = "/tmp/axl-kv-XXXXXX";
    path = ::mkdtemp(t);
  }
  ~TempDir() { (void)remove_tree(path); }
};

TEST(KvRecord, RoundTripsAndIsPrivate) {
  TempDir d;
  const std::string p = d.path + "/r";
  KvRecord r{{"name", "web"}, {"pid", "42"}, {"dev.0.payload", hex_encode("\x01\xff", 2)}};
  ASSERT_TRUE(write_kv_record(p, r).ok());
  struct stat st {};
  ASSERT_EQ(::stat(p.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto back = read_kv_record(p);
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_EQ(*back, r);
  EXPECT_EQ(kv_number(*back, "pid", 100).value(), 42u);
  EXPECT_FALSE(kv_number(*back, "pid", 41).ok());
  EXPECT_FALSE(kv_number(*back, "name", 100).ok());
  EXPECT_FALSE(kv_number(*back, "missing", 100).ok());
  EXPECT_EQ(hex_decode((*back)["dev.0.payload"]).value(), std::string("\x01\xff", 2));
}

TEST(KvRecord, RefusesBadInput) {
  TempDir d;
  EXPECT_FALSE(write_kv_record(d.path + "/a", {{"Bad Key", "x"}}).ok());
  EXPECT_FALSE(write_kv_record(d.path + "/a", {{"k", "two\nlines"}}).ok());
  std::ofstream(d.path + "/b") << "k=v\njunk\n";
  auto r = read_kv_record(d.path + "/b");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("line 2"), std::string::npos);
  ASSERT_EQ(::symlink((d.path + "/b").c_str(), (d.path + "/link").c_str()), 0);
  EXPECT_FALSE(read_kv_record(d.path + "/link").ok());  // never followed
  EXPECT_FALSE(hex_decode("abc").ok());
  EXPECT_FALSE(hex_decode("zz").ok());
}

}  // namespace
}  // namespace axl
