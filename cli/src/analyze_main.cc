// `probing-analyze`: postmortem analysis of recordings (.ptrace files) and of the ring
// directories dead processes leave behind. Exit codes: 0 success, 1 failure, 2 bad usage.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <iostream>
#include <type_traits>

#include "printer.h"
#include "probing/analyzer/sql.h"
#include "probing/analyzer/trace_set.h"
#include "probing/format/tables.h"

namespace {

using probing::cli::Cell;

std::string FormatTime(int64_t ns) {
  time_t secs = static_cast<time_t>(ns / 1000000000);
  struct tm tm;
  gmtime_r(&secs, &tm);
  char buf[64];
  if (std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm) == 0) buf[0] = '\0';
  char ms[16];
  if (std::snprintf(ms, sizeof ms, ".%03d UTC", static_cast<int>((ns / 1000000) % 1000)) < 0)
    ms[0] = '\0';
  return std::string(buf) + ms;
}

void PrintSummary(const probing::analyzer::Summary& s) {
  std::cout << "Recording: " << s.segments << " segments";
  if (s.last_ts > s.first_ts || s.first_ts != 0)
    std::cout << ", " << FormatTime(s.first_ts) << " to " << FormatTime(s.last_ts) << " ("
              << static_cast<double>(s.last_ts - s.first_ts) / 1e9 << " s)";
  std::cout << "\n";
  for (const auto& p : s.processes) std::cout << "Process: " << p << "\n";
  std::cout << "\nEvents:\n";
  for (const auto& [kind, n] : s.events)
    if (n > 0) std::cout << "  " << kind << ": " << n << "\n";
  std::cout << "\nThreads (" << s.threads.size() << "):\n";
  for (const auto& t : s.threads) std::cout << "  " << t << "\n";
  if (s.steps > 0) std::cout << "\nTraining steps traced: " << s.steps << "\n";
  if (!s.top_functions.empty()) {
    std::cout << "\nTop functions (samples where innermost):\n";
    std::vector<std::vector<Cell>> rows;
    for (const auto& f : s.top_functions) rows.push_back({static_cast<int64_t>(f.count), f.name});
    probing::cli::PrintRows(probing::cli::OutputFormat::kTable, {"samples", "function"}, rows,
                            std::cout);
  }
  if (!s.top_modules.empty()) {
    std::cout << "\nTop modules (total traced time):\n";
    std::vector<std::vector<Cell>> rows;
    for (const auto& m : s.top_modules)
      rows.push_back({m.seconds, static_cast<int64_t>(m.count), m.name});
    probing::cli::PrintRows(probing::cli::OutputFormat::kTable, {"seconds", "calls", "module"},
                            rows, std::cout);
  }
}

// Prints every row of one ring table, as SQL would see it (SELECT * FROM table).
int PrintTable(const probing::analyzer::TraceSet& set, const std::string& name,
               probing::cli::OutputFormat format) {
  const auto* t = probing::format::FindTable(name);
  if (t == nullptr || t->source != probing::format::TableSource::kRing) {
    std::string known;
    for (const auto& k : probing::format::AllTables())
      if (k.source == probing::format::TableSource::kRing)
        known += (known.empty() ? "" : ", ") + std::string(k.name);
    std::cerr << "probing-analyze: no table " << name << " in recordings; known: " << known << "\n";
    return 1;
  }
  std::vector<std::string> columns;
  for (const auto& c : t->columns) columns.emplace_back(c.name);
  std::vector<std::vector<Cell>> rows;
  probing::format::RowContext ctx;
  for (const auto& seg : set.segments) {
    probing::format::SegmentRows(seg, t->id, ctx, [&](std::span<const probing::format::Value> r) {
      std::vector<Cell> row;
      row.reserve(r.size());
      for (const auto& v : r) {
        if (auto* i = std::get_if<int64_t>(&v))
          row.emplace_back(*i);
        else if (auto* d = std::get_if<double>(&v))
          row.emplace_back(*d);
        else if (auto* s = std::get_if<std::string_view>(&v))
          row.emplace_back(std::string(*s));
        else
          row.emplace_back(std::monostate{});
      }
      rows.push_back(std::move(row));
    });
  }
  probing::cli::PrintRows(format, columns, rows, std::cout);
  return 0;
}

void PrintStats(const probing::analyzer::TraceSet& set) {
  std::vector<std::vector<Cell>> rows;
  for (const auto& s : set.sources) {
    rows.push_back({s.path, s.kind, static_cast<int64_t>(s.segments_ok),
                    static_cast<int64_t>(s.segments_corrupt), static_cast<int64_t>(s.segments_lost),
                    static_cast<int64_t>(s.bytes_skipped),
                    std::string(s.kind == "ring" ? "-"
                                : s.used_index   ? "yes"
                                                 : "no (scanned)"),
                    std::string(s.truncated_tail ? "yes" : "no"), s.first_error});
  }
  probing::cli::PrintRows(probing::cli::OutputFormat::kTable,
                          {"source", "kind", "segments", "corrupt", "lost", "bytes_skipped",
                           "index", "cut_off", "first_error"},
                          rows, std::cout);
}

int Run(int argc, char** argv) {
  CLI::App app{
      "probing-analyze: postmortem analysis of Probing recordings.\n"
      "Reads .ptrace files (`probing record`) and the ring directories a process\n"
      "leaves under $PROBING_DATA_DIR/<pid>/. Damaged data is skipped and counted;\n"
      "everything whole still loads. With no other option, prints a summary."};
  app.set_version_flag("--version", "probing-analyze 0.1.0 (trace format v1)");
  std::vector<std::string> inputs;
  app.add_option("inputs", inputs,
                 "recordings: .ptrace files, ring files or ring directories; a last argument that "
                 "is not a path is SQL to run on them (tables: probing tables)")
      ->required();
  bool stats = false;
  app.add_flag("--stats", stats, "also show, per input, what loaded and what was skipped");
  std::string table;
  app.add_option("--table", table,
                 "print every row of one table instead of the summary (e.g. python.stacks)");
  std::string format_name = "table";
  app.add_option("--format", format_name, "how rows are printed: table, csv, json, jsonl")
      ->check(CLI::IsMember({"table", "csv", "json", "jsonl"}));

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? 0 : 2;
  }
  {
    std::string sql;
    std::error_code ec;
    if (inputs.size() > 1 && !std::filesystem::exists(inputs.back(), ec)) {
      sql = inputs.back();
      inputs.pop_back();
    }
    auto set = probing::analyzer::LoadTraces(inputs);
    if (!set.ok()) {
      std::cerr << "probing-analyze: " << set.status().message() << "\n";
      return 1;
    }
    if (!sql.empty()) {
      auto db = probing::analyzer::SqlDatabase::Create();
      if (!db.ok()) {
        std::cerr << "probing-analyze: " << db.status().message() << "\n";
        return 1;
      }
      auto st = (*db)->LoadSegments(set->segments);
      auto r = st.ok() ? (*db)->Query(sql) : probing::Result<probing::analyzer::QueryResult>(st);
      if (!r.ok()) {
        std::cerr << "probing-analyze: " << r.status().message() << "\n";
        return 1;
      }
      static_assert(std::is_same_v<Cell, probing::analyzer::SqlValue>);
      probing::cli::PrintRows(*probing::cli::ParseOutputFormat(format_name), r->columns, r->rows,
                              std::cout);
    } else if (!table.empty()) {
      int rc = PrintTable(*set, table, *probing::cli::ParseOutputFormat(format_name));
      if (rc != 0) return rc;
    } else {
      PrintSummary(probing::analyzer::Summarize(*set));
    }
    if (stats) {
      std::cout << "\nInputs:\n";
      PrintStats(*set);
    }
    uint64_t damaged = 0;
    for (const auto& s : set->sources) damaged += s.segments_corrupt + (s.bytes_skipped ? 1 : 0);
    if (damaged > 0 && !stats)
      std::cerr << "probing-analyze: some input was damaged and skipped; --stats tells what\n";
    return 0;
  }
}

}  // namespace

// Exceptions stop here, once: a one-line message and exit code 1.
int main(int argc, char** argv) {
  try {
    return Run(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "probing-analyze: " << e.what() << "\n";
    return 1;
  }
}
