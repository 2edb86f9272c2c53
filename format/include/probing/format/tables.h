// The SQL tables, defined once: names, columns, types, and how a decoded segment becomes rows.
// The live path (cli) and the postmortem path (analyzer) both use this, so a query means the
// same in both. Documented in docs/tables.md (kept in sync by tables_doc_test).
//
//   RowContext ctx;
//   SegmentRows(segment, TableId::kStacks, ctx, [&](std::span<const Value> row) { ... });
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <variant>

#include "probing/format/events.h"

namespace probing::format {

enum class ColumnType { kInteger, kReal, kText };
const char* ColumnTypeName(ColumnType t);  // "INTEGER", "REAL", "TEXT" (SQLite affinities)

struct Column {
  std::string_view name;
  ColumnType type;
  std::string_view description;
};

// Where a table's rows come from.
enum class TableSource {
  kRing,     // decoded from segments: live rings and .ptrace files alike
  kControl,  // asked of the live process over its control socket
};

enum class TableId {
  kStacks,
  kTorchTrace,
  kVariables,
  kMemory,
  kMetrics,
  kCollectives,
  kProcess,
  kBacktrace,
  kSettings,
  kGpu,
  kAllocations,
  kTorchSteps,
};

struct TableSchema {
  TableId id;
  std::string_view name;  // "python.stacks"
  TableSource source;
  std::string_view description;
  std::span<const Column> columns;
};

std::span<const TableSchema> AllTables();
const TableSchema& GetTable(TableId id);
// nullptr when no table has that name.
const TableSchema* FindTable(std::string_view name);
// The stream (ring) a ring table's rows come from; none for system.process (every segment
// carries its process) and for the live-only tables.
std::optional<Stream> TableStream(TableId id);

// A cell. Text views point into the segment (or the context) and live as long as it does.
using Value = std::variant<std::monostate, int64_t, double, std::string_view>;
using RowCallback = std::function<void(std::span<const Value>)>;

// State that spans segments while rows are produced from a sequence of them.
struct RowContext {
  // system.process is one row per process: (pid, start_ts) already emitted.
  std::set<std::string> seen_processes;  // pid, start and identity, as system.process keys them
};

// One python.stacks row: the frame at call site `callsite`, `depth` frames from the innermost,
// of sample `sample` of `seg`. SegmentRows emits one per frame; a reader walking the frames
// itself fills rows with it one at a time.
void StackRow(const Segment& seg, size_t sample, uint32_t callsite, int64_t depth,
              std::span<Value> row);

// Emits the rows of `table` (a kRing table) found in `seg`. Rows of one segment come in the
// order the segment holds them. Stack samples produce one row per frame.
void SegmentRows(const Segment& seg, TableId table, RowContext& ctx, const RowCallback& emit);

}  // namespace probing::format
