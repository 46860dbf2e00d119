// axolotl-vtpm's command line.
#pragma once
#include <string>
#include <vector>

#include "common/result.h"

namespace axl::vtpm {

struct Options {
  std::string state_dir;
  std::string key_file;
  std::string ca_dir;
  std::string ctrl_socket;
  int ctrl_fd = -1;
  int command_port = 0;
  bool provision_only = false;
  bool startup_clear = false;
  bool checkpoint = true;
};

inline constexpr const char* kUsage =
    "usage: axolotl-vtpm --state-dir DIR --key-file FILE [--ca-dir DIR]\n"
    "                    [--ctrl-socket PATH | --ctrl-fd N] [--command-port N]\n"
    "                    [--startup-clear] [--provision] [--no-checkpoint]";

Result<Options> parse_options(const std::vector<std::string>& args);

}  // namespace axl::vtpm
