// The SQL layer shared by live queries (probing -t PID query) and postmortem ones
// (probing-analyze FILE "SQL"): an SQLite database whose schemas `python`, `system` and
// `information_schema` hold the tables of format/tables.h, so the seeds' queries
// ("SELECT ... FROM python.torch_trace") run as written. Adds now() (Unix seconds) and
// rewrites `interval '5 minutes'` to seconds, as the seeds write time arithmetic.
//
//   PROBING_ASSIGN_OR_RETURN(auto db, Database::Create());
//   db->LoadSegments(set.segments);
//   PROBING_ASSIGN_OR_RETURN(QueryResult r, db->Query("SELECT count(*) FROM python.stacks"));
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "probing/base/cell.h"
#include "probing/base/status.h"
#include "probing/format/events.h"
#include "probing/format/tables.h"

namespace probing::sql {

struct QueryResult {
  std::vector<std::string> columns;
  std::vector<std::vector<Cell>> rows;
  bool truncated = false;  // QueryLimits::max_rows stopped it; more rows would have followed
};

// Bounds on one statement, for callers that run SQL someone else typed (`probing web`).
struct QueryLimits {
  // Reads only: any statement that would write (INSERT, CREATE, VACUUM INTO, ...), ATTACH or
  // DETACH a database, run a PRAGMA other than table_info/table_xinfo/table_list, or call
  // fts3_tokenizer is refused before it runs; so is more than one statement.
  bool read_only = false;
  double timeout_s = 0;  // > 0: a statement still running after this long is stopped
  size_t max_rows = 0;   // > 0: rows beyond this are not read (QueryResult::truncated)
};

struct SegmentsModuleAux;  // sql.cc: where a virtual table's segments come from

class Database {
 public:
  ~Database();
  // An in-memory database with every table of format/tables.h, empty.
  static Result<std::unique_ptr<Database>> Create();

  // Inserts the ring tables' rows of these segments (prepared statements, one transaction).
  // `only`: just these tables (the others stay empty); empty: every ring table.
  Status LoadSegments(const std::vector<format::Segment>& segments,
                      const std::vector<format::TableId>& only = {});
  // Makes a ring table a virtual table that reads these segments as it scans, with nothing
  // copied: the fastest way to a query that scans the table once (a live `count(*)` over 100 k
  // rows takes milliseconds). `segments` must outlive every query. A query that scans it many
  // times (a self-join) is better served by LoadSegments: a virtual table has no index.
  Status AttachSegments(const std::vector<format::Segment>& segments, format::TableId table);
  // The same, with the segments loaded by `load` when a query first scans the table (never,
  // if no query does), and kept. A failed load fails that query with the load's Status.
  using SegmentLoader = std::function<Result<std::vector<format::Segment>>()>;
  Status AttachLoader(format::TableId table, SegmentLoader load);
  // Several sets of segments read as one table `name` (e.g. "cluster.stacks": every rank of a
  // job): rows of ring table `table` from each part in turn, each followed by that part's
  // `extra` values in the `extra_columns` (name, SQL type). Nothing copied; the parts'
  // segments must outlive every query.
  struct Part {
    const std::vector<format::Segment>* segments = nullptr;
    std::vector<Cell> extra;
  };
  Status AttachParts(const std::string& name, format::TableId table,
                     const std::vector<std::pair<std::string, std::string>>& extra_columns,
                     std::vector<Part> parts);
  // Inserts rows into a table of kind kControl (python.backtrace, df_settings) or a custom one
  // (python.<name>, created with the given columns).
  Status LoadRows(const std::string& table, const std::vector<std::string>& columns,
                  const std::vector<std::string>& types,
                  const std::vector<std::vector<Cell>>& rows);

  // `alias` (a bare name) reads as `table`: a temporary view, e.g. my_data for python.my_data.
  Status AddAlias(const std::string& alias, const std::string& table);

  // Writes every table into a new SQLite file at `path` (written under a temporary name in the
  // same directory and renamed once complete; nothing is left behind on failure), each named
  // as here, "python.stacks" (other clients quote it: SELECT * FROM "python.stacks").
  Status SaveTo(const std::string& path);

  // Runs one statement. Bad SQL gives SQLite's message; an unknown table lists the known ones.
  Result<QueryResult> Query(const std::string& sql, const QueryLimits& limits = {});
  uint64_t rows_loaded() const { return rows_loaded_; }

 private:
  explicit Database(void* db) : db_(db) {}
  Status Exec(const std::string& sql);
  Status Attach(format::TableId table, std::unique_ptr<SegmentsModuleAux> aux,
                const std::string& name = "");
  std::string KnownTables();
  void* db_;  // sqlite3*
  uint64_t rows_loaded_ = 0;
  Status load_failure_;                         // the first AttachLoader load that failed
  std::vector<std::shared_ptr<void>> modules_;  // aux data of AttachSegments' modules
};

// `interval '5 minutes'` -> `300` (seconds), for the seeds' time arithmetic.
std::string RewriteIntervals(const std::string& sql);

}  // namespace probing::sql
