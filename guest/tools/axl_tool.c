/* axl-tool: the guest's (and tests') traffic tool.
 *
 *   axl-tool gen SEED BYTES                  deterministic bytes to stdout
 *   axl-tool send HOST PORT [--retry SECS]   stdin -> TCP
 *   axl-tool recv ADDR PORT [--timeout SECS] TCP -> stdout (one connection)
 *   axl-tool randread DEV SECS DEPTH [--buffered]
 *                                            random 4 KiB reads, DEPTH in flight
 *                                            (Linux AIO, O_DIRECT unless --buffered)
 *
 * Plain C with no dependencies so it links statically into the busybox initramfs;
 * busybox nc writes 1 KiB at a time (about 2 MiB/s), far too slow to measure a
 * 150-200 MiB/s virtio-net path.  Errors: one line on stderr, non-zero exit. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/aio_abi.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

enum { kChunk = 256 * 1024 };

static const char* g_cmd = "axl-tool";

static void die(const char* fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void die(const char* fmt, ...) {
  va_list ap;
  fprintf(stderr, "%s: ", g_cmd);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  exit(1);
}

static void usage(void) __attribute__((noreturn));
static void usage(void) {
  fprintf(stderr,
          "usage: axl-tool gen SEED BYTES[K|M|G]\n"
          "       axl-tool send HOST PORT [--retry SECONDS]\n"
          "       axl-tool recv ADDR PORT [--timeout SECONDS]\n"
          "       axl-tool serve ADDR PORT [--timeout SECONDS] < DATA\n"
          "       axl-tool randread DEV SECONDS DEPTH [--buffered]\n");
  exit(2);
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint64_t parse_u64(const char* what, const char* s, int allow_suffix) {
  char* end = NULL;
  errno = 0;
  if (*s == '-' || *s == '\0') die("bad %s '%s'", what, s);
  unsigned long long v = strtoull(s, &end, 0);
  if (errno != 0 || end == s) die("bad %s '%s'", what, s);
  unsigned shift = 0;
  if (allow_suffix && *end != '\0' && end[1] == '\0') {
    switch (*end) {
      case 'k':
      case 'K':
        shift = 10;
        end++;
        break;
      case 'm':
      case 'M':
        shift = 20;
        end++;
        break;
      case 'g':
      case 'G':
        shift = 30;
        end++;
        break;
      default:
        break;
    }
  }
  if (*end != '\0') die("bad %s '%s'", what, s);
  if (shift && v > (UINT64_MAX >> shift)) die("%s '%s' is too large", what, s);
  return (uint64_t)v << shift;
}

static double parse_seconds(const char* what, const char* s) {
  char* end = NULL;
  errno = 0;
  double v = strtod(s, &end);
  if (errno != 0 || end == s || *end != '\0' || !(v >= 0) || v > 1e7) die("bad %s '%s'", what, s);
  return v;
}

static void parse_addr(const char* host, const char* port_s, struct sockaddr_in* sa) {
  memset(sa, 0, sizeof *sa);
  sa->sin_family = AF_INET;
  if (inet_pton(AF_INET, host, &sa->sin_addr) != 1)
    die("bad IPv4 address '%s' (dotted form only, no DNS)", host);
  uint64_t port = parse_u64("port", port_s, 0);
  if (port > 65535) die("bad port '%s'", port_s);
  sa->sin_port = htons((uint16_t)port);
}

/* Writes all of buf or dies; short writes are normal on pipes and sockets. */
static void write_all(int fd, const char* buf, size_t len, const char* what) {
  while (len > 0) {
    ssize_t n = write(fd, buf, len);
    if (n < 0) {
      if (errno == EINTR) continue;
      die("write to %s: %s", what, strerror(errno));
    }
    buf += n;
    len -= (size_t)n;
  }
}

static void report(const char* verb, uint64_t bytes, double secs) {
  double mib = (double)bytes / (1024.0 * 1024.0);
  fprintf(stderr, "%s %" PRIu64 " bytes in %.3f s (%.1f MiB/s)\n", verb, bytes, secs,
          secs > 0 ? mib / secs : 0.0);
}

/* xorshift64* (Vigna 2014): one multiply per 8 bytes keeps gen well above 1 GB/s,
 * so the generator never limits a transfer it feeds. */
/* Best effort: a 1 MiB pipe halves the wake-ups between gen and send. */
static void grow_pipe(int fd) {
#ifdef F_SETPIPE_SZ
  (void)fcntl(fd, F_SETPIPE_SZ, 1 << 20);
#else
  (void)fd;
#endif
}

static int cmd_gen(int argc, char** argv) {
  if (argc != 2) usage();
  grow_pipe(STDOUT_FILENO);
  uint64_t seed = parse_u64("seed", argv[0], 0);
  uint64_t remaining = parse_u64("byte count", argv[1], 1);
  /* xorshift state must be non-zero; mixing also spreads nearby seeds apart. */
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 0x2545F4914F6CDD1Dull;
  if (x == 0) x = 1;
  static uint64_t buf[kChunk / 8];
  while (remaining > 0) {
    for (size_t i = 0; i < kChunk / 8; i++) {
      x ^= x >> 12;
      x ^= x << 25;
      x ^= x >> 27;
      buf[i] = x * 0x2545F4914F6CDD1Dull;
    }
    size_t n = remaining < kChunk ? (size_t)remaining : kChunk;
    write_all(STDOUT_FILENO, (const char*)buf, n, "stdout");
    remaining -= n;
  }
  return 0;
}

static int transient_connect_error(int e) {
  return e == ECONNREFUSED || e == ETIMEDOUT || e == ENETUNREACH || e == EHOSTUNREACH ||
         e == ECONNRESET || e == EADDRNOTAVAIL || e == EINTR;
}

static int cmd_send(int argc, char** argv) {
  const char* pos[2];
  int npos = 0;
  double retry = 0;
  for (int i = 0; i < argc; i++) {
    if (strcmp(argv[i], "--retry") == 0) {
      if (++i >= argc) die("--retry needs a value in seconds");
      retry = parse_seconds("--retry", argv[i]);
    } else if (strncmp(argv[i], "--retry=", 8) == 0) {
      retry = parse_seconds("--retry", argv[i] + 8);
    } else if (npos < 2 && argv[i][0] != '-') {
      pos[npos++] = argv[i];
    } else {
      usage();
    }
  }
  if (npos != 2) usage();
  struct sockaddr_in sa;
  parse_addr(pos[0], pos[1], &sa);

  grow_pipe(STDIN_FILENO);
  double deadline = now_s() + retry;
  int fd;
  for (;;) {
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket: %s", strerror(errno));
    if (connect(fd, (struct sockaddr*)&sa, sizeof sa) == 0) break;
    int e = errno;
    close(fd);
    if (!transient_connect_error(e) || now_s() >= deadline)
      die("connect to %s:%s: %s", pos[0], pos[1], strerror(e));
    usleep(100 * 1000);
  }

  static char buf[kChunk];
  uint64_t total = 0;
  double start = now_s();
  int eof = 0;
  while (!eof) {
    /* A pipe hands over at most its capacity per read; gathering full chunks
     * keeps socket writes (and, under TCG, guest exits) few. */
    size_t have = 0;
    while (have < sizeof buf) {
      ssize_t n = read(STDIN_FILENO, buf + have, sizeof buf - have);
      if (n < 0) {
        if (errno == EINTR) continue;
        die("read stdin: %s", strerror(errno));
      }
      if (n == 0) {
        eof = 1;
        break;
      }
      have += (size_t)n;
    }
    write_all(fd, buf, have, "socket");
    total += have;
  }
  if (shutdown(fd, SHUT_WR) < 0) die("shutdown: %s", strerror(errno));
  /* Wait for the peer to close so a reset after our last write is reported as an
   * error instead of being lost in the socket buffer. */
  struct pollfd p = {.fd = fd, .events = POLLIN};
  for (;;) {
    int r = poll(&p, 1, 10000);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break; /* peer keeps its end open: our bytes are queued, good enough */
    ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) die("connection to %s:%s: %s", pos[0], pos[1], strerror(errno));
    if (n == 0) break;
  }
  double secs = now_s() - start;
  close(fd);
  report("sent", total, secs);
  return 0;
}

static int ms_until(double deadline) {
  if (deadline <= 0) return -1;
  double left = deadline - now_s();
  if (left <= 0) return 0;
  return left > 1e6 ? 1000000000 : (int)(left * 1000.0) + 1;
}

/* Parses ADDR PORT [--timeout SECONDS], listens there, and accepts one
 * connection before the deadline (*deadline: 0 for none). */
static int accept_one(int argc, char** argv, double* deadline) {
  const char* pos[2];
  int npos = 0;
  double timeout = 0;
  for (int i = 0; i < argc; i++) {
    if (strcmp(argv[i], "--timeout") == 0) {
      if (++i >= argc) die("--timeout needs a value in seconds");
      timeout = parse_seconds("--timeout", argv[i]);
    } else if (strncmp(argv[i], "--timeout=", 10) == 0) {
      timeout = parse_seconds("--timeout", argv[i] + 10);
    } else if (npos < 2 && argv[i][0] != '-') {
      pos[npos++] = argv[i];
    } else {
      usage();
    }
  }
  if (npos != 2) usage();
  struct sockaddr_in sa;
  parse_addr(pos[0], pos[1], &sa);
  *deadline = timeout > 0 ? now_s() + timeout : 0;

  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (lfd < 0) die("socket: %s", strerror(errno));
  int one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(lfd, (struct sockaddr*)&sa, sizeof sa) < 0)
    die("bind %s:%s: %s", pos[0], pos[1], strerror(errno));
  if (listen(lfd, 1) < 0) die("listen: %s", strerror(errno));
  struct sockaddr_in bound;
  socklen_t blen = sizeof bound;
  getsockname(lfd, (struct sockaddr*)&bound, &blen);
  fprintf(stderr, "listening on %s:%u\n", pos[0], (unsigned)ntohs(bound.sin_port));

  struct pollfd p = {.fd = lfd, .events = POLLIN};
  for (;;) {
    int r = poll(&p, 1, ms_until(*deadline));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) die("poll: %s", strerror(errno));
    if (r == 0) die("timed out waiting for a connection on %s:%s", pos[0], pos[1]);
    break;
  }
  int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
  if (fd < 0) die("accept: %s", strerror(errno));
  close(lfd);
  return fd;
}

static int cmd_recv(int argc, char** argv) {
  double deadline;
  int fd = accept_one(argc, argv, &deadline);
  struct pollfd p = {.fd = fd, .events = POLLIN};
  static char buf[kChunk];
  uint64_t total = 0;
  double start = now_s();
  for (;;) {
    int r = poll(&p, 1, ms_until(deadline));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) die("poll: %s", strerror(errno));
    if (r == 0) die("timed out after %" PRIu64 " bytes", total);
    ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      die("read from connection: %s", strerror(errno));
    }
    if (n == 0) break;
    write_all(STDOUT_FILENO, buf, (size_t)n, "stdout");
    total += (uint64_t)n;
  }
  double secs = now_s() - start;
  close(fd);
  report("received", total, secs);
  return 0;
}

/* The other direction: the first peer to connect gets stdin, then EOF. */
static int cmd_serve(int argc, char** argv) {
  double deadline;
  int fd = accept_one(argc, argv, &deadline);
  static char buf[kChunk];
  uint64_t total = 0;
  double start = now_s();
  for (;;) {
    ssize_t n = read(STDIN_FILENO, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      die("read from stdin: %s", strerror(errno));
    }
    if (n == 0) break;
    write_all(fd, buf, (size_t)n, "connection");
    total += (uint64_t)n;
  }
  double secs = now_s() - start;
  if (close(fd) < 0) die("close connection: %s", strerror(errno));
  report("served", total, secs);
  return 0;
}

/* randread: random 4 KiB reads across DEV (a block device or file), DEPTH of
 * them in flight through Linux native AIO (raw system calls: the initramfs
 * has no libaio), for SECONDS; O_DIRECT unless --buffered.  Prints
 * "randread N reads of 4096 bytes in S s (I IOPS, M MiB/s)" on stderr.  A
 * read that fails or comes back short is an error. */
enum { kReadBlock = 4096, kMaxDepth = 256 };

static int cmd_randread(int argc, char** argv) {
  const char* pos[3];
  int npos = 0, buffered = 0;
  for (int i = 0; i < argc; i++) {
    if (strcmp(argv[i], "--buffered") == 0) {
      buffered = 1;
    } else if (npos < 3) {
      pos[npos++] = argv[i];
    } else {
      usage();
    }
  }
  if (npos != 3) usage();
  char* end = NULL;
  errno = 0;
  double secs = strtod(pos[1], &end);
  if (errno || end == pos[1] || *end || !(secs > 0) || secs > 3600)
    die("bad duration '%s' (seconds, up to 3600)", pos[1]);
  uint64_t depth = parse_u64("depth", pos[2], 0);
  if (depth < 1 || depth > kMaxDepth) die("depth must be 1..%d, not %s", kMaxDepth, pos[2]);
  int fd = open(pos[0], O_RDONLY | O_CLOEXEC | (buffered ? 0 : O_DIRECT));
  if (fd < 0) die("open %s: %s", pos[0], strerror(errno));
  off_t size = lseek(fd, 0, SEEK_END);
  if (size < kReadBlock) die("%s: smaller than one %d-byte block", pos[0], kReadBlock);
  uint64_t blocks = (uint64_t)size / kReadBlock;
  aio_context_t ctx = 0;
  if (syscall(SYS_io_setup, (long)depth, &ctx) < 0) die("io_setup: %s", strerror(errno));
  static struct iocb cbs[kMaxDepth];
  static struct iocb* ptrs[kMaxDepth];
  static struct io_event events[kMaxDepth];
  static char busy[kMaxDepth];
  uint8_t* bufs = aligned_alloc(kReadBlock, depth * kReadBlock);
  if (!bufs) die("out of memory");
  uint64_t x = 0x9E3779B97F4A7C15ull ^ (uint64_t)getpid();
  for (uint64_t i = 0; i < depth; i++) {
    memset(&cbs[i], 0, sizeof cbs[i]);
    cbs[i].aio_lio_opcode = IOCB_CMD_PREAD;
    cbs[i].aio_fildes = (uint32_t)fd;
    cbs[i].aio_buf = (uint64_t)(uintptr_t)(bufs + i * kReadBlock);
    cbs[i].aio_nbytes = kReadBlock;
    cbs[i].aio_data = i;
  }
  double start = now_s(), deadline = start + secs;
  uint64_t done = 0, in_flight = 0;
  for (;;) {
    /* Refill every free iocb (all of them at first) while time is left. */
    int n = 0;
    if (now_s() < deadline) {
      for (uint64_t i = 0; i < depth && in_flight + (uint64_t)n < depth; i++) {
        if (busy[i]) continue;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        cbs[i].aio_offset = (int64_t)((x * 0x2545F4914F6CDD1Dull) % blocks) * kReadBlock;
        busy[i] = 1;
        ptrs[n++] = &cbs[i];
      }
    }
    if (n > 0) {
      long got = syscall(SYS_io_submit, ctx, (long)n, ptrs);
      if (got != n) die("io_submit: %s", got < 0 ? strerror(errno) : "short submission");
      in_flight += (uint64_t)n;
    }
    if (in_flight == 0) break;
    long got = syscall(SYS_io_getevents, ctx, 1L, (long)depth, events, NULL);
    if (got < 0) {
      if (errno == EINTR) continue;
      die("io_getevents: %s", strerror(errno));
    }
    for (long e = 0; e < got; e++) {
      if (events[e].res != kReadBlock)
        die("read at %lld: %s", (long long)cbs[events[e].data].aio_offset,
            events[e].res < 0 ? strerror((int)-events[e].res) : "short read");
      busy[events[e].data] = 0;
      in_flight--;
      done++;
    }
  }
  double took = now_s() - start;
  (void)syscall(SYS_io_destroy, ctx);
  free(bufs);
  close(fd);
  fprintf(stderr, "randread %" PRIu64 " reads of %d bytes in %.3f s (%.0f IOPS, %.1f MiB/s)\n",
          done, kReadBlock, took, took > 0 ? (double)done / took : 0.0,
          took > 0 ? (double)done * kReadBlock / (1024.0 * 1024.0) / took : 0.0);
  return 0;
}

int main(int argc, char** argv) {
  /* A closed peer must surface as EPIPE and a message, not a silent death. */
  signal(SIGPIPE, SIG_IGN);
  if (argc < 2) usage();
  const char* cmd = argv[1];
  static char name[64];
  snprintf(name, sizeof name, "axl-tool %s", cmd);
  g_cmd = name;
  if (strcmp(cmd, "gen") == 0) return cmd_gen(argc - 2, argv + 2);
  if (strcmp(cmd, "send") == 0) return cmd_send(argc - 2, argv + 2);
  if (strcmp(cmd, "recv") == 0) return cmd_recv(argc - 2, argv + 2);
  if (strcmp(cmd, "serve") == 0) return cmd_serve(argc - 2, argv + 2);
  if (strcmp(cmd, "randread") == 0) return cmd_randread(argc - 2, argv + 2);
  if (strcmp(cmd, "-h") == 0 || strcmp(cmd, "--help") == 0) usage();
  g_cmd = "axl-tool";
  die("unknown command '%s' (gen, send, recv, serve, randread)", cmd);
}
