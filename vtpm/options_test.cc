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
  EXPECT_FALSE(parse_options({"--state-dir", "s", "--key-file", "k", "--ctrl-fd", "3",
                              "--ctrl-socket", "p"}).ok());
  EXPECT_TRUE(parse_options({"--state-dir", "s", "--key-file", "k", "--provision"}).ok());
}

}  // namespace
}  // namespace axl::vtpm
