#include "vtpm/options.h"

#include <gtest/gtest.h>

namespace axl::vtpm {
namespace {

TEST(VtpmOptions, Full) {
  auto o = parse_options({"--state-dir", "s", "--key-file", "k", "--ca-dir", "c", "--ctrl-socket",
                          "x.sock", "--command-port", "2321", "--startup-clear"});
  ASSERT_TRUE(o.ok()) << o.error().message;
  EXPECT_EQ(o->command_port, 2321);
  EXPECT_TRUE(o->startup_clear);
  EXPECT_TRUE(o->checkpoint);
}

TEST(VtpmOptions, Refusals) {
  EXPECT_FALSE(parse_options({"--key-file", "k", "--command-port", "1"}).ok());
  EXPECT_FALSE(parse_options({"--state-dir", "s", "--command-port", "1"}).ok());
  EXPECT_FALSE(parse_options({"--state-dir", "s", "--key-file", "k"}).ok());
  EXPECT_FALSE(
      parse_options({"--state-dir", "s", "--key-file", "k", "--command-port", "65535"}).ok());
  EXPECT_FALSE(
      parse_options({"--state-dir", "s", "--key-file", "k", "--command-port", "12x"}).ok());
  EXPECT_FALSE(parse_options({"--state-dir", "s", "--key-file", "k", "--bogus"}).ok());
  EXPECT_FALSE(parse_options({"--state-dir", "s", "--key-file", "k", "--ctrl-fd", "2"}).ok());
  EXPECT_FALSE(
      parse_options({"--state-dir", "s", "--key-file", "k", "--ctrl-socket", "p", "--data-fd", "4"})
          .ok());
  EXPECT_FALSE(
      parse_options({"--state-dir", "s", "--key-file", "k", "--ctrl-fd", "3", "--data-fd", "3"})
          .ok());
  EXPECT_FALSE(parse_options({"--state-dir", "s", "--key-file", "k", "--command-socket", ""}).ok());
  EXPECT_TRUE(parse_options({"--state-dir", "s", "--key-file", "k", "--provision"}).ok());
}

TEST(VtpmOptions, RestartedInstance) {
  // What the supervisor gives a restarted vTPM: the listening path again and
  // the connections QEMU made with the previous instance.
  auto o =
      parse_options({"--state-dir", "s", "--key-file", "k", "--ctrl-socket", "c.sock",
                     "--ctrl-conn-fd", "5", "--data-fd", "6", "--handover-fd", "7", "--ready-fd",
                     "8", "--command-socket", "cmd.sock", "--measure-log", "eventlog.bin"});
  ASSERT_TRUE(o.ok()) << o.error().message;
  EXPECT_EQ(o->ctrl_fd, 5);
  EXPECT_EQ(o->data_fd, 6);
  EXPECT_EQ(o->handover_fd, 7);
  EXPECT_EQ(o->ready_fd, 8);
  EXPECT_EQ(o->command_socket, "cmd.sock");
  EXPECT_EQ(o->measure_log, "eventlog.bin");
  // A command socket alone is something to serve.
  EXPECT_TRUE(parse_options({"--state-dir", "s", "--key-file", "k", "--command-socket", "x"}).ok());
}

TEST(VtpmOptions, ConfinedInstance) {
  // What the supervisor gives a confined vTPM: no path but its state dir's
  // name, everything else as fds.
  auto o = parse_options({"--state-dir",
                          "s",
                          "--sandbox",
                          "--state-fd",
                          "7",
                          "--key-fd",
                          "8",
                          "--vtpm-id",
                          "s",
                          "--ctrl-listen-fd",
                          "10",
                          "--command-listen-fd",
                          "11",
                          "--command-port-fds",
                          "12,13",
                          "--measure-log-fd",
                          "9",
                          "--ready-fd",
                          "3",
                          "--handover-fd",
                          "4",
                          "--ctrl-fd",
                          "5",
                          "--data-fd",
                          "6"});
  ASSERT_TRUE(o.ok()) << o.error().message;
  EXPECT_TRUE(o->sandbox);
  EXPECT_EQ(o->state_fd, 7);
  EXPECT_EQ(o->key_fd, 8);
  EXPECT_TRUE(o->key_file.empty());
  EXPECT_EQ(o->measure_log_fd, 9);
  EXPECT_EQ(o->ctrl_listen_fd, 10);
  EXPECT_EQ(o->command_listen_fd, 11);
  EXPECT_EQ(o->port_command_fd, 12);
  EXPECT_EQ(o->port_ctrl_fd, 13);
  // A listening fd alone is something to serve, confined or not.
  EXPECT_TRUE(
      parse_options({"--state-dir", "s", "--key-file", "k", "--command-listen-fd", "3"}).ok());
  EXPECT_TRUE(
      parse_options({"--state-dir", "s", "--key-fd", "3", "--command-port-fds", "4,5"}).ok());
}

TEST(VtpmOptions, VtpmId) {
  // Given, it is taken as is.
  auto o = parse_options({"--state-dir", "s", "--key-file", "k", "--command-port", "1", "--vtpm-id",
                          "web-1.example_A"});
  ASSERT_TRUE(o.ok()) << o.error().message;
  EXPECT_EQ(o->vtpm_id, "web-1.example_A");
  EXPECT_TRUE(parse_options({"--state-dir", "s", "--key-file", "k", "--command-port", "1",
                             "--vtpm-id", std::string(64, 'a')})
                  .ok());
  // Run by hand without it: the state dir's name.
  auto id_of = [](const std::string& dir) {
    auto r = parse_options({"--state-dir", dir, "--key-file", "k", "--command-port", "1"});
    return r ? r->vtpm_id : "error: " + r.error().message;
  };
  EXPECT_EQ(id_of("/var/lib/axolotl/vtpm/web"), "web");
  EXPECT_EQ(id_of("tmp/state/"), "state");
  EXPECT_EQ(id_of("state"), "state");
  EXPECT_NE(id_of("/").find("give --vtpm-id"), std::string::npos) << id_of("/");
  EXPECT_NE(id_of(".").find("give --vtpm-id"), std::string::npos) << id_of(".");
  EXPECT_NE(id_of("/tmp/a b").find("'a b' is no vTPM id"), std::string::npos) << id_of("/tmp/a b");
  // Confined, the dir is /state: the supervisor must say which vTPM it is.
  const std::vector<std::string> confined = {
      "--state-dir", "s", "--sandbox",           "--state-fd", "7",
      "--key-fd",    "8", "--command-listen-fd", "11"};
  auto r = parse_options(confined);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("--sandbox needs --vtpm-id"), std::string::npos)
      << r.error().message;
  auto with_id = confined;
  with_id.insert(with_id.end(), {"--vtpm-id", "web"});
  r = parse_options(with_id);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->vtpm_id, "web");
}

TEST(VtpmOptions, BadVtpmIds) {
  for (const std::string& id :
       {std::string(""), std::string(65, 'a'), std::string("a/b"), std::string("a b"),
        std::string("."), std::string(".."), std::string("a\nb"), std::string("caf\xc3\xa9"),
        std::string("a\0b", 3)}) {
    auto o = parse_options(
        {"--state-dir", "s", "--key-file", "k", "--command-port", "1", "--vtpm-id", id});
    ASSERT_FALSE(o.ok()) << "accepted '" << id << "'";
    EXPECT_NE(o.error().message.find("--vtpm-id"), std::string::npos) << o.error().message;
    EXPECT_NE(o.error().message.find("[A-Za-z0-9._-]"), std::string::npos) << o.error().message;
    EXPECT_EQ(o.error().message.find('\n'), std::string::npos) << "one line";
  }
  EXPECT_FALSE(parse_options({"--state-dir", "s", "--key-file", "k", "--vtpm-id"}).ok());
}

TEST(VtpmOptions, ConfinedRefusals) {
  auto refused = [](const std::vector<std::string>& args, const std::string& says) {
    auto o = parse_options(args);
    ASSERT_FALSE(o.ok());
    EXPECT_NE(o.error().message.find(says), std::string::npos) << o.error().message;
    EXPECT_EQ(o.error().message.find('\n'), std::string::npos) << "one line";
  };
  const std::vector<std::string> base = {"--state-dir",         "s", "--key-fd", "8",
                                         "--command-listen-fd", "11"};
  auto with = [&](std::vector<std::string> more) {
    auto a = base;
    a.insert(a.end(), more.begin(), more.end());
    return a;
  };
  refused(with({"--sandbox"}), "--state-fd");
  refused(with({"--state-fd", "7"}), "--sandbox only");
  refused(with({"--sandbox", "--state-fd", "7", "--ctrl-socket", "c"}), "binds no socket");
  refused(with({"--sandbox", "--state-fd", "7", "--command-socket", "c"}), "binds no socket");
  refused(with({"--sandbox", "--state-fd", "7", "--command-port", "2321"}), "binds no socket");
  refused(with({"--sandbox", "--state-fd", "7", "--ca-dir", "ca"}), "never holds the CA key");
  refused(with({"--sandbox", "--state-fd", "7", "--provision"}), "never holds the CA key");
  refused(with({"--key-file", "k"}), "one of --key-file and --key-fd");
  refused({"--state-dir", "s", "--command-listen-fd", "11"}, "one of --key-file and --key-fd");
  refused(with({"--measure-log", "l", "--measure-log-fd", "9"}), "one of --measure-log");
  refused(with({"--state-fd", "8", "--sandbox"}), "two purposes");
  refused(with({"--command-port-fds", "12"}), "two fds N,M");
  refused(with({"--command-port-fds", "12,x"}), "got 'x'");
  refused(with({"--command-port-fds", "2,13"}), "got '2'");
  refused(with({"--ctrl-listen-fd", "1"}), "got '1'");
  refused({"--state-dir", "s", "--key-fd", "8"}, "nothing to serve");
}

}  // namespace
}  // namespace axl::vtpm
