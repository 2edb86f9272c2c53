// How the two diagnoses of distributed training print, the same in `probing cluster
// stragglers|hang` (live) and `probing-analyze DIR --stragglers|--hang` (a recorded bundle):
// one row per rank, then, as a table, a line that names the cause.
//
//   int rc = PrintStragglers(Stragglers(ranks, 20), OutputFormat::kTable, std::cout);
#pragma once

#include <ostream>

#include "printer.h"
#include "probing/cluster/diagnose.h"

namespace probing::cli {

// Returns the exit status: 0 when the ranks could be compared, 1 when not (the reason printed).
int PrintStragglers(const cluster::StragglerReport& report, OutputFormat format, std::ostream& out,
                    std::ostream& err);

// Returns 0 when a verdict was reached, 1 when no rank could be read.
int PrintHang(const cluster::HangReport& report, OutputFormat format, std::ostream& out,
              std::ostream& err);

}  // namespace probing::cli
