// What a campaign found (docs/campaigns.md "Report"): the model, and the
// JSON, text and SVG it is written as.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace axl::campaign {

struct Injection {
  uint32_t index = 0;  // 1-based, in plan order
  std::string fault;   // "disk:crash"
  double at_s = 0;     // since the campaign started
  bool expect_restart = true;
  bool detected = false;   // the supervisor restarted the target (or, for
                           // slow, correctly did not)
  bool recovered = false;  // the workload path it stalled moved again
  double detect_ms = -1;   // injection to the restart being seen (-1: none)
  double outage_ms = -1;   // injection to the workload moving again (-1: never)
  std::string cause;       // the failure the supervisor recorded
  std::string error;       // why it failed ("": it did not)
};

struct Sample {
  double t_s = 0;       // since the campaign started
  double mib_s = 0;     // stream throughput over the last interval
  uint64_t rounds = 0;  // disk rounds verified so far
};

struct Report {
  uint64_t seed = 0;
  uint32_t planned = 0;
  bool interrupted = false;
  double duration_s = 0;
  std::vector<Injection> injections;
  // Restarts no injection explains (a false hang detection, a second
  // restart of the target), each described.
  std::vector<std::string> unexpected_restarts;
  uint64_t stream_bytes = 0;
  uint64_t stream_corrupted_bytes = 0;
  uint64_t disk_rounds = 0;
  uint64_t disk_corrupted_bytes = 0;
  uint64_t disk_mismatched_rounds = 0;
  uint64_t pcr_reads = 0;
  uint64_t pcr_errors = 0;
  // The guest kernel's I/O, reset and timeout messages (-1: not known, the
  // guest did not finish).
  int64_t guest_kernel_errors = -1;
  std::string workload_error;  // the workload itself failed ("": no)
  std::vector<Sample> throughput;

  uint64_t corrupted_bytes() const { return stream_corrupted_bytes + disk_corrupted_bytes; }
  uint64_t guest_visible_errors() const;
  uint64_t failures() const;
  // Every injection detected and recovered, nothing corrupted, no error the
  // guest saw, no unexplained restart, not interrupted.
  bool passed() const;
};

struct KindSummary {
  std::string fault;
  uint32_t injected = 0, detected = 0, recovered = 0;
  std::vector<double> outages_ms;  // of the recovered ones
  double outage_p50 = -1, outage_p90 = -1, outage_p99 = -1, outage_max = -1;
  double detect_p50 = -1, detect_max = -1;
};
// One row per fault, in the order each first appears.
std::vector<KindSummary> summarize(const Report& r);

// Nearest-rank percentile of v (p in (0, 100]); -1 for none.
double percentile(std::vector<double> v, double p);

std::string to_json(const Report& r);
std::string to_text(const Report& r);
// One histogram of outages per fault kind, stacked.
std::string outage_svg(const Report& r);
// Stream throughput over time, each injection a marked vertical line.
std::string throughput_svg(const Report& r);

}  // namespace axl::campaign
