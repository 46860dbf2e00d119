// The kernel's floor for noticing a crash: the time from SIGKILL to the
// pidfd of a minimal child becoming readable, on this machine, now.  A
// restart can detect a dead driver no faster than this.  Prints one line
// per kill (microseconds) for bench/run-restart-bench to take percentiles of.
//
//   axl-bench-kill-floor N
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>

int main(int argc, char** argv) {
  const int n = argc > 1 ? std::atoi(argv[1]) : 100;
  if (n <= 0 || n > 100000) {
    std::fprintf(stderr, "usage: axl-bench-kill-floor N (1..100000)\n");
    return 2;
  }
  for (int i = 0; i < n; ++i) {
    int ready[2];
    if (::pipe(ready) != 0) return 1;
    pid_t pid = ::fork();
    if (pid < 0) return 1;
    if (pid == 0) {
      // Minimal: no exec, no allocation; say it runs, then wait to be killed.
      (void)!::write(ready[1], "r", 1);
      for (;;) ::pause();
    }
    char c;
    (void)!::read(ready[0], &c, 1);
    ::close(ready[0]);
    ::close(ready[1]);
    const int pidfd = int(::syscall(SYS_pidfd_open, pid, 0));
    if (pidfd < 0) return 1;
    const auto t0 = std::chrono::steady_clock::now();
    ::syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, nullptr, 0);
    pollfd p{pidfd, POLLIN, 0};
    while (::poll(&p, 1, -1) != 1) {
    }
    const auto t1 = std::chrono::steady_clock::now();
    ::waitpid(pid, nullptr, 0);
    ::close(pidfd);
    std::printf("%lld\n",
                static_cast<long long>(
                    std::chrono::duration_cast<std::chrono::microseconds>(t1 - t0).count()));
  }
  return 0;
}
