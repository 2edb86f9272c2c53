#include "probing/live/query.h"

#include <filesystem>

#include "probing/analyzer/trace_set.h"

namespace probing::live {
namespace {

using analyzer::SqlValue;
using json = nlohmann::json;

bool Names(const std::string& sql, const std::string& table) {
  return sql.find(table) != std::string::npos;
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
  if (std::filesystem::exists(ring_dir)) {
    PROBING_ASSIGN_OR_RETURN(auto set, analyzer::LoadTraces({ring_dir}));
    PROBING_RETURN_IF_ERROR(db->LoadSegments(set.segments));
  }
  if (Names(sql, "python.backtrace")) {
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
  if (Names(sql, "df_settings")) {
    PROBING_ASSIGN_OR_RETURN(json cfg, client.Get("/config"));
    std::vector<std::vector<SqlValue>> rows;
    for (const auto& s : cfg["settings"])
      rows.push_back({JsonToValue(s["name"]), JsonToValue(s["value"])});
    PROBING_RETURN_IF_ERROR(
        db->LoadRows("information_schema.df_settings", {"name", "value"}, {}, rows));
  }
  // Custom tables: asked for only when the query names python.<something> we do not have.
  if (sql.find("python.") != std::string::npos) {
    auto listed = client.Get("/tables");
    if (listed.ok()) {
      for (const auto& name : (*listed)["tables"]) {
        std::string table = "python." + name.get<std::string>();
        if (!Names(sql, table) || format::FindTable(table) != nullptr) continue;
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
