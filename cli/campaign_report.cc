#include "cli/campaign_report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>

#include "common/quote.h"

namespace axl::campaign {

namespace {

std::string num(double v, int prec = 1) {
  if (v < 0 || !std::isfinite(v)) return "null";
  char b[64];
  snprintf(b, sizeof b, "%.*f", prec, v);
  return b;
}

// Text for XML character data and attribute values.
std::string xml(const std::string& s) {
  std::string o;
  for (char c : s) {
    switch (c) {
      case '<':
        o += "&lt;";
        break;
      case '>':
        o += "&gt;";
        break;
      case '&':
        o += "&amp;";
        break;
      case '"':
        o += "&quot;";
        break;
      default:
        o += (static_cast<unsigned char>(c) < 0x20 ? ' ' : c);
    }
  }
  return o;
}

const char* yes(bool b) { return b ? "true" : "false"; }

std::string ms(double v) { return v < 0 ? "-" : num(v, 0); }

}  // namespace

uint64_t Report::guest_visible_errors() const {
  return disk_mismatched_rounds + pcr_errors + uint64_t(std::max<int64_t>(guest_kernel_errors, 0)) +
         (stream_corrupted_bytes ? 1 : 0) + (workload_error.empty() ? 0 : 1);
}

uint64_t Report::failures() const {
  uint64_t n = 0;
  for (const Injection& i : injections) n += !i.error.empty();
  return n;
}

bool Report::passed() const {
  return !interrupted && injections.size() == planned && failures() == 0 &&
         corrupted_bytes() == 0 && guest_visible_errors() == 0 && guest_kernel_errors == 0 &&
         unexpected_restarts.empty();
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return -1;
  std::sort(v.begin(), v.end());
  size_t rank = size_t(std::ceil(p / 100.0 * double(v.size())));
  return v[std::clamp<size_t>(rank, 1, v.size()) - 1];
}

std::vector<KindSummary> summarize(const Report& r) {
  std::vector<KindSummary> out;
  std::map<std::string, size_t> at;
  std::vector<std::vector<double>> detects;
  for (const Injection& i : r.injections) {
    auto [it, fresh] = at.emplace(i.fault, out.size());
    if (fresh) {
      out.push_back(KindSummary{});
      out.back().fault = i.fault;
      detects.emplace_back();
    }
    KindSummary& k = out[it->second];
    ++k.injected;
    k.detected += i.detected;
    k.recovered += i.recovered;
    if (i.recovered && i.outage_ms >= 0) k.outages_ms.push_back(i.outage_ms);
    if (i.detect_ms >= 0) detects[it->second].push_back(i.detect_ms);
  }
  for (size_t n = 0; n < out.size(); ++n) {
    KindSummary& k = out[n];
    k.outage_p50 = percentile(k.outages_ms, 50);
    k.outage_p90 = percentile(k.outages_ms, 90);
    k.outage_p99 = percentile(k.outages_ms, 99);
    k.outage_max = percentile(k.outages_ms, 100);
    k.detect_p50 = percentile(detects[n], 50);
    k.detect_max = percentile(detects[n], 100);
  }
  return out;
}

std::string to_json(const Report& r) {
  uint64_t detected = 0, recovered = 0;
  for (const Injection& i : r.injections) {
    detected += i.detected;
    recovered += i.recovered;
  }
  std::string o = "{\n";
  o += "  \"schema\": \"axolotl-campaign/1\",\n";
  o += "  \"seed\": " + std::to_string(r.seed) + ",\n";
  o += "  \"planned\": " + std::to_string(r.planned) + ",\n";
  o += "  \"interrupted\": " + std::string(yes(r.interrupted)) + ",\n";
  o += "  \"passed\": " + std::string(yes(r.passed())) + ",\n";
  o += "  \"duration_s\": " + num(r.duration_s) + ",\n";
  o += "  \"totals\": {\"injected\": " + std::to_string(r.injections.size()) +
       ", \"detected\": " + std::to_string(detected) +
       ", \"recovered\": " + std::to_string(recovered) +
       ", \"failures\": " + std::to_string(r.failures()) +
       ", \"unexpected_restarts\": " + std::to_string(r.unexpected_restarts.size()) +
       ", \"corrupted_bytes\": " + std::to_string(r.corrupted_bytes()) +
       ", \"guest_visible_errors\": " + std::to_string(r.guest_visible_errors()) + "},\n";
  o += "  \"workload\": {\"stream_bytes\": " + std::to_string(r.stream_bytes) +
       ", \"stream_corrupted_bytes\": " + std::to_string(r.stream_corrupted_bytes) +
       ", \"disk_rounds\": " + std::to_string(r.disk_rounds) +
       ", \"disk_mismatched_rounds\": " + std::to_string(r.disk_mismatched_rounds) +
       ", \"disk_corrupted_bytes\": " + std::to_string(r.disk_corrupted_bytes) +
       ", \"pcr_reads\": " + std::to_string(r.pcr_reads) +
       ", \"pcr_errors\": " + std::to_string(r.pcr_errors) + ", \"guest_kernel_errors\": " +
       (r.guest_kernel_errors < 0 ? "null" : std::to_string(r.guest_kernel_errors)) +
       ", \"error\": " + (r.workload_error.empty() ? "null" : quoted(r.workload_error)) + "},\n";
  o += "  \"faults\": [";
  bool first = true;
  for (const KindSummary& k : summarize(r)) {
    o += first ? "\n" : ",\n";
    first = false;
    o += "    {\"fault\": " + quoted(k.fault) + ", \"injected\": " + std::to_string(k.injected) +
         ", \"detected\": " + std::to_string(k.detected) +
         ", \"recovered\": " + std::to_string(k.recovered) +
         ", \"outage_ms\": {\"p50\": " + num(k.outage_p50) + ", \"p90\": " + num(k.outage_p90) +
         ", \"p99\": " + num(k.outage_p99) + ", \"max\": " + num(k.outage_max) +
         "}, \"detect_ms\": {\"p50\": " + num(k.detect_p50) + ", \"max\": " + num(k.detect_max) +
         "}}";
  }
  o += "\n  ],\n  \"injections\": [";
  first = true;
  for (const Injection& i : r.injections) {
    o += first ? "\n" : ",\n";
    first = false;
    o += "    {\"index\": " + std::to_string(i.index) + ", \"fault\": " + quoted(i.fault) +
         ", \"at_s\": " + num(i.at_s, 3) + ", \"expect_restart\": " + yes(i.expect_restart) +
         ", \"detected\": " + yes(i.detected) + ", \"recovered\": " + yes(i.recovered) +
         ", \"detect_ms\": " + num(i.detect_ms) + ", \"outage_ms\": " + num(i.outage_ms) +
         ", \"cause\": " + quoted(i.cause) +
         ", \"error\": " + (i.error.empty() ? "null" : quoted(i.error)) + "}";
  }
  o += "\n  ],\n  \"unexpected_restarts\": [";
  first = true;
  for (const std::string& u : r.unexpected_restarts) {
    o += first ? "\n    " : ",\n    ";
    first = false;
    o += quoted(u);
  }
  o += "\n  ],\n  \"throughput\": [";
  first = true;
  for (const Sample& s : r.throughput) {
    o += first ? "\n" : ",\n";
    first = false;
    o += "    {\"t_s\": " + num(s.t_s, 2) + ", \"mib_s\": " + num(s.mib_s, 2) +
         ", \"rounds\": " + std::to_string(s.rounds) + "}";
  }
  o += "\n  ]\n}\n";
  return o;
}

std::string to_text(const Report& r) {
  std::string o;
  char line[512];
  snprintf(line, sizeof line, "%-24s %8s %8s %9s %9s %9s %9s %9s %10s\n", "Fault", "Injected",
           "Detected", "Recovered", "p50(ms)", "p90(ms)", "p99(ms)", "max(ms)", "detect(ms)");
  o += line;
  for (const KindSummary& k : summarize(r)) {
    snprintf(line, sizeof line, "%-24s %8u %8u %9u %9s %9s %9s %9s %10s\n", k.fault.c_str(),
             k.injected, k.detected, k.recovered, ms(k.outage_p50).c_str(),
             ms(k.outage_p90).c_str(), ms(k.outage_p99).c_str(), ms(k.outage_max).c_str(),
             ms(k.detect_p50).c_str());
    o += line;
  }
  snprintf(line, sizeof line,
           "\n%zu of %u injections, %llu failed, %zu unexpected restarts; %.1f MiB streamed, "
           "%llu disk rounds, %llu PCR reads; %llu corrupted bytes, %llu guest-visible errors; "
           "%.0f s%s\n",
           r.injections.size(), r.planned, static_cast<unsigned long long>(r.failures()),
           r.unexpected_restarts.size(), double(r.stream_bytes) / 1048576.0,
           static_cast<unsigned long long>(r.disk_rounds),
           static_cast<unsigned long long>(r.pcr_reads),
           static_cast<unsigned long long>(r.corrupted_bytes()),
           static_cast<unsigned long long>(r.guest_visible_errors()), r.duration_s,
           r.interrupted ? " (interrupted)" : "");
  o += line;
  for (const Injection& i : r.injections)
    if (!i.error.empty())
      o += "  #" + std::to_string(i.index) + " " + i.fault + ": " + i.error + "\n";
  for (const std::string& u : r.unexpected_restarts) o += "  unexpected restart: " + u + "\n";
  if (!r.workload_error.empty()) o += "  workload: " + r.workload_error + "\n";
  o += r.passed() ? "PASSED\n" : "FAILED\n";
  return o;
}

std::string outage_svg(const Report& r) {
  const auto kinds = summarize(r);
  constexpr int kBins = 20, kW = 640, kRowH = 90, kLeft = 150, kPlotW = kW - kLeft - 20;
  double top = 0;
  for (const KindSummary& k : kinds) top = std::max(top, k.outage_max);
  if (top <= 0) top = 1;
  const int h = 40 + int(kinds.size()) * kRowH + 30;
  std::string o = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
  o += "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + std::to_string(kW) + "\" height=\"" +
       std::to_string(h) + "\" font-family=\"sans-serif\" font-size=\"11\">\n";
  o += "<title>Outage per fault kind (ms)</title>\n";
  o += "<text x=\"10\" y=\"20\" font-size=\"14\">Outage as the guest sees it, per fault kind "
       "(0 to " +
       num(top, 0) + " ms, " + std::to_string(kBins) + " bins)</text>\n";
  int y0 = 40;
  for (const KindSummary& k : kinds) {
    std::vector<int> bins(kBins, 0);
    for (double v : k.outages_ms) ++bins[std::min(kBins - 1, int(v / top * kBins))];
    const int most = std::max(1, *std::max_element(bins.begin(), bins.end()));
    o += "<g class=\"histogram\" data-fault=\"" + xml(k.fault) + "\">\n";
    o += "<text x=\"10\" y=\"" + std::to_string(y0 + kRowH / 2) + "\">" + xml(k.fault) + " (" +
         std::to_string(k.outages_ms.size()) + ")</text>\n";
    const int base = y0 + kRowH - 20;
    o += "<line x1=\"" + std::to_string(kLeft) + "\" y1=\"" + std::to_string(base) + "\" x2=\"" +
         std::to_string(kLeft + kPlotW) + "\" y2=\"" + std::to_string(base) +
         "\" stroke=\"#444\"/>\n";
    for (int b = 0; b < kBins; ++b) {
      if (!bins[b]) continue;
      const int bh = bins[b] * (kRowH - 30) / most;
      const int x = kLeft + b * kPlotW / kBins;
      o += "<rect x=\"" + std::to_string(x) + "\" y=\"" + std::to_string(base - bh) +
           "\" width=\"" + std::to_string(kPlotW / kBins - 2) + "\" height=\"" +
           std::to_string(bh) + "\" fill=\"#3b7dd8\"><title>" + std::to_string(bins[b]) +
           " between " + num(top * b / kBins, 0) + " and " + num(top * (b + 1) / kBins, 0) +
           " ms</title></rect>\n";
    }
    o += "</g>\n";
    y0 += kRowH;
  }
  o += "<text x=\"" + std::to_string(kLeft) + "\" y=\"" + std::to_string(h - 10) +
       "\">0 ms</text>\n<text x=\"" + std::to_string(kLeft + kPlotW - 60) + "\" y=\"" +
       std::to_string(h - 10) + "\">" + num(top, 0) + " ms</text>\n";
  o += "</svg>\n";
  return o;
}

std::string throughput_svg(const Report& r) {
  constexpr int kW = 800, kH = 300, kLeft = 60, kBottom = 40, kTop = 30;
  const int pw = kW - kLeft - 20, ph = kH - kTop - kBottom;
  double t_end = std::max(r.duration_s, 1.0), top = 0;
  for (const Sample& s : r.throughput) top = std::max(top, s.mib_s);
  if (top <= 0) top = 1;
  auto X = [&](double t) { return kLeft + int(t / t_end * pw); };
  auto Y = [&](double v) { return kTop + ph - int(v / top * ph); };
  std::string o = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
  o += "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + std::to_string(kW) + "\" height=\"" +
       std::to_string(kH) + "\" font-family=\"sans-serif\" font-size=\"11\">\n";
  o += "<title>Stream throughput over time, injections marked</title>\n";
  o += "<text x=\"10\" y=\"18\" font-size=\"14\">Guest stream (MiB/s) over " + num(t_end, 0) +
       " s; red lines: injections</text>\n";
  o += "<line x1=\"" + std::to_string(kLeft) + "\" y1=\"" + std::to_string(kTop + ph) + "\" x2=\"" +
       std::to_string(kLeft + pw) + "\" y2=\"" + std::to_string(kTop + ph) +
       "\" stroke=\"#444\"/>\n";
  o += "<line x1=\"" + std::to_string(kLeft) + "\" y1=\"" + std::to_string(kTop) + "\" x2=\"" +
       std::to_string(kLeft) + "\" y2=\"" + std::to_string(kTop + ph) + "\" stroke=\"#444\"/>\n";
  o += "<text x=\"5\" y=\"" + std::to_string(kTop + 10) + "\">" + num(top, 0) + "</text>\n";
  o += "<text x=\"5\" y=\"" + std::to_string(kTop + ph) + "\">0</text>\n";
  o += "<g class=\"injections\">\n";
  for (const Injection& i : r.injections) {
    const int x = X(i.at_s);
    o += "<line class=\"injection\" data-fault=\"" + xml(i.fault) + "\" x1=\"" + std::to_string(x) +
         "\" y1=\"" + std::to_string(kTop) + "\" x2=\"" + std::to_string(x) + "\" y2=\"" +
         std::to_string(kTop + ph) + "\" stroke=\"" + (i.error.empty() ? "#d33" : "#000") +
         "\" stroke-opacity=\"0.5\"><title>#" + std::to_string(i.index) + " " + xml(i.fault) +
         " at " + num(i.at_s, 1) + " s" + (i.error.empty() ? "" : ": " + xml(i.error)) +
         "</title></line>\n";
  }
  o += "</g>\n<polyline class=\"throughput\" fill=\"none\" stroke=\"#3b7dd8\" points=\"";
  for (const Sample& s : r.throughput)
    o += std::to_string(X(s.t_s)) + "," + std::to_string(Y(s.mib_s)) + " ";
  o += "\"/>\n";
  o += "<text x=\"" + std::to_string(kLeft) + "\" y=\"" + std::to_string(kH - 10) +
       "\">0 s</text>\n<text x=\"" + std::to_string(kLeft + pw - 40) + "\" y=\"" +
       std::to_string(kH - 10) + "\">" + num(t_end, 0) + " s</text>\n";
  o += "</svg>\n";
  return o;
}

}  // namespace axl::campaign
