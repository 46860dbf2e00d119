// axolotl-vtpm's command line.
#pragma once
#include <string>
#include <vector>

#include "common/result.h"

namespace axl::vtpm {

struct Options {
  std::string state_dir;
  // Which vTPM this is (its domain's name): bound into the keys its state is
  // sealed under, so a state file opens only in the vTPM it was made for.
  // --vtpm-id; without it, the name of the state dir (not with --sandbox).
  std::string vtpm_id;
  std::string key_file;
  std::string ca_dir;
  std::string ctrl_socket;
  int ctrl_fd = -1;            // --ctrl-fd / --ctrl-conn-fd: an inherited, connected control socket
  int data_fd = -1;            // --data-fd: the command channel a previous instance was handed
  std::string command_socket;  // raw TPM commands on a Unix stream socket
  std::string measure_log;     // TCG event log to extend after TPM2_Startup(CLEAR)
  int ready_fd = -1;           // one byte is written here once everything listens
  int handover_fd = -1;        // the control and data channels are sent here (SCM_RIGHTS)
  int health_fd = -1;          // the supervisor's heartbeats (common/heartbeat.h)
  int command_port = 0;
  // What a confined instance gets instead of paths and a port: every file it
  // reads and every socket it listens on, already open (vtpm/sandbox.h).
  int key_fd = -1;             // instead of --key-file
  int measure_log_fd = -1;     // instead of --measure-log
  int ctrl_listen_fd = -1;     // instead of --ctrl-socket
  int command_listen_fd = -1;  // instead of --command-socket
  int port_command_fd = -1;    // --command-port-fds: instead of --command-port (N ...
  int port_ctrl_fd = -1;       // ... and N+1)
  int state_fd = -1;           // the state dir, bind-mounted at /state once confined
  // Rollback protection: the permanent state must be at least this
  // generation (the supervisor's counter), and each new generation saved is
  // sent here (a datagram of 4 bytes, big-endian) for the supervisor to keep.
  uint32_t rollback_floor = 0;
  int generation_fd = -1;
  bool sandbox = false;
  // Fault hooks on the health channel are honoured (host config
  // vtpm_fault_injection): crash, hang, die-in-command.
  bool fault_injection = false;
  bool provision_only = false;
  bool startup_clear = false;
  bool checkpoint = true;
};

inline constexpr const char* kUsage =
    "usage: axolotl-vtpm --state-dir DIR (--key-file FILE | --key-fd N) [--vtpm-id ID]\n"
    "                    [--ca-dir DIR] [--ctrl-socket PATH] [--ctrl-fd N] [--data-fd N]\n"
    "                    [--command-port N] [--command-socket PATH]\n"
    "                    [--measure-log FILE | --measure-log-fd N]\n"
    "                    [--ctrl-listen-fd N] [--command-listen-fd N] [--command-port-fds N,M]\n"
    "                    [--ready-fd N] [--handover-fd N] [--health-fd N] [--sandbox --state-fd "
    "N]\n"
    "                    [--startup-clear] [--provision] [--no-checkpoint]";

Result<Options> parse_options(const std::vector<std::string>& args);

}  // namespace axl::vtpm
