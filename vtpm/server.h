// The vTPM domain's I/O: the control channel (swtpm protocol, ctrl_protocol.h)
// and the TPM command channel, over
//  - a Unix socket QEMU's `-chardev socket,path=CTRL` connects to (or an
//    inherited connected socket), with the command channel being the socket
//    QEMU hands over by CMD_SET_DATAFD;
//  - TCP on 127.0.0.1: commands on port N, control on N+1, which is what
//    tpm2-tss' `swtpm:host=127.0.0.1,port=N` TCTI expects;
// each listener either made here from a path or port, or handed over
// already listening (all of them, for a confined vTPM: vtpm/sandbox.h).
// The control channels and the listeners run on one Asio event loop; each
// TPM command stream has a thread of its own (blocking read, execute, write).
// TPM commands run one at a time, to completion, under one engine lock.
#pragma once
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "common/asio.h"
#include "common/result.h"
#include "common/unique_fd.h"
#include "vtpm/ctrl_protocol.h"
#include "vtpm/tpm_engine.h"

namespace axl::vtpm {

struct ServerOptions {
  std::string ctrl_socket;     // listen here (Unix); empty: none
  int ctrl_fd = -1;            // an inherited, connected control socket; -1: none
  int command_port = 0;        // 0: no TCP
  std::string command_socket;  // raw TPM commands on a Unix stream socket; empty: none
  int data_fd = -1;            // an inherited command channel (a previous instance's DATAFD)
  // A socket of the supervisor's: QEMU's control connection and its data
  // channel are sent there (SCM_RIGHTS) as soon as this instance has them,
  // so that they outlive this process and reach its successor.
  int handover_fd = -1;
  // The same listeners, already bound and listening by whoever started us
  // (a confined vTPM makes no socket): -1 for none.
  int ctrl_listen_fd = -1;     // as ctrl_socket: QEMU's, its connections handed over
  int command_listen_fd = -1;  // as command_socket
  int port_command_fd = -1;    // as command_port ...
  int port_ctrl_fd = -1;       // ... and command_port + 1
};

class Connection;
class DataConnection;

// Each fd >= 0 must be a listening stream socket; the error names its flag.
Status check_listening_fds(int ctrl_listen, int command_listen, int port_command, int port_ctrl);

class Server {
 public:
  Server(boost::asio::io_context& io, TpmEngine& engine);
  ~Server();
  Status start(const ServerOptions& opts);
  // Stops accepting and closes every connection.
  void stop();
  bool shutdown_requested() const { return shutdown_requested_.load(); }
  // Whether one command (or control request) has held the engine for longer
  // than `limit`: a TPM command never takes that long, so the engine is stuck
  // and the vTPM withholds its heartbeats (common/heartbeat.h).
  bool stuck(std::chrono::nanoseconds limit) const;
  // At most this many command streams besides the guest's: each has a thread.
  static constexpr size_t kMaxStreams = 16;

  // Handles one control message (as one read returned it) and says what to
  // send back; `fd` is a descriptor that came with it (SCM_RIGHTS).
  // `restricted`: it came on the TCP control port, which answers only what
  // neither changes nor reveals the TPM's state.
  std::vector<uint8_t> handle_ctrl(const ctrl::Request& req, UniqueFd fd, bool restricted = false);
  // guest: from QEMU's data channel (TpmEngine::execute_guest).
  std::vector<uint8_t> handle_command(std::span<const uint8_t> cmd, bool guest);
  std::optional<std::vector<uint8_t>> take_guest_reply();
  void forget(Connection* c);
  // From a command stream's thread as it ends: the loop joins and drops it.
  void reap_later(uint64_t id);
  TpmEngine& engine() { return engine_; }
  boost::asio::io_context& io() { return io_; }

 private:
  uint64_t restricted_refusals_ = 0;  // loop thread
  bool ctrl_handed_over_ = false;     // QEMU's control connection was (loop thread)
  struct Listener;
  void listen_on(UniqueFd fd, bool ctrl, bool hand_over, bool restricted = false);
  void hand_over(char tag, int fd);
  void accept_loop(Listener* l);
  // Returns a command stream's id (0 for a control channel).
  uint64_t add_connection(UniqueFd fd, bool ctrl, bool guest = false, bool inherited = false,
                          bool restricted = false);
  void drop_data(uint64_t id);

  boost::asio::io_context& io_;
  TpmEngine& engine_;
  std::vector<std::unique_ptr<Listener>> listeners_;
  std::vector<std::shared_ptr<Connection>> conns_;
  // The engine lock, held through EngineUse, which also notes since when.
  class EngineUse;
  std::mutex engine_mu_;                   // the engine, and everything the control channel changes
  std::atomic<int64_t> busy_since_ns_{0};  // 0: the engine is idle
  std::mutex data_mu_;                     // data_conns_
  std::vector<std::unique_ptr<DataConnection>> data_conns_;
  uint64_t next_data_id_ = 0;
  uint64_t datafd_conn_ = 0;  // QEMU's data channel (CMD_SET_DATAFD), 0: none
  std::string ctrl_path_, cmd_path_;
  UniqueFd handover_;
  bool pending_volatile_ = false;  // CMD_STORE_VOLATILE or a volatile blob set
  std::atomic<bool> shutdown_requested_ = false;
};

}  // namespace axl::vtpm
