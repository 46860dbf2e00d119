// The TPM client's transport and response checks, against a scripted peer
// on a unix socket (the TPM itself is exercised by tests/integration/attest_*.sh).
#include "policy/tpm2.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <thread>

namespace axl::policy::tpm2 {
namespace {

class ScriptedTpm {
 public:
  // Answers each command it reads with the next response of `script`.
  explicit ScriptedTpm(std::vector<Bytes> script) {
    char tmpl[] = "/tmp/axl-tpm2-test.XXXXXX";
    dir_ = mkdtemp(tmpl);
    path_ = dir_ + "/tpm.sock";
    listen_.reset(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    strncpy(a.sun_path, path_.c_str(), sizeof(a.sun_path) - 1);
    EXPECT_EQ(bind(listen_.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
    EXPECT_EQ(listen(listen_.get(), 1), 0);
    thread_ = std::thread([this, script = std::move(script)] {
      UniqueFd c(accept(listen_.get(), nullptr, nullptr));
      for (const auto& rsp : script) {
        uint8_t buf[4096];
        const ssize_t n = read(c.get(), buf, sizeof(buf));
        if (n <= 0) return;
        commands_.emplace_back(buf, buf + n);
        if (write(c.get(), rsp.data(), rsp.size()) != ssize_t(rsp.size())) return;
      }
    });
  }
  ~ScriptedTpm() {
    thread_.join();
    unlink(path_.c_str());
    rmdir(dir_.c_str());
  }
  std::string spec() const { return "unix:" + path_; }
  std::vector<Bytes> commands_;

 private:
  std::string dir_, path_;
  UniqueFd listen_;
  std::thread thread_;
};

Bytes response(uint16_t tag, uint32_t rc, const Bytes& body, int64_t size_delta = 0) {
  Writer w;
  w.u16(tag).u32(uint32_t(int64_t(10 + body.size()) + size_delta)).u32(rc).raw(body);
  return w.bytes();
}

TEST(Tpm2Client, SendsCommandAndReturnsParameters) {
  Writer body;
  body.u32(0x80000001).u32(6).b2(Bytes{7, 8, 9, 10});  // handle, paramSize, params
  ScriptedTpm tpm({response(0x8002, 0, body.bytes())});
  {
    auto c = Client::connect(tpm.spec());
    ASSERT_TRUE(c) << c.error().message;
    std::vector<uint32_t> handles;
    auto p = c->call("TPM2_Test", 0x17B, {0x81000002}, {Session{}}, Bytes{1, 2}, 1, &handles);
    ASSERT_TRUE(p) << p.error().message;
    EXPECT_EQ(*p, (Bytes{0, 4, 7, 8, 9, 10}));
    ASSERT_EQ(handles.size(), 1u);
    EXPECT_EQ(handles[0], 0x80000001u);
  }
  ASSERT_EQ(tpm.commands_.size(), 1u);
  // header(10) handle(4) authSize(4) pw session(9) params(2)
  const Bytes& cmd = tpm.commands_[0];
  ASSERT_EQ(cmd.size(), 29u);
  EXPECT_EQ(cmd[0], 0x80);
  EXPECT_EQ(cmd[1], 0x02);
  EXPECT_EQ(cmd[5], 29);
  EXPECT_EQ(cmd[17], 9);  // authorizationSize
}

TEST(Tpm2Client, ErrorCodeNamesTheCommand) {
  ScriptedTpm tpm({response(0x8001, 0x18B, {})});
  auto c = Client::connect(tpm.spec());
  ASSERT_TRUE(c);
  auto p = c->call("TPM2_ReadPublic(AK)", 0x173, {0x81000002}, {}, {});
  ASSERT_FALSE(p);
  EXPECT_EQ(p.error().message, "TPM2_ReadPublic(AK) failed: TPM_RC 0x18b");
}

TEST(Tpm2Client, RetriesWhenAskedTo) {
  ScriptedTpm tpm({response(0x8001, 0x922, {}), response(0x8001, 0, Bytes{5})});
  auto c = Client::connect(tpm.spec());
  ASSERT_TRUE(c);
  auto p = c->call("TPM2_GetRandom", 0x17B, {}, {}, Bytes{0, 1});
  ASSERT_TRUE(p) << p.error().message;
  EXPECT_EQ(*p, Bytes{5});
}

TEST(Tpm2Client, MalformedResponsesRefused) {
  // Impossible size, parameter size past the end, wrong tag.
  Writer past;
  past.u32(100).u8(1);
  ScriptedTpm tpm({
      response(0x8001, 0, {}, 0x100000),
  });
  auto c = Client::connect(tpm.spec());
  ASSERT_TRUE(c);
  auto p = c->call("TPM2_GetRandom", 0x17B, {}, {}, {});
  ASSERT_FALSE(p);
  EXPECT_NE(p.error().message.find("impossible size"), std::string::npos);

  ScriptedTpm tpm2({response(0x8002, 0, past.bytes()), response(0x8002, 0, {})});
  auto c2 = Client::connect(tpm2.spec());
  ASSERT_TRUE(c2);
  EXPECT_FALSE(c2->call("TPM2_Quote", 0x158, {1}, {Session{}}, {}));
  EXPECT_FALSE(c2->call("TPM2_GetRandom", 0x17B, {}, {}, {}));  // sessions tag without sessions
}

TEST(Tpm2Client, BadAddressesRefused) {
  EXPECT_FALSE(Client::connect("tcp:localhost:1"));
  EXPECT_FALSE(Client::connect("tcp:127.0.0.1:0"));
  EXPECT_FALSE(Client::connect("tcp:127.0.0.1:99999"));
  EXPECT_FALSE(Client::connect("serial:/dev/ttyS0"));
  EXPECT_FALSE(Client::connect("unix:/nonexistent/tpm.sock"));
}

}  // namespace
}  // namespace axl::policy::tpm2
