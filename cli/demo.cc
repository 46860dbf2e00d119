#include "cli/demo.h"

#include <fcntl.h>
#include <sched.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <regex>

#include "cli/commands.h"
#include "common/config.h"
#include "common/process.h"

namespace axl::cli {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

// Addresses live only inside the namespace the demo creates and deletes.
constexpr const char* kHostIp = "10.213.0.1";
constexpr const char* kGuestIp = "10.213.0.2";
constexpr const char* kTap = "axldemo0";

int run(const std::vector<std::string>& argv, const std::string& out_path = "") {
  proc::SpawnOptions so;
  so.argv = argv;
  so.argv[0] = proc::find_on_path(argv[0]);
  if (so.argv[0].empty()) return 127;
  so.log_path = out_path;
  auto c = proc::spawn(so);
  if (!c) return 127;
  auto st = proc::wait_for(*c, 600s);
  return st && WIFEXITED(*st) ? WEXITSTATUS(*st) : 1;
}

std::string sha256_of(const std::string& path) {
  std::string out = path + ".sha";
  fs::remove(out);
  if (run({"sha256sum", path}, out) != 0) return "";
  auto s = config::read_file(out);
  return s ? s->substr(0, 64) : "";
}

std::string find_line(const std::string& text, const std::string& key) {
  std::smatch m;
  std::regex re(key + " ([0-9a-f]{64})");
  return std::regex_search(text, m, re) ? std::string(m[1]) : "";
}

}  // namespace

int run_demo(const DemoOptions& o) {
  char tmpl[] = "/tmp/axl-demo.XXXXXX";
  if (!::mkdtemp(tmpl)) return fail("cannot create a temp dir");
  const std::string dir = tmpl;
  const std::string ns = "axl-demo-" + std::to_string(::getpid());
  HostPaths paths{dir + "/state"};
  int rc = 1;
  bool ns_made = false, host_started = false;
  proc::Child receiver;
  auto step = [](const char* what) { printf("==> %s\n", what), fflush(stdout); };

  do {
    step("creating network namespace");
    if (run({"ip", "netns", "add", ns}) != 0) {
      fail("cannot create network namespace " + ns + " (needs root and iproute2)");
      break;
    }
    ns_made = true;
    int nsfd = ::open(("/run/netns/" + ns).c_str(), O_RDONLY | O_CLOEXEC);
    if (nsfd < 0 || ::setns(nsfd, CLONE_NEWNET) != 0) {
      fail("cannot enter network namespace " + ns);
      break;
    }
    ::close(nsfd);
    run({"ip", "link", "set", "lo", "up"});

    const std::string tool = proc::exe_dir() + "/axl-tool";
    step("writing configs and a 64 MiB disk image of random bytes");
    std::ofstream(dir + "/host.toml")
        << "[[driver]]\nname = \"net0\"\nkind = \"net\"\ntap = \"" << kTap
        << "\"\n\n[[driver]]\nname = \"blk0\"\nkind = \"blk\"\n";
    if (run({tool, "gen", "1", "64M"}, dir + "/disk.img") != 0) {
      fail("cannot write the disk image");
      break;
    }
    std::ofstream(dir + "/guest.sh")
        << "set -e\n"
        << "echo DISK-SHA256 $(sha256sum /dev/vda | cut -d' ' -f1)\n"
        << "ip addr add " << kGuestIp << "/24 dev eth0\nip link set eth0 up\n"
        << "axl-tool gen 2 " << o.stream_mib << "M | axl-tool send " << kHostIp
        << " 5001 --retry 20\n"
        << "echo NET-SHA256 $(axl-tool gen 2 " << o.stream_mib
        << "M | sha256sum | cut -d' ' -f1)\n";
    std::ofstream(dir + "/guest.toml")
        << "name = \"demo\"\nmemory_mib = 512\nvcpus = 1\n"
        << "[[disk]]\ndriver = \"blk0\"\nimage = \"disk.img\"\n"
        << "[[nic]]\ndriver = \"net0\"\nmac = \"52:54:00:aa:01:01\"\n"
        << "[guest]\nscript = \"guest.sh\"\n";

    step("axl host up (hypervisor, supervisor, blk and net driver domains)");
    if (host_up(paths, dir + "/host.toml") != 0) break;
    host_started = true;
    drivers(paths);
    run({"ip", "addr", "add", std::string(kHostIp) + "/24", "dev", kTap});

    step("starting a TCP receiver on the host side of the TAP");
    proc::SpawnOptions so;
    so.argv = {tool, "recv", kHostIp, "5001", "--timeout", "300"};
    so.fds = {
        {::open((dir + "/received").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600), 1}};
    auto rc_recv = proc::spawn(so);
    ::close(so.fds[0].first);
    if (!rc_recv) {
      fail(rc_recv.error().message);
      break;
    }
    receiver = std::move(rc_recv).value();

    step("axl create guest.toml (QEMU TCG, Debian kernel, disk + NIC through driver domains)");
    auto t0 = std::chrono::steady_clock::now();
    if (create(paths, dir + "/guest.toml") != 0) break;
    int status = wait(paths, "demo", 300);
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    auto log = config::read_file(paths.state_dir + "/dom/demo/console.log");
    std::string console = log ? *log : "";
    // The receiver exits when the stream ends; one still running is stopped below.
    if (proc::wait_for(receiver, 10s)) receiver.pid = -1;

    std::string disk_host = sha256_of(dir + "/disk.img");
    std::string disk_guest = find_line(console, "DISK-SHA256");
    std::string net_guest = find_line(console, "NET-SHA256");
    std::string net_host = sha256_of(dir + "/received");
    printf("\nguest ran for %.1f s, script exit status %d\n", secs, status);
    printf("disk  sha256 guest %s\n      sha256 host  %s  %s\n", disk_guest.c_str(),
           disk_host.c_str(), disk_guest == disk_host ? "MATCH" : "MISMATCH");
    printf("net   sha256 sent  %s\n      sha256 recv  %s  %s (%u MiB)\n", net_guest.c_str(),
           net_host.c_str(), net_guest == net_host && !net_host.empty() ? "MATCH" : "MISMATCH",
           o.stream_mib);
    rc = (status == 0 && disk_guest == disk_host && !disk_host.empty() && net_guest == net_host &&
          !net_host.empty())
             ? 0
             : 1;
    if (rc != 0) printf("console log kept in %s\n", (dir + "/console.log").c_str());
    if (rc != 0) fs::copy_file(paths.state_dir + "/dom/demo/console.log", dir + "/console.log");
  } while (false);

  if (receiver.pid > 0) proc::stop(receiver, 1s);
  if (host_started) {
    step("axl host down");
    host_down(paths);
  }
  if (ns_made) run({"ip", "netns", "del", ns});
  if (rc == 0) fs::remove_all(dir);
  printf(rc == 0 ? "demo: PASS\n" : "demo: FAIL\n");
  return rc;
}

}  // namespace axl::cli
