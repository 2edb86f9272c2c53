#include "probing/sql/sql.h"

#include <sqlite3.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <regex>

#include "probing/base/clock.h"

namespace probing::sql {
namespace {

using format::AllTables;
using format::ColumnTypeName;
using format::TableSchema;
using format::Value;

sqlite3* Db(void* p) { return static_cast<sqlite3*>(p); }

void NowFunction(sqlite3_context* ctx, int, sqlite3_value**) {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  sqlite3_result_double(ctx, static_cast<double>(ts.tv_sec) + ts.tv_nsec / 1e9);
}

// hour(t): the hour of the day (0-23, local time) of t, seconds since the Unix epoch, as the
// seeds' "GROUP BY hour(timestamp)" means it; NULL for NULL.
void HourFunction(sqlite3_context* ctx, int, sqlite3_value** argv) {
  if (sqlite3_value_type(argv[0]) == SQLITE_NULL) {
    sqlite3_result_null(ctx);
    return;
  }
  const auto t = static_cast<time_t>(sqlite3_value_double(argv[0]));
  tm local{};
  if (localtime_r(&t, &local) == nullptr) {
    sqlite3_result_null(ctx);
    return;
  }
  sqlite3_result_int(ctx, local.tm_hour);
}

// The authorizer of a read-only statement: reads, functions and the PRAGMAs that only describe
// tables; everything else (writes, ATTACH, DETACH, transactions) is refused while it is prepared.
int ReadOnlyAuthorizer(void* why, int action, const char* a1, const char* a2, const char*,
                       const char*) {
  auto refuse = [&](std::string what) {
    *static_cast<std::string*>(why) = std::move(what);
    return SQLITE_DENY;
  };
  switch (action) {
    case SQLITE_SELECT:
    case SQLITE_READ:
    case SQLITE_RECURSIVE: return SQLITE_OK;
    case SQLITE_FUNCTION:
      // fts3_tokenizer hands out pointers (and takes them); nothing a read needs. The
      // function's name comes second.
      if (a2 != nullptr && sqlite3_stricmp(a2, "fts3_tokenizer") == 0)
        return refuse("fts3_tokenizer() is not allowed");
      return SQLITE_OK;
    case SQLITE_PRAGMA:
      if (a1 != nullptr &&
          (sqlite3_stricmp(a1, "table_info") == 0 || sqlite3_stricmp(a1, "table_xinfo") == 0 ||
           sqlite3_stricmp(a1, "table_list") == 0))
        return SQLITE_OK;
      return refuse(std::string("PRAGMA ") + (a1 != nullptr ? a1 : "") + " is not allowed");
    case SQLITE_ATTACH:
    case SQLITE_DETACH: return refuse("ATTACH and DETACH are not allowed");
    default: return refuse("only reading statements (SELECT, WITH) are allowed");
  }
}

int PastDeadline(void* deadline_ns) {
  return MonotonicNs() > *static_cast<int64_t*>(deadline_ns) ? 1 : 0;
}

// Whether `tail` (what follows the first statement) holds anything but blanks, semicolons and
// comments.
bool MoreStatements(const char* tail) {
  for (const char* p = tail; p != nullptr && *p != '\0';) {
    if (std::isspace(static_cast<unsigned char>(*p)) || *p == ';') {
      ++p;
    } else if (p[0] == '-' && p[1] == '-') {
      while (*p != '\0' && *p != '\n') ++p;
    } else if (p[0] == '/' && p[1] == '*') {
      const char* end = std::strstr(p + 2, "*/");
      if (end == nullptr) return false;
      p = end + 2;
    } else {
      return true;
    }
  }
  return false;
}

// Installs a statement's limits on the connection and takes them off again on every path.
class LimitsGuard {
 public:
  LimitsGuard(sqlite3* db, const QueryLimits& limits) : db_(db) {
    if (limits.read_only) sqlite3_set_authorizer(db_, ReadOnlyAuthorizer, &refusal_);
    if (limits.timeout_s > 0) {
      deadline_ns_ = MonotonicNs() + static_cast<int64_t>(limits.timeout_s * 1e9);
      sqlite3_progress_handler(db_, 1000, PastDeadline, &deadline_ns_);
    }
  }
  ~LimitsGuard() {
    sqlite3_set_authorizer(db_, nullptr, nullptr);
    sqlite3_progress_handler(db_, 0, nullptr, nullptr);
  }
  LimitsGuard(const LimitsGuard&) = delete;
  LimitsGuard& operator=(const LimitsGuard&) = delete;
  const std::string& refusal() const { return refusal_; }

 private:
  sqlite3* db_;
  std::string refusal_;
  int64_t deadline_ns_ = 0;
};

struct Stmt {
  sqlite3_stmt* s = nullptr;
  ~Stmt() { sqlite3_finalize(s); }
};

// Binds one cell; text is copied (SQLITE_TRANSIENT) unless the caller keeps it alive.
void Bind(sqlite3_stmt* st, int col, const Value& v) {
  if (auto* i = std::get_if<int64_t>(&v))
    sqlite3_bind_int64(st, col, *i);
  else if (auto* d = std::get_if<double>(&v))
    sqlite3_bind_double(st, col, *d);
  else if (auto* s = std::get_if<std::string_view>(&v))
    sqlite3_bind_text(st, col, s->data(), static_cast<int>(s->size()), SQLITE_STATIC);
  else
    sqlite3_bind_null(st, col);
}
void Bind(sqlite3_stmt* st, int col, const Cell& v) {
  if (auto* s = std::get_if<std::string>(&v))
    sqlite3_bind_text(st, col, s->data(), static_cast<int>(s->size()), SQLITE_TRANSIENT);
  else if (auto* i = std::get_if<int64_t>(&v))
    sqlite3_bind_int64(st, col, *i);
  else if (auto* d = std::get_if<double>(&v))
    sqlite3_bind_double(st, col, *d);
  else
    sqlite3_bind_null(st, col);
}

// "(ts REAL, thread_id INTEGER, ...)": a table's columns as CREATE TABLE declares them.
std::string ColumnList(const TableSchema& t) {
  std::string out = "(";
  for (size_t i = 0; i < t.columns.size(); ++i)
    out +=
        (i ? ", " : "") + std::string(t.columns[i].name) + " " + ColumnTypeName(t.columns[i].type);
  return out + ")";
}

// An identifier as SQL reads it, whatever it holds: "a""b" for a"b.
std::string QuoteId(const std::string& name) {
  std::string out = "\"";
  for (char c : name) out += c == '"' ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

std::string Quoted(const std::string& table) {  // python.stacks -> "python"."stacks"
  size_t dot = table.find('.');
  if (dot == std::string::npos) return QuoteId(table);
  return QuoteId(table.substr(0, dot)) + "." + QuoteId(table.substr(dot + 1));
}

std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// The declared types a custom table's column may have (they are written into CREATE TABLE).
bool KnownType(const std::string& type) {
  const std::string t = Lower(type);
  return t.empty() || t == "text" || t == "integer" || t == "real" || t == "blob" ||
         t == "numeric";
}

// ---- Ring tables as virtual tables over decoded segments (AttachSegments) ----

}  // namespace

// Where a virtual table's segments come from: given, or loaded on the first scan; or several
// members' segments (AttachParts), each with constant values for the extra columns.
struct SegmentsModuleAux {
  const std::vector<format::Segment>* segments = nullptr;
  Database::SegmentLoader load;
  std::vector<format::Segment> loaded;
  std::string error;
  Status* failed = nullptr;  // the database's: a query that fails for this says why, unchanged
  std::vector<Database::Part> parts;
  std::vector<std::pair<std::string, std::string>> extra_columns;  // name, SQL type
  std::vector<std::vector<format::Value>> extra_values;            // per part, views of `parts`

  const std::vector<format::Segment>* Get() {
    if (segments == nullptr && error.empty() && load) {
      auto r = load();
      if (r.ok()) {
        loaded = std::move(r).value();
        segments = &loaded;
      } else {
        error = r.status().message();
        if (failed != nullptr && failed->ok()) *failed = r.status();
      }
    }
    return segments;
  }
};

namespace {

struct SegmentsTable {
  sqlite3_vtab base;  // first: SQLite sees a sqlite3_vtab*
  SegmentsModuleAux* source;
  // What a scan walks: one set of segments, or one per cluster member (with its extra values).
  std::vector<const std::vector<format::Segment>*> sets;
  format::TableId id;
  size_t columns;  // the ring table's own; extra columns come after them
};

struct SegmentsCursor {
  sqlite3_vtab_cursor base;  // first
  SegmentsTable* table;
  size_t set = 0;  // which of table->sets
  size_t next_segment = 0;
  int64_t rowid = 0;
  bool at_end = true;
  // python.stacks, the big one, is walked frame by frame and a row is made only when a column
  // is asked for (count(*) asks for none).
  const format::Segment* seg = nullptr;
  size_t sample = 0;
  uint32_t callsite = 0;
  int64_t depth = 0;
  std::array<Value, 10> frame_row;
  int64_t frame_row_id = -1;
  // The other tables (one row per event, few): the current segment's rows, made at once.
  std::vector<Value> cells;
  size_t row = 0, rows = 0;
  format::RowContext ctx;

  bool stacks() const { return table->id == format::TableId::kStacks; }

  // Stacks: from sample `sample` of `seg` on, the first sample with a frame, else the next
  // segment's. Others: the next segment that has rows.
  void Seek() {
    for (;;) {
      SeekInSet();
      if (!at_end || set + 1 >= table->sets.size()) return;
      ++set;  // the next member's segments; its processes are its own
      next_segment = 0;
      seg = nullptr;
      sample = 0;
      ctx = {};
    }
  }

  void SeekInSet() {
    const auto& segs = *table->sets[set];
    if (stacks()) {
      for (;;) {
        if (seg != nullptr) {
          for (; sample < seg->samples.size(); ++sample) {
            callsite = seg->samples[sample].callsite;
            if (callsite != 0) {
              depth = 0;
              at_end = false;
              return;
            }
          }
        }
        if (next_segment >= segs.size()) {
          at_end = true;
          return;
        }
        seg = &segs[next_segment++];
        sample = 0;
      }
    }
    cells.clear();
    row = rows = 0;
    while (rows == 0 && next_segment < segs.size()) {
      format::SegmentRows(segs[next_segment++], table->id, ctx, [&](std::span<const Value> r) {
        cells.insert(cells.end(), r.begin(), r.end());
      });
      rows = table->columns ? cells.size() / table->columns : 0;
    }
    at_end = rows == 0;
  }

  void Next() {
    ++rowid;
    if (stacks()) {
      // Parents always precede children; the depth cap guards against a corrupt cycle.
      callsite = seg->callsites[callsite].parent;
      if (callsite != 0 && ++depth < 100000) return;
      ++sample;
      Seek();
      return;
    }
    if (++row >= rows) Seek();
  }

  const Value& At(int col) {
    if (static_cast<size_t>(col) >= table->columns)
      return table->source->extra_values[set][static_cast<size_t>(col) - table->columns];
    if (stacks()) {
      if (frame_row_id != rowid) {
        format::StackRow(*seg, sample, callsite, depth, frame_row);
        frame_row_id = rowid;
      }
      return frame_row[static_cast<size_t>(col)];
    }
    return cells[row * table->columns + static_cast<size_t>(col)];
  }
};

int SegConnect(sqlite3* db, void* aux, int argc, const char* const* argv, sqlite3_vtab** out,
               char** err) {
  if (argc < 4) {
    *err = sqlite3_mprintf("probing_segments needs a table id");
    return SQLITE_ERROR;
  }
  const auto id = static_cast<format::TableId>(std::atoi(argv[3]));
  const TableSchema& t = format::GetTable(id);
  auto* source = static_cast<SegmentsModuleAux*>(aux);
  std::string columns = ColumnList(t);
  for (const auto& [name, type] : source->extra_columns)
    columns.insert(columns.size() - 1, ", \"" + name + "\" " + type);
  int rc = sqlite3_declare_vtab(db, ("CREATE TABLE x" + columns).c_str());
  if (rc != SQLITE_OK) return rc;
  // Reading recorded rows has no side effects: usable in views (the seeds' views) while the
  // schema is not trusted (SQLITE_DBCONFIG_TRUSTED_SCHEMA off).
  sqlite3_vtab_config(db, SQLITE_VTAB_INNOCUOUS);
  auto* tab = new SegmentsTable{};
  tab->source = source;
  tab->id = id;
  tab->columns = t.columns.size();
  *out = &tab->base;
  return SQLITE_OK;
}

int SegBestIndex(sqlite3_vtab*, sqlite3_index_info* info) {
  info->estimatedCost = 1e6;  // a full scan: no constraint is used
  return SQLITE_OK;
}

int SegDisconnect(sqlite3_vtab* v) {
  delete reinterpret_cast<SegmentsTable*>(v);
  return SQLITE_OK;
}

int SegOpen(sqlite3_vtab* v, sqlite3_vtab_cursor** out) {
  auto* c = new SegmentsCursor{};
  c->table = reinterpret_cast<SegmentsTable*>(v);
  *out = &c->base;
  return SQLITE_OK;
}

int SegClose(sqlite3_vtab_cursor* c) {
  delete reinterpret_cast<SegmentsCursor*>(c);
  return SQLITE_OK;
}

int SegFilter(sqlite3_vtab_cursor* cur, int, const char*, int, sqlite3_value**) {
  auto* c = reinterpret_cast<SegmentsCursor*>(cur);
  SegmentsModuleAux* source = c->table->source;
  c->table->sets.clear();
  if (!source->parts.empty()) {
    for (const auto& part : source->parts) c->table->sets.push_back(part.segments);
  } else {
    const std::vector<format::Segment>* segments = source->Get();
    if (segments == nullptr) {
      sqlite3_free(c->table->base.zErrMsg);
      c->table->base.zErrMsg = sqlite3_mprintf("%s", source->error.c_str());
      return SQLITE_ERROR;
    }
    c->table->sets.push_back(segments);
  }
  c->set = 0;
  c->next_segment = 0;
  c->rowid = 0;
  c->frame_row_id = -1;
  c->seg = nullptr;
  c->sample = 0;
  c->ctx = {};
  c->Seek();
  return SQLITE_OK;
}

int SegNext(sqlite3_vtab_cursor* cur) {
  reinterpret_cast<SegmentsCursor*>(cur)->Next();
  return SQLITE_OK;
}

int SegEof(sqlite3_vtab_cursor* cur) {
  return reinterpret_cast<SegmentsCursor*>(cur)->at_end ? 1 : 0;
}

int SegColumn(sqlite3_vtab_cursor* cur, sqlite3_context* ctx, int col) {
  const Value& v = reinterpret_cast<SegmentsCursor*>(cur)->At(col);
  if (auto* i = std::get_if<int64_t>(&v))
    sqlite3_result_int64(ctx, *i);
  else if (auto* d = std::get_if<double>(&v))
    sqlite3_result_double(ctx, *d);
  else if (auto* s = std::get_if<std::string_view>(&v))
    sqlite3_result_text(ctx, s->data(), static_cast<int>(s->size()),
                        SQLITE_STATIC);  // segments outlive queries
  else
    sqlite3_result_null(ctx);
  return SQLITE_OK;
}

int SegRowid(sqlite3_vtab_cursor* cur, sqlite3_int64* out) {
  *out = reinterpret_cast<SegmentsCursor*>(cur)->rowid;
  return SQLITE_OK;
}

const sqlite3_module* SegmentsModule() {
  static const sqlite3_module m = [] {
    sqlite3_module mod{};
    mod.xCreate = SegConnect;
    mod.xConnect = SegConnect;
    mod.xBestIndex = SegBestIndex;
    mod.xDisconnect = SegDisconnect;
    mod.xDestroy = SegDisconnect;
    mod.xOpen = SegOpen;
    mod.xClose = SegClose;
    mod.xFilter = SegFilter;
    mod.xNext = SegNext;
    mod.xEof = SegEof;
    mod.xColumn = SegColumn;
    mod.xRowid = SegRowid;
    return mod;
  }();
  return &m;
}

}  // namespace

std::string RewriteIntervals(const std::string& sql) {
  static const std::regex re(
      R"(interval\s+'\s*([0-9]+(?:\.[0-9]+)?)\s*(second|sec|minute|min|hour|day)s?\s*')",
      std::regex::icase);
  std::string out;
  auto begin = std::sregex_iterator(sql.begin(), sql.end(), re);
  size_t last = 0;
  for (auto it = begin; it != std::sregex_iterator(); ++it) {
    const auto& m = *it;
    double n = std::stod(m[1].str());
    std::string unit = m[2].str();
    for (auto& c : unit) c = static_cast<char>(tolower(c));
    double mult = unit.rfind("sec", 0) == 0   ? 1
                  : unit.rfind("min", 0) == 0 ? 60
                  : unit == "hour"            ? 3600
                                              : 86400;
    out += sql.substr(last, static_cast<size_t>(m.position()) - last);
    char buf[64];
    if (snprintf(buf, sizeof buf, "%.17g", n * mult) < 0) buf[0] = '\0';
    out += buf;
    last = static_cast<size_t>(m.position() + m.length());
  }
  return out + sql.substr(last);
}

Database::~Database() { sqlite3_close(Db(db_)); }

Result<std::unique_ptr<Database>> Database::Create() {
  // Loading is most of the work: no memory statistics and no mutex on this connection (each
  // Database is used by one thread at a time) save a fifth of it.
  static const bool configured = [] {
    sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);  // before SQLite initializes; harmless after
    return true;
  }();
  (void)configured;
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(":memory:", &db,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                      nullptr) != SQLITE_OK) {
    sqlite3_close(db);
    return Internal("cannot open an in-memory SQLite database");
  }
  std::unique_ptr<Database> d(new Database(db));
  // Defensive: no writable schema, no shadow-table writes, no extensions, no two-argument
  // fts3_tokenizer, whoever's the statement; what a statement someone else typed may do is
  // QueryLimits::read_only's (ReadOnlyAuthorizer).
  sqlite3_db_config(db, SQLITE_DBCONFIG_DEFENSIVE, 1, nullptr);
  sqlite3_db_config(db, SQLITE_DBCONFIG_ENABLE_LOAD_EXTENSION, 0, nullptr);
  sqlite3_db_config(db, SQLITE_DBCONFIG_ENABLE_FTS3_TOKENIZER, 0, nullptr);
  sqlite3_db_config(db, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, nullptr);
  sqlite3_limit(db, SQLITE_LIMIT_LENGTH, 256 << 20);  // one value; our rows hold far less
  sqlite3_create_function(db, "now", 0, SQLITE_UTF8, nullptr, NowFunction, nullptr, nullptr);
  sqlite3_create_function(db, "hour", 1, SQLITE_UTF8 | SQLITE_DETERMINISTIC, nullptr,
                          HourFunction, nullptr, nullptr);
  // Each table-name prefix is a schema of its own, so "python.stacks" is a real table name.
  for (const char* schema : {"python", "system", "information_schema", "cluster"})
    PROBING_RETURN_IF_ERROR(d->Exec(std::string("ATTACH DATABASE ':memory:' AS ") + schema));
  PROBING_RETURN_IF_ERROR(d->Exec("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF"));
  for (const TableSchema& t : AllTables()) {
    PROBING_RETURN_IF_ERROR(
        d->Exec("CREATE TABLE IF NOT EXISTS " + Quoted(std::string(t.name)) + " " + ColumnList(t)));
  }
  // The seeds' comm_metrics (docs/tables.md): point-to-point latency per (source, destination),
  // and for a collective, this rank's wait on the others (src_rank NULL: "the others").
  PROBING_RETURN_IF_ERROR(d->Exec(
      "CREATE TEMP VIEW comm_metrics AS SELECT "
      "CASE WHEN op IN ('send', 'isend') THEN rank WHEN op IN ('recv', 'irecv') THEN peer END "
      "AS src_rank, "
      "CASE WHEN op IN ('send', 'isend') THEN peer ELSE rank END AS dst_rank, "
      "duration * 1000.0 AS latency_ms, op, process_group, seq, bytes, time AS timestamp, step, "
      "rank, pid FROM python.collectives WHERE duration IS NOT NULL"));
  // The seeds' other tables, over what the rings hold (docs/tables.md, "The seeds' views").
  PROBING_RETURN_IF_ERROR(d->Exec(
      "CREATE TEMP VIEW memory_usage AS SELECT ts AS timestamp, rss / 1048576.0 AS memory_mb, "
      "rss, vms, py_blocks, threads, cuda_allocated / 1048576.0 AS cuda_allocated_mb, "
      "cuda_reserved / 1048576.0 AS cuda_reserved_mb, pid FROM python.memory"));
  PROBING_RETURN_IF_ERROR(d->Exec(
      "CREATE TEMP VIEW profiling_data AS SELECT operation_name, stage, duration_ms, timestamp, "
      "step, seq, thread_id, rank, pid FROM python.torch_trace"));
  PROBING_RETURN_IF_ERROR(d->Exec("CREATE TEMP VIEW gpu_metrics AS SELECT * FROM system.gpu"));
  PROBING_RETURN_IF_ERROR(
      d->Exec("CREATE TEMP VIEW memory_allocations AS SELECT * FROM python.allocations"));
  PROBING_RETURN_IF_ERROR(d->Exec(
      "CREATE TEMP VIEW training_logs AS SELECT step, "
      "max(CASE WHEN name = 'epoch' THEN CAST(value AS INTEGER) END) AS epoch, "
      "max(CASE WHEN name = 'loss' THEN CAST(value AS REAL) END) AS loss, "
      "max(CASE WHEN name IN ('lr', 'learning_rate') THEN CAST(value AS REAL) END) AS lr, "
      "max(CASE WHEN name IN ('acc', 'accuracy') THEN CAST(value AS REAL) END) AS accuracy, "
      "max(time) AS timestamp, pid FROM python.variables GROUP BY pid, step"));
  return d;
}

Status Database::AttachSegments(const std::vector<format::Segment>& segments,
                                format::TableId table) {
  auto aux = std::make_unique<SegmentsModuleAux>();
  aux->segments = &segments;
  return Attach(table, std::move(aux));
}

Status Database::AttachLoader(format::TableId table, SegmentLoader load) {
  auto aux = std::make_unique<SegmentsModuleAux>();
  aux->load = std::move(load);
  aux->failed = &load_failure_;
  return Attach(table, std::move(aux));
}

// One module per table: the module's aux data says where its segments come from.
Status Database::Attach(format::TableId table, std::unique_ptr<SegmentsModuleAux> aux,
                        const std::string& name) {
  const TableSchema& t = format::GetTable(table);
  if (t.source != format::TableSource::kRing)
    return InvalidArgument(std::string(t.name) + " is not read from segments");
  const std::string module = "probing_segments_" + std::to_string(modules_.size());
  if (sqlite3_create_module_v2(Db(db_), module.c_str(), SegmentsModule(), aux.get(), nullptr) !=
      SQLITE_OK)
    return Internal(sqlite3_errmsg(Db(db_)));
  modules_.push_back(std::move(aux));
  const std::string quoted = Quoted(name.empty() ? std::string(t.name) : name);
  PROBING_RETURN_IF_ERROR(Exec("DROP TABLE IF EXISTS " + quoted));
  return Exec("CREATE VIRTUAL TABLE " + quoted + " USING " + module + "(" +
              std::to_string(static_cast<int>(table)) + ")");
}

Status Database::AttachParts(const std::string& name, format::TableId table,
                             const std::vector<std::pair<std::string, std::string>>& extra_columns,
                             std::vector<Part> parts) {
  if (name.find('.') == std::string::npos)
    return InvalidArgument("a table name needs its schema: " + name);
  for (const auto& [column, type] : extra_columns)
    for (const auto& c : format::GetTable(table).columns)
      if (column == c.name)
        return InvalidArgument(name + " already has a column " + column + " (from " +
                               std::string(format::GetTable(table).name) + ")");
  auto aux = std::make_unique<SegmentsModuleAux>();
  aux->parts = std::move(parts);
  aux->extra_columns = extra_columns;
  for (const Part& p : aux->parts) {
    if (p.segments == nullptr || p.extra.size() != extra_columns.size())
      return InvalidArgument("each part of " + name + " needs its segments and " +
                             std::to_string(extra_columns.size()) + " extra values");
    std::vector<format::Value> values;
    for (const Cell& c : p.extra) {
      if (auto* i = std::get_if<int64_t>(&c))
        values.emplace_back(*i);
      else if (auto* d = std::get_if<double>(&c))
        values.emplace_back(*d);
      else if (auto* str = std::get_if<std::string>(&c))
        values.emplace_back(std::string_view(*str));  // the part's string: lives in aux
      else
        values.emplace_back(std::monostate{});
    }
    aux->extra_values.push_back(std::move(values));
  }
  return Attach(table, std::move(aux), name);
}

Status Database::Exec(const std::string& sql) {
  char* err = nullptr;
  if (sqlite3_exec(Db(db_), sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err ? err : "error";
    sqlite3_free(err);
    return InvalidArgument(msg);
  }
  return Status::Ok();
}

Status Database::LoadSegments(const std::vector<format::Segment>& segments,
                              const std::vector<format::TableId>& only) {
  PROBING_RETURN_IF_ERROR(Exec("BEGIN"));
  format::RowContext ctx;
  for (const TableSchema& t : AllTables()) {
    if (t.source != format::TableSource::kRing) continue;
    if (!only.empty() && std::find(only.begin(), only.end(), t.id) == only.end()) continue;
    std::string sql = "INSERT INTO " + Quoted(std::string(t.name)) + " VALUES (";
    for (size_t i = 0; i < t.columns.size(); ++i) sql += i ? ",?" : "?";
    Stmt st;
    if (sqlite3_prepare_v2(Db(db_), (sql + ")").c_str(), -1, &st.s, nullptr) != SQLITE_OK)
      return Internal(sqlite3_errmsg(Db(db_)));
    for (const format::Segment& seg : segments) {
      format::SegmentRows(seg, t.id, ctx, [&](std::span<const Value> row) {
        for (size_t i = 0; i < row.size(); ++i) Bind(st.s, static_cast<int>(i) + 1, row[i]);
        sqlite3_step(st.s);
        sqlite3_reset(st.s);
        ++rows_loaded_;
      });
    }
  }
  return Exec("COMMIT");
}

Status Database::LoadRows(const std::string& table, const std::vector<std::string>& columns,
                          const std::vector<std::string>& types,
                          const std::vector<std::vector<Cell>>& rows) {
  // Names and types come from the target (a custom table's columns): quoted, and the types
  // checked, so that nothing in them is read as SQL.
  if (format::FindTable(table) == nullptr) {  // a custom table: create it as described
    std::string sql = "CREATE TABLE IF NOT EXISTS " + Quoted(table) + " (";
    for (size_t i = 0; i < columns.size(); ++i) {
      const std::string type = i < types.size() ? types[i] : "TEXT";
      if (!KnownType(type))
        return InvalidArgument("table " + table + ": column " + columns[i] + " has the type '" +
                               type + "'; a column is TEXT, INTEGER, REAL, NUMERIC or BLOB");
      sql += (i ? ", " : "") + QuoteId(columns[i]) + " " + type;
    }
    Stmt create;
    if (sqlite3_prepare_v2(Db(db_), (sql + ")").c_str(), -1, &create.s, nullptr) != SQLITE_OK ||
        sqlite3_step(create.s) != SQLITE_DONE)
      return InvalidArgument("table " + table + ": " + sqlite3_errmsg(Db(db_)));
  }
  std::string sql = "INSERT INTO " + Quoted(table) + " (";
  for (size_t i = 0; i < columns.size(); ++i) sql += (i ? ", " : "") + QuoteId(columns[i]);
  sql += ") VALUES (";
  for (size_t i = 0; i < columns.size(); ++i) sql += i ? ",?" : "?";
  Stmt st;
  if (sqlite3_prepare_v2(Db(db_), (sql + ")").c_str(), -1, &st.s, nullptr) != SQLITE_OK)
    return Internal(std::string("loading ") + table + ": " + sqlite3_errmsg(Db(db_)));
  PROBING_RETURN_IF_ERROR(Exec("BEGIN"));
  for (const auto& row : rows) {
    for (size_t i = 0; i < row.size() && i < columns.size(); ++i)
      Bind(st.s, static_cast<int>(i) + 1, row[i]);
    sqlite3_step(st.s);
    sqlite3_reset(st.s);
    ++rows_loaded_;
  }
  return Exec("COMMIT");
}

Status Database::SaveTo(const std::string& path) {
  // A new file beside the destination (so that the rename cannot cross file systems), named
  // so that it clobbers nothing; removed, with any journal, on every failure.
  const size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : path.substr(0, slash + 1);
  const std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
  std::string tmp = (slash == std::string::npos ? "./" : dir) + "." + base + ".XXXXXX";
  const int fd = mkstemp(tmp.data());
  if (fd < 0)
    return InvalidArgument("cannot write " + path + ": " + std::strerror(errno) +
                           " (creating a temporary file beside it)");
  fchmod(fd, 0644);
  close(fd);
  auto discard = [&tmp] {
    std::remove(tmp.c_str());
    std::remove((tmp + "-journal").c_str());
  };
  Stmt attach;
  if (sqlite3_prepare_v2(Db(db_), "ATTACH DATABASE ? AS saved", -1, &attach.s, nullptr) !=
      SQLITE_OK) {
    discard();
    return Internal(sqlite3_errmsg(Db(db_)));
  }
  sqlite3_bind_text(attach.s, 1, tmp.c_str(), -1, SQLITE_TRANSIENT);
  if (sqlite3_step(attach.s) != SQLITE_DONE) {
    const std::string why = sqlite3_errmsg(Db(db_));
    discard();
    return InvalidArgument("cannot create " + tmp + ": " + why);
  }
  // No journal file (defensive mode refuses journal_mode=OFF): a failed save is thrown away
  // whole, never rolled back into.
  (void)Exec("PRAGMA saved.journal_mode=MEMORY");
  Status st = Exec("BEGIN");
  for (const char* schema : {"python", "system", "information_schema"}) {
    if (!st.ok()) break;
    Stmt list;
    std::string sql = std::string("SELECT name, sql FROM ") + schema +
                      ".sqlite_master WHERE type='table' ORDER BY name";
    if (sqlite3_prepare_v2(Db(db_), sql.c_str(), -1, &list.s, nullptr) != SQLITE_OK) continue;
    while (st.ok() && sqlite3_step(list.s) == SQLITE_ROW) {
      std::string name = reinterpret_cast<const char*>(sqlite3_column_text(list.s, 0));
      std::string create = reinterpret_cast<const char*>(sqlite3_column_text(list.s, 1));
      // The same columns and types, under the full name in the main schema of the file.
      // (the column list follows the name, which may itself hold a parenthesis)
      const size_t named = create.find(QuoteId(name));
      const size_t paren =
          create.find('(', named == std::string::npos ? 0 : named + QuoteId(name).size());
      if (paren == std::string::npos) continue;
      const std::string full = std::string(schema) + "." + name;
      st = Exec("CREATE TABLE saved." + QuoteId(full) + " " + create.substr(paren));
      if (st.ok())
        st = Exec("INSERT INTO saved." + QuoteId(full) + " SELECT * FROM " + schema + "." +
                  QuoteId(name));
    }
  }
  if (st.ok()) {
    st = Exec("COMMIT");
  } else {
    (void)Exec("ROLLBACK");  // the first error is the one to report
  }
  Status detached = Exec("DETACH DATABASE saved");
  if (!st.ok() || !detached.ok()) {
    discard();
    return InvalidArgument("writing " + path + ": " + (st.ok() ? detached : st).message());
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    discard();
    return InvalidArgument("cannot write " + path + ": " + std::strerror(err));
  }
  return Status::Ok();
}

std::string Database::KnownTables() {
  std::string out;
  for (const char* schema : {"python", "system", "information_schema", "cluster"}) {
    Stmt st;
    std::string sql = std::string("SELECT name FROM ") + schema +
                      ".sqlite_master WHERE type='table' ORDER BY name";
    if (sqlite3_prepare_v2(Db(db_), sql.c_str(), -1, &st.s, nullptr) != SQLITE_OK) continue;
    while (sqlite3_step(st.s) == SQLITE_ROW)
      out += (out.empty() ? "" : ", ") + std::string(schema) + "." +
             reinterpret_cast<const char*>(sqlite3_column_text(st.s, 0));
  }
  // The views (the seeds' names, custom tables without their schema).
  Stmt views;
  if (sqlite3_prepare_v2(Db(db_), "SELECT name FROM temp.sqlite_master WHERE type='view' ORDER BY name",
                         -1, &views.s, nullptr) == SQLITE_OK)
    while (sqlite3_step(views.s) == SQLITE_ROW)
      out += (out.empty() ? "" : ", ") +
             std::string(reinterpret_cast<const char*>(sqlite3_column_text(views.s, 0)));
  return out;
}

Status Database::AddAlias(const std::string& alias, const std::string& table) {
  for (char c : alias)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_'))
      return InvalidArgument("not a table name: " + alias);
  return Exec("CREATE TEMP VIEW IF NOT EXISTS \"" + alias + "\" AS SELECT * FROM " + Quoted(table));
}

Result<QueryResult> Database::Query(const std::string& sql_in, const QueryLimits& limits) {
  std::string sql = RewriteIntervals(sql_in);
  LimitsGuard guard(Db(db_), limits);
  Stmt st;
  const char* tail = nullptr;
  if (sqlite3_prepare_v2(Db(db_), sql.c_str(), -1, &st.s, &tail) != SQLITE_OK) {
    if (!guard.refusal().empty()) return PermissionDenied("SQL: " + guard.refusal());
    std::string msg = sqlite3_errmsg(Db(db_));
    if (msg.rfind("no such table", 0) == 0) msg += "; known tables: " + KnownTables();
    return InvalidArgument("SQL: " + msg);
  }
  if (st.s == nullptr) return InvalidArgument("SQL: empty statement");
  if (limits.read_only) {
    // What the authorizer cannot see: VACUUM (INTO a file) and other writes without a table.
    if (!sqlite3_stmt_readonly(st.s))
      return PermissionDenied("SQL: only reading statements (SELECT, WITH) are allowed");
    if (MoreStatements(tail)) return InvalidArgument("SQL: one statement at a time");
  }
  QueryResult r;
  int n = sqlite3_column_count(st.s);
  for (int i = 0; i < n; ++i) r.columns.emplace_back(sqlite3_column_name(st.s, i));
  int rc;
  while ((rc = sqlite3_step(st.s)) == SQLITE_ROW) {
    if (limits.max_rows > 0 && r.rows.size() == limits.max_rows) {
      r.truncated = true;
      rc = SQLITE_DONE;
      break;
    }
    std::vector<Cell> row;
    row.reserve(n);
    for (int i = 0; i < n; ++i) {
      switch (sqlite3_column_type(st.s, i)) {
        case SQLITE_INTEGER:
          row.emplace_back(static_cast<int64_t>(sqlite3_column_int64(st.s, i)));
          break;
        case SQLITE_FLOAT: row.emplace_back(sqlite3_column_double(st.s, i)); break;
        case SQLITE_NULL: row.emplace_back(std::monostate{}); break;
        default:
          row.emplace_back(std::string(reinterpret_cast<const char*>(sqlite3_column_text(st.s, i)),
                                       static_cast<size_t>(sqlite3_column_bytes(st.s, i))));
      }
    }
    r.rows.push_back(std::move(row));
  }
  if (rc != SQLITE_DONE) {
    // A table whose data could not be read (a target gone, a wrong token) fails the query with
    // that reason as it came, not as an SQL error.
    if (!load_failure_.ok()) return load_failure_;
    if (rc == SQLITE_INTERRUPT && limits.timeout_s > 0) {
      char buf[96];
      std::snprintf(buf, sizeof buf, "SQL: the query ran longer than %g s and was stopped",
                    limits.timeout_s);
      return DeadlineExceeded(buf);
    }
    return InvalidArgument(std::string("SQL: ") + sqlite3_errmsg(Db(db_)));
  }
  return r;
}

}  // namespace probing::sql
