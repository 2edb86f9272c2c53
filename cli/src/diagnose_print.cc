#include "diagnose_print.h"

#include <cstdio>
#include <string>

namespace probing::cli {
namespace {

Cell OrNull(const std::string& s) { return s.empty() ? Cell(std::monostate{}) : Cell(s); }
Cell OrNull(int64_t v) { return v < 0 ? Cell(std::monostate{}) : Cell(v); }
double Round(double v, double unit) { return static_cast<double>(static_cast<int64_t>(v / unit + 0.5)) * unit; }

}  // namespace

int PrintStragglers(const cluster::StragglerReport& report, OutputFormat format, std::ostream& out,
                    std::ostream& err) {
  if (!report.problem.empty()) {
    err << "probing: no straggler analysis: " << report.problem << "\n";
    return 1;
  }
  std::vector<std::vector<Cell>> rows;
  for (const auto& r : report.ranks)
    rows.push_back({OrNull(r.rank), OrNull(r.host), r.pid, Round(r.lateness_ms, 0.01),
                    Round(r.lateness_max_ms, 0.01), Round(r.step_ms, 0.01), r.steps,
                    int64_t{r.late ? 1 : 0}, OrNull(r.frame), Round(r.frame_share, 0.01)});
  if (format == OutputFormat::kTable)
    out << "Arrival at " << report.arrival << ", steps " << report.first_step << " to "
        << report.last_step << ", latest first:\n";
  PrintRows(format,
            {"rank", "host", "pid", "late_ms", "max_late_ms", "step_ms", "steps", "late", "frame",
             "frame_share"},
            rows, out);
  if (format != OutputFormat::kTable) return 0;
  std::string names;
  for (const auto& r : report.ranks) {
    if (!r.late) continue;
    char line[512];
    std::snprintf(line, sizeof line, "rank %lld arrives %.1f ms late (median of %lld steps",
                  static_cast<long long>(r.rank), r.lateness_ms, static_cast<long long>(r.steps));
    names += std::string(names.empty() ? "" : "\n") + line;
    if (r.step_ms > 0) {
      std::snprintf(line, sizeof line, ", %.0f%% of its %.1f ms step", 100 * r.lateness_ms / r.step_ms,
                    r.step_ms);
      names += line;
    }
    names += ")";
    if (!r.frame.empty()) {
      std::snprintf(line, sizeof line, "; while the others waited it was in %s (%.0f%% of samples)",
                    r.frame.c_str(), 100 * r.frame_share);
      names += line;
    }
  }
  out << "\n"
      << (names.empty() ? "No straggler: every rank arrives within 5 ms (or 10% of its step) of "
                          "the first."
                        : names)
      << "\n";
  return 0;
}

int PrintHang(const cluster::HangReport& report, OutputFormat format, std::ostream& out,
              std::ostream& err) {
  std::vector<std::vector<Cell>> rows;
  bool any = false;
  for (const auto& r : report.ranks) {
    any = any || r.state == "ok";
    rows.push_back({OrNull(r.rank), r.state, OrNull(r.step), OrNull(r.seq), OrNull(r.op),
                    r.state == "ok" ? Cell(Round(r.stalled_s, 0.1)) : Cell(std::monostate{}),
                    r.frames.empty() ? Cell(std::monostate{}) : Cell(r.frames[0]),
                    OrNull(r.error)});
  }
  PrintRows(format, {"rank", "state", "step", "collective", "op", "stalled_s", "frame", "why"},
            rows, out);
  if (!any && report.verdict.empty()) {
    err << "probing: no rank could be read: no verdict\n";
    return 1;
  }
  if (format != OutputFormat::kTable) {
    err << "probing: " << report.verdict << "\n";
    return 0;
  }
  out << "\n" << report.verdict << "\n";
  for (int64_t c : report.culprits)
    for (const auto& r : report.ranks) {
      if (r.rank != c || r.frames.empty()) continue;
      out << "\nrank " << r.rank << ", main thread:\n";
      for (size_t i = 0; i < r.frames.size(); ++i) out << "  #" << i << "  " << r.frames[i] << "\n";
    }
  return 0;
}

}  // namespace probing::cli
