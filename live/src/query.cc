#include "probing/live/query.h"

#include <cctype>
#include <filesystem>
#include <regex>

#include "probing/analyzer/trace_set.h"

namespace probing::live {
namespace {

using analyzer::SqlValue;
using json = nlohmann::json;

size_t Mentions(const std::string& sql, const std::string& table) {
  size_t n = 0;
  for (size_t at = sql.find(table); at != std::string::npos; at = sql.find(table, at + 1)) ++n;
  return n;
}
bool Names(const std::string& sql, const std::string& table) { return Mentions(sql, table) > 0; }

std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

}  // namespace

SqlValue JsonToValue(const json& v) {
  if (v.is_null()) return std::monostate{};
  if (v.is_boolean()) return int64_t{v.get<bool>() ? 1 : 0};
  if (v.is_number_integer()) return v.get<int64_t>();
  if (v.is_number()) return v.get<double>();
  if (v.is_string()) return v.get<std::string>();
  return v.dump();
}

Result<analyzer::QueryResult> LiveQuery(ControlClient& client, const std::string& ring_dir,
                                        const std::string& sql) {
  PROBING_ASSIGN_OR_RETURN(auto db, analyzer::SqlDatabase::Create());
  const std::string lower = Lower(sql);  // SQL names are case-insensitive
  // Ring tables are read where they lie: a table the query scans once becomes a virtual table
  // over the decoded segments (nothing copied); one it names more than once (a self-join) is
  // copied into SQLite, where its scans are cheaper.
  if (std::filesystem::exists(ring_dir)) {
    std::vector<format::TableId> copied;
    for (const auto& t : format::AllTables()) {
      if (t.source != format::TableSource::kRing) continue;
      // Each table reads its own ring (system.process: every ring), decoded on first use.
      std::string path = ring_dir;
      if (auto stream = format::TableStream(t.id))
        path += "/" + std::string(format::StreamName(*stream)) + ".ring";
      auto load = [path]() -> Result<std::vector<format::Segment>> {
        std::error_code ec;
        if (!std::filesystem::exists(path, ec)) return std::vector<format::Segment>{};
        PROBING_ASSIGN_OR_RETURN(auto set, analyzer::LoadTraces({path}));
        return std::move(set.segments);
      };
      if (Mentions(lower, std::string(t.name)) > 1) {
        PROBING_ASSIGN_OR_RETURN(auto segments, load());
        PROBING_RETURN_IF_ERROR(db->LoadSegments(segments, {t.id}));
      } else {
        PROBING_RETURN_IF_ERROR(db->AttachLoader(t.id, load));
      }
    }
  }
  if (Names(lower, "python.backtrace")) {
    PROBING_ASSIGN_OR_RETURN(json bt, client.Get("/backtrace"));
    std::vector<std::vector<SqlValue>> rows;
    for (const auto& t : bt["threads"])
      for (const auto& f : t["frames"])
        rows.push_back({JsonToValue(f["func"]), JsonToValue(f["file"]), JsonToValue(f["lineno"]),
                        JsonToValue(f["depth"]), JsonToValue(f["frame_type"]),
                        JsonToValue(t["thread_id"]), JsonToValue(t["thread_name"])});
    PROBING_RETURN_IF_ERROR(db->LoadRows(
        "python.backtrace",
        {"func", "file", "lineno", "depth", "frame_type", "thread_id", "thread_name"}, {}, rows));
  }
  if (Names(lower, "df_settings")) {
    PROBING_ASSIGN_OR_RETURN(json cfg, client.Get("/config"));
    std::vector<std::vector<SqlValue>> rows;
    for (const auto& s : cfg["settings"])
      rows.push_back({JsonToValue(s["name"]), JsonToValue(s["value"])});
    PROBING_RETURN_IF_ERROR(
        db->LoadRows("information_schema.df_settings", {"name", "value"}, {}, rows));
  }
  // Custom tables: asked for (a round trip that needs the GIL) only when the query names a
  // python.<something> that is none of ours.
  bool custom = false;
  static const std::regex python_table(R"(python\.([A-Za-z_][A-Za-z_0-9]*))", std::regex::icase);
  for (auto it = std::sregex_iterator(sql.begin(), sql.end(), python_table);
       it != std::sregex_iterator(); ++it)
    if (format::FindTable("python." + Lower((*it)[1].str())) == nullptr) custom = true;
  if (custom) {
    auto listed = client.Get("/tables");
    if (listed.ok()) {
      for (const auto& name : (*listed)["tables"]) {
        std::string table = "python." + name.get<std::string>();
        if (!Names(lower, Lower(table)) || format::FindTable(table) != nullptr) continue;
        PROBING_ASSIGN_OR_RETURN(json t, client.Get("/tables/" + name.get<std::string>()));
        std::vector<std::string> cols, types;
        for (const auto& c : t["columns"]) {
          cols.push_back(c["name"]);
          types.push_back(c["type"]);
        }
        std::vector<std::vector<SqlValue>> rows;
        for (const auto& r : t["rows"]) {
          std::vector<SqlValue> row;
          for (const auto& v : r) row.push_back(JsonToValue(v));
          rows.push_back(std::move(row));
        }
        PROBING_RETURN_IF_ERROR(db->LoadRows(table, cols, types, rows));
      }
    }
  }
  return db->Query(sql);
}

}  // namespace probing::live
