#include "printer.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iomanip>
#include <nlohmann/json.hpp>
#include <sstream>

namespace probing::cli {
namespace {

std::string Text(const Cell& c) {
  if (std::holds_alternative<std::monostate>(c)) return "NULL";
  if (auto* i = std::get_if<int64_t>(&c)) return std::to_string(*i);
  if (auto* d = std::get_if<double>(&c)) {
    std::ostringstream s;
    s << std::setprecision(15) << *d;
    return s.str();
  }
  return std::get<std::string>(c);
}

std::string CsvField(const Cell& c) {
  if (std::holds_alternative<std::monostate>(c)) return "";
  std::string t = Text(c);
  if (t.find_first_of(",\"\n\r") == std::string::npos) return t;
  std::string q = "\"";
  for (char ch : t) q += ch == '"' ? std::string("\"\"") : std::string(1, ch);
  return q + "\"";
}

nlohmann::ordered_json Json(const Cell& c) {
  if (std::holds_alternative<std::monostate>(c)) return nullptr;
  if (auto* i = std::get_if<int64_t>(&c)) return *i;
  if (auto* d = std::get_if<double>(&c)) return *d;
  return std::get<std::string>(c);
}

nlohmann::ordered_json JsonRow(const std::vector<std::string>& columns, const std::vector<Cell>& row) {
  nlohmann::ordered_json o = nlohmann::ordered_json::object();
  for (size_t i = 0; i < columns.size() && i < row.size(); ++i) o[columns[i]] = Json(row[i]);
  return o;
}

}  // namespace

std::optional<OutputFormat> ParseOutputFormat(const std::string& s) {
  if (s == "table") return OutputFormat::kTable;
  if (s == "csv") return OutputFormat::kCsv;
  if (s == "json") return OutputFormat::kJson;
  if (s == "jsonl") return OutputFormat::kJsonl;
  return std::nullopt;
}

std::string Human(double v) {
  char buf[64];
  if (std::fabs(v) >= 100)
    std::snprintf(buf, sizeof buf, "%.0f", v);
  else
    std::snprintf(buf, sizeof buf, "%.3g", v);
  return buf;
}

void PrintRows(OutputFormat format, const std::vector<std::string>& columns,
               const std::vector<std::vector<Cell>>& rows, std::ostream& out) {
  // JSON dumps replace invalid UTF-8 rather than throwing: data from a target is untrusted.
  constexpr auto kReplace = nlohmann::ordered_json::error_handler_t::replace;
  switch (format) {
    case OutputFormat::kCsv: {
      for (size_t i = 0; i < columns.size(); ++i) out << (i ? "," : "") << columns[i];
      out << "\n";
      for (const auto& r : rows) {
        for (size_t i = 0; i < r.size(); ++i) out << (i ? "," : "") << CsvField(r[i]);
        out << "\n";
      }
      return;
    }
    case OutputFormat::kJson: {
      nlohmann::ordered_json a = nlohmann::ordered_json::array();
      for (const auto& r : rows) a.push_back(JsonRow(columns, r));
      out << a.dump(-1, ' ', false, kReplace) << "\n";
      return;
    }
    case OutputFormat::kJsonl: {
      for (const auto& r : rows) out << JsonRow(columns, r).dump(-1, ' ', false, kReplace) << "\n";
      return;
    }
    case OutputFormat::kTable: {
      std::vector<size_t> width(columns.size());
      for (size_t i = 0; i < columns.size(); ++i) width[i] = columns[i].size();
      std::vector<std::vector<std::string>> text;
      for (const auto& r : rows) {
        std::vector<std::string> t;
        for (size_t i = 0; i < r.size() && i < columns.size(); ++i) {
          t.push_back(Text(r[i]));
          width[i] = std::max(width[i], t.back().size());
        }
        text.push_back(std::move(t));
      }
      auto line = [&](const std::vector<std::string>& cells) {
        for (size_t i = 0; i < cells.size(); ++i) {
          out << (i ? "  " : "") << cells[i];
          if (i + 1 < cells.size()) out << std::string(width[i] - cells[i].size(), ' ');
        }
        out << "\n";
      };
      line(columns);
      std::vector<std::string> rule;
      rule.reserve(width.size());
      for (size_t w : width) rule.emplace_back(w, '-');
      line(rule);
      for (const auto& t : text) line(t);
      out << "(" << rows.size() << (rows.size() == 1 ? " row)" : " rows)") << "\n";
      return;
    }
  }
}

}  // namespace probing::cli
