// `probing`: the command line for a running (or dead) Python process with the recorder on.
// Argument parsing and printing only; the work is in the libraries. Exit codes: 0 success,
// 1 a failed operation, 2 bad usage.
#include <CLI/CLI.hpp>
#include <iostream>

#include "printer.h"
#include "probing/format/tables.h"

namespace {

using probing::cli::Cell;
using probing::cli::OutputFormat;

int CmdTables(OutputFormat format) {
  std::vector<std::vector<Cell>> rows;
  for (const auto& t : probing::format::AllTables()) {
    for (const auto& c : t.columns) {
      rows.push_back(
          {std::string(t.name), std::string(c.name),
           std::string(probing::format::ColumnTypeName(c.type)),
           std::string(t.source == probing::format::TableSource::kRing ? "rings" : "live process"),
           std::string(c.description)});
    }
  }
  probing::cli::PrintRows(format, {"table", "column", "type", "source", "description"}, rows,
                          std::cout);
  return 0;
}

int Run(int argc, char** argv) {
  CLI::App app{
      "probing: look inside a running Python/PyTorch process.\n"
      "Tables and columns: `probing tables`; formats: docs/format.md."};
  app.set_version_flag("--version", "probing 0.1.0 (trace format v1)");
  app.require_subcommand(1);
  std::string target;
  app.add_option("-t,--target", target, "target process: a pid, or host:port")
      ->envname("PROBING_TARGET");
  std::string format_name = "table";
  app.add_option("--format", format_name, "how rows are printed: table, csv, json, jsonl")
      ->check(CLI::IsMember({"table", "csv", "json", "jsonl"}));

  auto* tables = app.add_subcommand("tables", "list every SQL table and its columns");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? 0 : 2;
  }
  OutputFormat format = *probing::cli::ParseOutputFormat(format_name);
  if (*tables) return CmdTables(format);
  return 2;
}

}  // namespace

// Exceptions stop here, once: a one-line message and exit code 1.
int main(int argc, char** argv) {
  try {
    return Run(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "probing: " << e.what() << "\n";
    return 1;
  }
}
