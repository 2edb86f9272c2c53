// One value of a row, as SQL, the control protocol and the printers all hold it: NULL, a 64-bit
// integer, a real or text (SQLite's storage classes, BLOB aside).
//
//   std::vector<Cell> row{int64_t{4242}, 0.25, std::string("MainThread"), std::monostate{}};
#pragma once

#include <cstdint>
#include <string>
#include <variant>

namespace probing {

using Cell = std::variant<std::monostate, int64_t, double, std::string>;

}  // namespace probing
