#include "hypervisor/platform/accel.h"

#include <fcntl.h>
#include <linux/kvm.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <thread>

#include "common/log.h"
#include "common/unique_fd.h"

namespace axl::hv {
namespace {

constexpr uint32_t kIterations = 1'000'000;
// Real KVM runs the loop in about 1 ms; an emulating /dev/kvm needs about 1.2 s
// (1.2 µs per iteration, measured on the CI machines).
constexpr double kMaxSeconds = 0.2;
// The child stops the guest after this long; past it the answer is "too slow".
constexpr long kChildTimerMs = 500;
// The parent kills the child after this long (a vCPU stuck in the kernel).
constexpr auto kChildDeadline = std::chrono::seconds(3);
constexpr uint64_t kCodeGpa = 0x1000;
constexpr size_t kGuestPage = 0x1000;

// 16-bit real-mode code at kCodeGpa (0x66 makes the operations 32-bit):
//   xor eax, eax ; mov ecx, kIterations
//   loop: add eax, ecx ; dec ecx ; jnz loop
//   hlt
// eax ends as the sum 1..kIterations modulo 2^32.
// clang-format off
constexpr unsigned char kGuestCode[] = {
    0x66, 0x31, 0xC0,                                    // xor eax, eax
    0x66, 0xB9,                                          // mov ecx, imm32
    kIterations & 0xff, (kIterations >> 8) & 0xff, (kIterations >> 16) & 0xff,
    (kIterations >> 24) & 0xff,
    0x66, 0x01, 0xC8,  // loop: add eax, ecx
    0x66, 0x49,        // dec ecx
    0x75, 0xF9,        // jnz loop (-7)
    0xF4,              // hlt
};
// clang-format on

constexpr uint32_t expected_sum() {
  uint64_t n = kIterations;
  return static_cast<uint32_t>(n * (n + 1) / 2);
}

// What the child sends back through a pipe: plain data, no allocation in the child.
struct ChildResult {
  int usable;
  double seconds;
  char reason[240];
};

double now_s() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

void on_alarm(int) {}

// Runs in the forked child. Only system calls and snprintf: the parent may be
// multi-threaded.
ChildResult run_probe(const char* device) {
  ChildResult r{};
  auto fail = [&r](const char* fmt, auto... args) {
    r.usable = 0;
    std::snprintf(r.reason, sizeof r.reason, fmt, args...);
    return r;
  };

  UniqueFd kvm(::open(device, O_RDWR | O_CLOEXEC));
  if (!kvm) return fail("cannot open %s: %s", device, std::strerror(errno));
  int api = ::ioctl(kvm.get(), KVM_GET_API_VERSION, 0);
  if (api != KVM_API_VERSION)
    return fail("%s: KVM API version %d, want %d", device, api, KVM_API_VERSION);
  UniqueFd vm(::ioctl(kvm.get(), KVM_CREATE_VM, 0));
  if (!vm) return fail("KVM_CREATE_VM: %s", std::strerror(errno));
  // Intel VMX needs a TSS area to run real-mode code; SVM ignores it.
  (void)::ioctl(vm.get(), KVM_SET_TSS_ADDR, 0xfffbd000ul);

  void* mem =
      ::mmap(nullptr, kGuestPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) return fail("mmap guest page: %s", std::strerror(errno));
  std::memset(mem, 0xF4, kGuestPage);  // hlt everywhere: a stray jump stops
  std::memcpy(mem, kGuestCode, sizeof kGuestCode);
  kvm_userspace_memory_region region{};
  region.slot = 0;
  region.guest_phys_addr = kCodeGpa;
  region.memory_size = kGuestPage;
  region.userspace_addr = reinterpret_cast<uint64_t>(mem);
  if (::ioctl(vm.get(), KVM_SET_USER_MEMORY_REGION, &region) < 0)
    return fail("KVM_SET_USER_MEMORY_REGION: %s", std::strerror(errno));

  UniqueFd vcpu(::ioctl(vm.get(), KVM_CREATE_VCPU, 0));
  if (!vcpu) return fail("KVM_CREATE_VCPU: %s", std::strerror(errno));
  int run_size = ::ioctl(kvm.get(), KVM_GET_VCPU_MMAP_SIZE, 0);
  if (run_size < static_cast<int>(sizeof(kvm_run)))
    return fail("KVM_GET_VCPU_MMAP_SIZE: %s", std::strerror(errno));
  auto* run = static_cast<kvm_run*>(::mmap(nullptr, static_cast<size_t>(run_size),
                                           PROT_READ | PROT_WRITE, MAP_SHARED, vcpu.get(), 0));
  if (run == MAP_FAILED) return fail("mmap kvm_run: %s", std::strerror(errno));

  kvm_sregs sregs{};
  if (::ioctl(vcpu.get(), KVM_GET_SREGS, &sregs) < 0)
    return fail("KVM_GET_SREGS: %s", std::strerror(errno));
  sregs.cs.base = 0;
  sregs.cs.selector = 0;
  if (::ioctl(vcpu.get(), KVM_SET_SREGS, &sregs) < 0)
    return fail("KVM_SET_SREGS: %s", std::strerror(errno));
  kvm_regs regs{};
  regs.rip = kCodeGpa;
  regs.rflags = 0x2;  // bit 1 is reserved and must be set
  if (::ioctl(vcpu.get(), KVM_SET_REGS, &regs) < 0)
    return fail("KVM_SET_REGS: %s", std::strerror(errno));

  // The timer interrupts KVM_RUN (EINTR, no SA_RESTART) so a crawling
  // emulator is reported as too slow instead of being waited for.
  struct sigaction sa {};
  sa.sa_handler = on_alarm;
  ::sigaction(SIGALRM, &sa, nullptr);
  // The forking thread's mask is inherited; event loops often block signals.
  sigset_t alarm_set;
  sigemptyset(&alarm_set);
  sigaddset(&alarm_set, SIGALRM);
  ::sigprocmask(SIG_UNBLOCK, &alarm_set, nullptr);
  itimerval timer{};
  timer.it_value.tv_sec = kChildTimerMs / 1000;
  timer.it_value.tv_usec = (kChildTimerMs % 1000) * 1000;
  ::setitimer(ITIMER_REAL, &timer, nullptr);
  double start = now_s();
  int rc;
  do {
    rc = ::ioctl(vcpu.get(), KVM_RUN, 0);
    // An exit to user space other than HLT (MMIO, IO) would mean the guest
    // strayed; EINTR before the timer fired is retried.
  } while (rc < 0 && errno == EINTR && now_s() - start < kChildTimerMs / 1000.0);
  int run_errno = errno;
  r.seconds = now_s() - start;
  timer = {};
  ::setitimer(ITIMER_REAL, &timer, nullptr);

  if (rc < 0 && run_errno == EINTR)
    return fail(
        "KVM did not finish a %u-iteration loop in %.1f s (real KVM needs about 1 ms): "
        "%s emulates guest code",
        kIterations, r.seconds, device);
  if (rc < 0) return fail("KVM_RUN: %s", std::strerror(run_errno));
  if (run->exit_reason != KVM_EXIT_HLT)
    return fail("KVM_RUN exited with reason %u, expected HLT (%u)", run->exit_reason, KVM_EXIT_HLT);
  if (::ioctl(vcpu.get(), KVM_GET_REGS, &regs) < 0)
    return fail("KVM_GET_REGS: %s", std::strerror(errno));
  auto sum = static_cast<uint32_t>(regs.rax);
  if (sum != expected_sum())
    return fail("KVM computed a wrong sum (%u, expected %u): %s is not trustworthy", sum,
                expected_sum(), device);
  if (r.seconds > kMaxSeconds)
    return fail("KVM took %.3f s for a %u-iteration loop (limit %.1f s, real KVM about 1 ms)",
                r.seconds, kIterations, kMaxSeconds);
  r.usable = 1;
  std::snprintf(r.reason, sizeof r.reason, "KVM ran a %u-iteration loop correctly in %.2f ms",
                kIterations, r.seconds * 1e3);
  return r;
}

}  // namespace

ProbeReport probe_kvm(const std::string& device) {
  ProbeReport report;
  // Cheap check first: most hosts without KVM have no device at all, and the
  // reason then reads better than the child's.
  if (::access(device.c_str(), F_OK) != 0) {
    report.reason = "cannot open " + device + ": " + std::strerror(errno);
    return report;
  }
  int p[2];
  if (::pipe2(p, O_CLOEXEC) < 0) {
    report.reason = std::string("pipe: ") + std::strerror(errno);
    return report;
  }
  UniqueFd rd(p[0]), wr(p[1]);
  pid_t pid = ::fork();
  if (pid < 0) {
    report.reason = std::string("fork: ") + std::strerror(errno);
    return report;
  }
  if (pid == 0) {
    rd.reset();
    ChildResult r = run_probe(device.c_str());
    ssize_t n = ::write(wr.get(), &r, sizeof r);
    ::_exit(n == static_cast<ssize_t>(sizeof r) ? 0 : 1);
  }
  wr.reset();

  // The result comes through the pipe, not the exit status: the caller may
  // reap children itself (a SIGCHLD handler, or SIGCHLD ignored).
  auto deadline = std::chrono::steady_clock::now() + kChildDeadline;
  ChildResult r{};
  ssize_t got = -1;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    pollfd p{rd.get(), POLLIN, 0};
    int ready = ::poll(&p, 1, static_cast<int>(left.count()));
    if (ready < 0 && errno == EINTR) continue;
    if (ready > 0) {
      do got = ::read(rd.get(), &r, sizeof r);
      while (got < 0 && errno == EINTR);
    }
    break;
  }
  if (got < 0) ::kill(pid, SIGKILL);
  // The child exits right after writing; a vCPU stuck in the kernel may not die
  // at once even when killed, so the wait is bounded.
  int status = 0;
  for (int i = 0; i < 500; ++i) {
    pid_t w = ::waitpid(pid, &status, WNOHANG);
    if (w != 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  if (got < 0) {
    report.reason = "KVM probe hung and was killed";
    report.seconds = std::chrono::duration<double>(kChildDeadline).count();
    return report;
  }
  if (got != static_cast<ssize_t>(sizeof r)) {
    report.reason = "KVM probe died without a result";
    return report;
  }
  r.reason[sizeof r.reason - 1] = '\0';
  report.usable = r.usable != 0;
  report.reason = r.reason;
  report.seconds = r.seconds;
  return report;
}

const ProbeReport& probe_kvm_once() {
  static const ProbeReport report = probe_kvm();  // thread-safe, once
  return report;
}

Result<Accel> choose_accel(std::string_view setting) {
  if (setting == "tcg") return Accel::kTcg;
  if (setting != "kvm" && setting != "auto")
    return make_error("bad accel setting '" + std::string(setting) +
                      "' (expected auto, kvm or tcg)");
  const ProbeReport& probe = probe_kvm_once();
  if (probe.usable) {
    AXL_INFO("accel %.*s: using kvm (%s)", static_cast<int>(setting.size()), setting.data(),
             probe.reason.c_str());
    return Accel::kKvm;
  }
  if (setting == "kvm") return make_error("accel = \"kvm\" but KVM is not usable: " + probe.reason);
  AXL_INFO("accel auto: using tcg (%s)", probe.reason.c_str());
  return Accel::kTcg;
}

const char* accel_qemu_arg(Accel accel) {
  switch (accel) {
    case Accel::kKvm:
      return "kvm";
    case Accel::kTcg:
      break;
  }
  return "tcg";
}

}  // namespace axl::hv
