// Printing rows for every command: an aligned text table, CSV, JSON (one array) or JSON Lines.
//
//   Printer p(OutputFormat::kTable, std::cout);
//   p.Print({"name", "type"}, rows);
#pragma once

#include <cstdint>
#include <optional>
#include <ostream>
#include <string>
#include <variant>
#include <vector>

#include "probing/base/cell.h"

namespace probing::cli {

enum class OutputFormat { kTable, kCsv, kJson, kJsonl };

// A printable cell: NULL, integer, real or text (probing::Cell, what SQL results hold).
using probing::Cell;

std::optional<OutputFormat> ParseOutputFormat(const std::string& s);

// A number as a person reads it: 3 significant digits, whole numbers from 100 up.
std::string Human(double v);

void PrintRows(OutputFormat format, const std::vector<std::string>& columns,
               const std::vector<std::vector<Cell>>& rows, std::ostream& out);

}  // namespace probing::cli
