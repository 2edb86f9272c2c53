#include "probing/procfs/proc_stat.h"

#include <time.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>

namespace probing::procfs {
namespace {

// The fields after the command name: "S ppid ...", field 3 first. Empty when unreadable.
std::string FieldsAfterName(pid_t pid) {
  std::ifstream in(pid == 0 ? std::string("/proc/self/stat")
                            : "/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), {});
  size_t p = stat.rfind(')');  // the name may hold spaces and parentheses
  if (p == std::string::npos || p + 2 >= stat.size()) return "";
  return stat.substr(p + 2);
}

int64_t ClockNs(clockid_t clock) {
  timespec ts;
  clock_gettime(clock, &ts);
  return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

}  // namespace

std::optional<int64_t> ProcessStartNs(pid_t pid) {
  std::istringstream in(FieldsAfterName(pid));
  std::string field;
  unsigned long long ticks = 0;
  bool found = false;
  for (int i = 3; i <= 22 && in >> field; ++i)
    if (i == 22) {
      ticks = std::strtoull(field.c_str(), nullptr, 10);
      found = true;
    }
  if (!found) return std::nullopt;
  const int64_t hz = sysconf(_SC_CLK_TCK) > 0 ? sysconf(_SC_CLK_TCK) : 100;
  const int64_t started_boot = static_cast<int64_t>(ticks) * (1'000'000'000 / hz);
  return ClockNs(CLOCK_REALTIME) - (ClockNs(CLOCK_BOOTTIME) - started_boot);
}

std::optional<pid_t> ParentPid(pid_t pid) {
  std::istringstream in(FieldsAfterName(pid));
  std::string state;
  long ppid = 0;
  if (!(in >> state >> ppid)) return std::nullopt;
  return static_cast<pid_t>(ppid);
}

}  // namespace probing::procfs
