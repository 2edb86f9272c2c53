#include "config.h"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <sstream>

#include "probing/live/recorders.h"

namespace probing::recorder {
namespace {

bool ParseDouble(const std::string& s, double* out) {
  if (s.empty()) return false;
  char* end = nullptr;
  errno = 0;
  double v = std::strtod(s.c_str(), &end);
  if (errno != 0 || end == s.c_str() || *end != '\0') return false;
  *out = v;
  return true;
}

bool ParseLong(const std::string& s, long* out) {
  if (s.empty()) return false;
  char* end = nullptr;
  errno = 0;
  long v = std::strtol(s.c_str(), &end, 10);
  if (errno != 0 || end == s.c_str() || *end != '\0') return false;
  *out = v;
  return true;
}

bool ParseBool(const std::string& s, bool* out) {
  if (s == "true" || s == "on" || s == "1" || s == "yes") return *out = true, true;
  if (s == "false" || s == "off" || s == "0" || s == "no") return *out = false, true;
  return false;
}

// A size with a unit: "512MB", "1.5GiB", "1 GB", "1048576" (bytes). KB, MB, GB, TB are 1000-based
// and KiB, MiB, GiB, TiB 1024-based (IEC); units in any case. False when it is none of these.
bool ParseSize(const std::string& s, uint64_t* out) {
  size_t i = 0;
  while (i < s.size() && (std::isdigit(static_cast<unsigned char>(s[i])) || s[i] == '.')) ++i;
  double number;
  if (i == 0 || !ParseDouble(s.substr(0, i), &number)) return false;
  size_t u = i;
  while (u < s.size() && s[u] == ' ') ++u;
  std::string unit;
  for (char c : s.substr(u)) unit += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  static const struct {
    const char* name;
    double bytes;
  } kUnits[] = {{"", 1},
                {"b", 1},
                {"kb", 1e3},
                {"mb", 1e6},
                {"gb", 1e9},
                {"tb", 1e12},
                {"kib", 1024.0},
                {"mib", 1048576.0},
                {"gib", 1073741824.0},
                {"tib", 1099511627776.0}};
  for (const auto& k : kUnits) {
    if (unit != k.name) continue;
    const double bytes = number * k.bytes;
    if (!(bytes >= 0 && bytes < 1.8e19)) return false;
    *out = static_cast<uint64_t>(bytes);
    return true;
  }
  return false;
}

std::string DefaultDataDir() { return "/dev/shm/probing-" + std::to_string(getuid()); }

std::string FormatDouble(double d) {
  std::ostringstream s;
  s << d;
  return s.str();
}

}  // namespace

Config& Config::Get() {
  static Config* config = new Config();  // leaked on purpose: see the header
  return *config;
}

Config::Config() {
  entries_ = {
      {"probing.sample_rate", "1", "1", "fraction of training steps traced, 0.0 to 1.0",
       "PROBING_SAMPLE_RATE", false},
      {"probing.buffer_size", "10000", "10000",
       "total size of the recorder's rings, in KiB (1024 to 4194304); read-only at run time "
       "(PROBING_BUFFER_SIZE at start)",
       "PROBING_BUFFER_SIZE", true},
      {"probing.max_memory", "0", "0",
       "cap on the recorder's rings together, with a unit: KB, MB, GB, TB (1000-based) or KiB, "
       "MiB, GiB, TiB (1024-based), e.g. 512MB, 1.5GiB; 0: no cap; the rings take the smaller "
       "of this and probing.buffer_size; read-only at run time (PROBING_MAX_MEMORY at start)",
       "PROBING_MAX_MEMORY", true},
      {"probing.server.port", "0", "0",
       "TCP port of the control server (0 = Unix socket only); read-only at run time "
       "(PROBING_PORT at start)",
       "PROBING_PORT", true},
      {"probing.server.gil_share", "0.05", "0.05",
       "the most of the interpreter's time that control requests needing the GIL (eval, "
       "locals, custom tables) may take, 0.001 to 1; more wait their turn",
       "PROBING_SERVER_GIL_SHARE", false},
      {"probing.torch.enabled", "true", "true", "trace PyTorch modules (true/false)",
       "PROBING_TORCH_PROFILING", false},
      {"probing.torch.calls", "auto", "auto",
       "how module calls are seen: wrap (nn.Module.__call__), hooks (global module hooks) or "
       "auto (wrap on torch 1.x, hooks on 2.x)",
       "PROBING_TORCH_CALLS", false},
      {"probing.torch.budget", "1%", "1%",
       "the most of step time PyTorch tracing may cost, in percent (0.01% to 100%), or off: "
       "the tracer measures its own cost and traces fewer steps to stay within it "
       "(docs/torch.md)",
       "PROBING_TORCH_BUDGET", false},
      {"probing.torch.exprs", "", "",
       "variables recorded once per traced step into python.variables: name@function, "
       "comma-separated (e.g. loss@train,acc1@train)",
       "PROBE_TORCH_EXPRS", false},
      {"probing.memory.allocations", "false", "false",
       "record the largest tracemalloc allocation sites into python.allocations "
       "(memory_allocations) every probing.memory.allocations_interval seconds (true/false); "
       "starts tracemalloc, which slows allocation-heavy Python code 12-23x, and stops it again "
       "when turned off unless the program had started it (docs/memory.md)",
       "PROBING_MEMORY_ALLOCATIONS", false},
      {"probing.memory.allocations_interval", "10", "10",
       "seconds between allocation snapshots, 1 to 3600", "PROBING_MEMORY_ALLOCATIONS_INTERVAL",
       false},
      {"probing.memory.allocations_top", "20", "20",
       "allocation sites recorded of each snapshot (the largest by bytes held), 1 to 1000",
       "PROBING_MEMORY_ALLOCATIONS_TOP", false},
      {"probing.sampler.hz", "100", "100", "stack samples per second per thread, 1 to 10000",
       "PROBING_SAMPLER_HZ", false},
      {"probing.hang.seconds", "60", "60",
       "seconds without progress (a step or a collective) before this rank is said to hang, "
       "1 to 86400 (python.metrics probing.hang; docs/distributed.md)",
       "PROBING_HANG_SECONDS", false},
      {"probing.banner", "true", "true",
       "say one line on standard error when the recorder starts (true/false)", "PROBING_BANNER",
       false},
      {"probing.sampler.enabled", "true", "true",
       "sample Python stacks (true/false); memory sampling goes on either way", "", false},
      {"probing.sampler.fault_guard", "true", "true",
       "read interpreter memory with plain loads behind a SIGSEGV/SIGBUS guard (true) or with "
       "one process_vm_readv call a read (false, slower)",
       "", false},
      {"probing.locals.value_size", "200", "200",
       "characters of one local's repr shown by backtrace with locals (16 to 1000000); a longer "
       "one is cut and ends with ...",
       "", false},
      {"probing.locals.frame_size", "4000", "4000",
       "characters of locals shown per frame (64 to 10000000); the locals after are left out "
       "and a ... entry says so",
       "", false},
      {"probing.retention.days", "7", "7",
       "days the data of a dead process is kept (0 to 36500; 0: no age bound), applied as a "
       "recorder starts and by probing list --gc; read-only at run time",
       live::kRetentionDaysEnv, true},
      {"probing.retention.max_mb", "1024", "1024",
       "MB the data of dead processes may take together, the oldest removed first (0 to "
       "100000000; 0: no size bound), applied as a recorder starts and by probing list --gc; "
       "read-only at run time",
       live::kRetentionMaxMbEnv, true},
      {"probing.data_dir", DefaultDataDir(), DefaultDataDir(),
       "where the rings live: <data_dir>/<pid>/ (set with PROBING_DATA_DIR at start)",
       "PROBING_DATA_DIR", true},
  };
}

uint64_t Config::ring_bytes() const {
  const uint64_t buffer = static_cast<uint64_t>(buffer_kib()) * 1024;
  const uint64_t cap = max_memory();
  return cap == 0 ? buffer : std::min(buffer, cap);
}

std::string Config::torch_exprs() const {
  std::string v;
  Lookup("probing.torch.exprs", &v);
  return v;
}

std::string Config::torch_calls() const {
  std::string v;
  Lookup("probing.torch.calls", &v);
  return v;
}

bool Config::banner() const {
  std::string v;
  return Lookup("probing.banner", &v) && v == "true";
}

live::Retention Config::retention() const {
  std::lock_guard<std::mutex> lock(mu_);
  return retention_;
}

std::string Config::data_dir() const {
  std::string v;
  Lookup("probing.data_dir", &v);
  return v;
}

std::vector<std::string> Config::LoadEnvironment() {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::string> errors;
  for (ConfigEntry& e : entries_) {
    if (e.env.empty()) continue;
    const char* v = std::getenv(e.env.c_str());
    if (v == nullptr || *v == '\0') continue;
    std::string err = SetLocked(e.name, v, /*at_start=*/true);
    if (!err.empty()) errors.push_back(e.env + "=" + v + " ignored: " + err);
  }
  return errors;
}

std::string Config::Set(const std::string& key, const std::string& value) {
  std::lock_guard<std::mutex> lock(mu_);
  return SetLocked(key, value, /*at_start=*/false);
}

std::string Config::SetLocked(const std::string& key, const std::string& value, bool at_start) {
  ConfigEntry* entry = nullptr;
  for (ConfigEntry& e : entries_)
    if (e.name == key) entry = &e;
  if (entry == nullptr) return "unknown key " + key;
  if (entry->read_only && !at_start)
    return key + " is read-only at run time: it was fixed when the recorder started" +
           (entry->env.empty() ? std::string()
                               : " (set " + entry->env + " in the target's environment)");
  if (key == "probing.sample_rate") {
    double d;
    if (!ParseDouble(value, &d) || !(d >= 0.0 && d <= 1.0))
      return key + " must be a number from 0.0 to 1.0, not '" + value + "'";
    sample_rate_ = d;
    entry->value = FormatDouble(d);
  } else if (key == "probing.buffer_size") {
    long n;
    if (!ParseLong(value, &n) || n < 1024 || n > 4194304)
      return key + " must be a whole number of KiB from 1024 to 4194304, not '" + value + "'";
    buffer_kib_ = n;
    entry->value = std::to_string(n);
  } else if (key == "probing.max_memory") {
    uint64_t n;
    if (!ParseSize(value, &n) || (n != 0 && (n < kMinMaxMemory || n > kMaxMaxMemory)))
      return key + " must be 0 (no cap) or a size from 1MiB to 1PiB with a unit: KB, MB, GB, "
             "TB (1000-based) or KiB, MiB, GiB, TiB (1024-based), e.g. 512MB or 1.5GiB, not '" +
             value + "'";
    max_memory_ = n;
    entry->value = value;
  } else if (key == "probing.server.port") {
    long n;
    if (!ParseLong(value, &n) || n < 0 || n > 65535)
      return key + " must be a port from 0 to 65535, not '" + value + "'";
    server_port_ = static_cast<int>(n);
    entry->value = std::to_string(n);
  } else if (key == "probing.server.gil_share") {
    double d;
    if (!ParseDouble(value, &d) || !(d >= 0.001 && d <= 1.0))
      return key + " must be a number from 0.001 to 1, not '" + value + "'";
    gil_share_ = d;
    entry->value = FormatDouble(d);
  } else if (key == "probing.data_dir") {
    if (value.empty()) return key + " must be a directory";
    entry->value = value;
  } else if (key == "probing.torch.enabled") {
    bool b;
    if (!ParseBool(value, &b)) return key + " must be true/false (or on/off), not '" + value + "'";
    torch_enabled_ = b;
    entry->value = b ? "true" : "false";
  } else if (key == "probing.torch.budget") {
    double d = 0;
    std::string number = value;
    if (!number.empty() && number.back() == '%') number.pop_back();
    if (value == "off" || value == "0" || value == "0%") {
      entry->value = "off";
    } else if (ParseDouble(number, &d) && d >= 0.01 && d <= 100) {
      entry->value = FormatDouble(d) + "%";
    } else {
      return key + " must be a percent of step time from 0.01% to 100% (e.g. 1%), or off, not '" +
             value + "'";
    }
    torch_budget_ = d / 100;
  } else if (key == "probing.banner") {
    bool b;
    if (!ParseBool(value, &b)) return key + " must be true/false (or on/off), not '" + value + "'";
    entry->value = b ? "true" : "false";
  } else if (key == "probing.sampler.enabled") {
    bool b;
    if (!ParseBool(value, &b)) return key + " must be true/false (or on/off), not '" + value + "'";
    sampler_enabled_ = b;
    entry->value = b ? "true" : "false";
  } else if (key == "probing.sampler.fault_guard") {
    bool b;
    if (!ParseBool(value, &b)) return key + " must be true/false (or on/off), not '" + value + "'";
    fault_guard_ = b;
    entry->value = b ? "true" : "false";
  } else if (key == "probing.locals.value_size" || key == "probing.locals.frame_size") {
    const bool per_value = key == "probing.locals.value_size";
    const long lo = per_value ? 16 : 64, hi = per_value ? 1000000 : 10000000;
    long n;
    if (!ParseLong(value, &n) || n < lo || n > hi)
      return key + " must be a whole number of characters from " + std::to_string(lo) + " to " +
             std::to_string(hi) + ", not '" + value + "'";
    (per_value ? locals_value_size_ : locals_frame_size_) = n;
    entry->value = std::to_string(n);
  } else if (key == "probing.memory.allocations") {
    bool b;
    if (!ParseBool(value, &b)) return key + " must be true/false (or on/off), not '" + value + "'";
    allocations_ = b;
    entry->value = b ? "true" : "false";
  } else if (key == "probing.memory.allocations_interval" ||
             key == "probing.memory.allocations_top") {
    const bool interval = key == "probing.memory.allocations_interval";
    const long hi = interval ? 3600 : 1000;
    long n;
    if (!ParseLong(value, &n) || n < 1 || n > hi)
      return key + " must be a whole number " + (interval ? "of seconds " : "") + "from 1 to " +
             std::to_string(hi) + ", not '" + value + "'";
    (interval ? allocations_interval_ : allocations_top_) = static_cast<int>(n);
    entry->value = std::to_string(n);
  } else if (key == "probing.sampler.hz") {
    long n;
    if (!ParseLong(value, &n) || n < 1 || n > 10000)
      return key + " must be a whole number from 1 to 10000, not '" + value + "'";
    sampler_hz_ = static_cast<int>(n);
    entry->value = std::to_string(n);
  } else if (key == "probing.hang.seconds") {
    long n;
    if (!ParseLong(value, &n) || n < 1 || n > 86400)
      return key + " must be a whole number of seconds from 1 to 86400, not '" + value + "'";
    hang_seconds_ = static_cast<int>(n);
    entry->value = std::to_string(n);
  } else if (key == "probing.retention.days") {
    double d;
    if (std::string why = live::ParseRetentionDays(value, &d); !why.empty()) return key + " " + why;
    retention_.days = d;
    entry->value = FormatDouble(d);
  } else if (key == "probing.retention.max_mb") {
    uint64_t n;
    if (std::string why = live::ParseRetentionMaxMb(value, &n); !why.empty())
      return key + " " + why;
    retention_.max_mb = n;
    entry->value = std::to_string(n);
  } else if (key == "probing.torch.calls") {
    if (value != "auto" && value != "wrap" && value != "hooks")
      return key + " must be auto, wrap or hooks, not '" + value + "'";
    entry->value = value;
  } else if (key == "probing.torch.exprs") {
    std::string items = value, item;
    std::istringstream in(items);
    while (std::getline(in, item, ',')) {
      auto at = item.find('@');
      if (item.find_first_not_of(" ") != std::string::npos &&
          (at == std::string::npos || at == 0 || at + 1 == item.size()))
        return key + " must be name@function items separated by commas, not '" + value + "'";
    }
    entry->value = value;
  }
  generation_.fetch_add(1, std::memory_order_acq_rel);
  return "";
}

bool Config::Lookup(const std::string& key, std::string* value) const {
  std::lock_guard<std::mutex> lock(mu_);
  for (const ConfigEntry& e : entries_) {
    if (e.name == key) {
      *value = e.value;
      return true;
    }
  }
  return false;
}

std::vector<ConfigEntry> Config::All() const {
  std::lock_guard<std::mutex> lock(mu_);
  return entries_;
}

}  // namespace probing::recorder
