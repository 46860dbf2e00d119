#include "vtpm/options.h"

#include <gtest/gtest.h>

namespace axl::vtpm {
namespace {

TEST(VtpmOptions, Full) {
  auto o = parse_options({"--state-dir", "s", "--key-file", "k", "--ca-dir", "c",
                          "--ctrl-socket", "x.sock", "--command-port", "2321", "--startup-clear"});
  ASSERT_TRUE(o.ok()) << o.error().message;
  EXPECT_EQ(o->command_port, 2321);
  EXPECT_TRUE(o->startup_clear);
  EXPECT_TRUE(o->checkpoint);
}

TEST(VtpmOptions, Refusals) {
  EXPECT_FALSE(parse_options({"--key-file", "k", "--command-port", "1"}).ok());
  EXPECT_FALSE(parse_options({"--state-dir", "s", "--command-port", "1"}).ok());
  EXPECT_FALSE(parse_options({"--state-dir", "s", "--key-file", "k"}).ok());
  EXPECT_FALSE(parse_options({"--state-dir", "s", "--key-file", "k", "--command-port", "65535"}).ok());
  EXPECT_FALSE(parse_options({"--state-dir", "s", "--key-file", "k", "--command-port", "12x"}).ok());
  EXPECT_FALSE(parse_options({"--state-dir", "s", "--key-file", "k", "--bogus"}).ok());
  EXPECT_FALSE(parse_options({"--state-dir", "s", "--key-file", "k", "--ctrl-fd", "2"}).ok());
  EXPECT_FALSE(parse_options({"--state-dir", "s", "--key-file", "k", "--ctrl-socket", "p",
                              "--data-fd", "4"}).ok());
  EXPECT_FALSE(parse_options({"--state-dir", "s", "--key-file", "k", "--ctrl-fd", "3",
                              "--data-fd", "3"}).ok());
  EXPECT_FALSE(parse_options({"--state-dir", "s", "--key-file", "k", "--command-socket", ""}).ok());
  EXPECT_TRUE(parse_options({"--state-dir", "s", "--key-file", "k", "--provision"}).ok());
}

TEST(VtpmOptions, RestartedInstance) {
  // What the supervisor gives a restarted vTPM: the listening path again and
  // the connections QEMU made with the previous instance.
  auto o = parse_options({"--state-dir", "s", "--key-file", "k", "--ctrl-socket", "c.sock",
                          "--ctrl-conn-fd", "5", "--data-fd", "6", "--handover-fd", "7",
                          "--ready-fd", "8", "--command-socket", "cmd.sock",
                          "--measure-log", "eventlog.bin"});
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

}  // namespace
}  // namespace axl::vtpm
