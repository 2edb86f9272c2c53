#include "probing/live/recorders.h"

#include <signal.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <tuple>
#include <utility>

#include "probing/base/files.h"
#include "probing/procfs/proc_stat.h"

namespace probing::live {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

int64_t MtimeNs(const struct stat& st) {
  return static_cast<int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec;
}

// Its files' total size, and the newest modification time of it and them (Unix ns).
std::pair<uint64_t, int64_t> DirSizeAndTime(const fs::path& p) {
  uint64_t n = 0;
  int64_t newest = 0;
  struct stat st;
  if (lstat(p.c_str(), &st) == 0) newest = MtimeNs(st);
  std::error_code ec;
  for (const auto& e : fs::recursive_directory_iterator(p, ec)) {
    if (lstat(e.path().c_str(), &st) != 0) continue;
    newest = std::max(newest, MtimeNs(st));
    if (S_ISREG(st.st_mode)) n += static_cast<uint64_t>(st.st_size);
  }
  return {n, newest};
}

bool IsPid(const std::string& name) {
  return !name.empty() && name.size() <= 9 &&
         name.find_first_not_of("0123456789") == std::string::npos && name[0] != '0';
}

}  // namespace

std::vector<RecorderEntry> ListRecorders(const std::string& data_dir) {
  std::vector<RecorderEntry> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(data_dir, ec)) {
    const std::string name = e.path().filename().string();
    if (!IsPid(name) || !e.is_directory(ec) || e.is_symlink(ec)) continue;
    RecorderEntry r;
    r.pid = static_cast<pid_t>(std::stol(name));
    r.dir = e.path().string();
    // Never followed, never a FIFO (it would hang us): a regular file or nothing.
    auto text = ReadSmallFile((e.path() / "process.json").string(), 1 << 20, Follow::kNo);
    json meta = text.ok() ? json::parse(*text, nullptr, false) : json();
    r.has_metadata = meta.is_object() && meta.contains("pid");
    const bool exists = kill(r.pid, 0) == 0 || errno == EPERM;
    r.alive = exists;
    if (r.has_metadata) {
      if (meta.contains("cmdline") && meta["cmdline"].is_array())
        for (const auto& a : meta["cmdline"])
          if (a.is_string()) r.command += (r.command.empty() ? "" : " ") + a.get<std::string>();
      r.python_version = meta.value("python_version", "");
      r.socket = meta.value("socket", "");
      if (meta.contains("ppid") && meta["ppid"].is_number_integer())
        r.ppid = meta["ppid"].get<pid_t>();
      auto number = [&](const char* key) -> std::optional<int64_t> {
        if (!meta.contains(key) || !meta[key].is_number_integer() || meta[key].get<int64_t>() < 0)
          return std::nullopt;
        return meta[key].get<int64_t>();
      };
      r.rank = number("rank");
      r.world_size = number("world_size");
      r.local_rank = number("local_rank");
      r.tcp_port = number("tcp_port");
      if (r.tcp_port == 0) r.tcp_port.reset();
      r.run_id = meta.contains("run_id") && meta["run_id"].is_string()
                     ? meta["run_id"].get<std::string>()
                     : "";
      r.role =
          meta.contains("role") && meta["role"].is_string() ? meta["role"].get<std::string>() : "";
      r.host =
          meta.contains("host") && meta["host"].is_string() ? meta["host"].get<std::string>() : "";
      // A pid the kernel gave to another process since: its start time differs.
      if (exists && meta.contains("start_time") && meta["start_time"].is_number()) {
        auto started = procfs::ProcessStartNs(r.pid);
        if (started && std::fabs(static_cast<double>(*started) / 1e9 -
                                 meta["start_time"].get<double>()) > 2)
          r.alive = false;
      }
    }
    std::tie(r.bytes, r.last_written_ns) = DirSizeAndTime(e.path());
    out.push_back(std::move(r));
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.pid < b.pid; });
  return out;
}

namespace {

// "" when data_dir is a directory of ours that we may remove from, else why not.
std::string NotOurs(const std::string& data_dir) {
  // Only in a directory of our own: in another user's, they could swap a directory for a
  // symlink while we remove it, and have us delete files of ours elsewhere.
  struct stat st;
  if (lstat(data_dir.c_str(), &st) != 0) return "";  // nothing recorded yet
  if (!S_ISDIR(st.st_mode)) return data_dir + ": " + FileKind(st.st_mode) + ", not a directory";
  if (st.st_uid != geteuid())
    return data_dir + ": belongs to user " + std::to_string(st.st_uid) +
           ", not to you; nothing removed";
  return "";
}

void Remove(const RecorderEntry& r, Collected* c) {
  std::error_code ec;
  fs::remove_all(r.dir, ec);
  if (ec) {
    c->failed.push_back(r.dir + ": " + ec.message());
    return;
  }
  ++c->dirs;
  c->bytes += r.bytes;
}

}  // namespace

Collected CollectDead(const std::string& data_dir) {
  Collected c;
  if (std::string why = NotOurs(data_dir); !why.empty()) {
    c.failed.push_back(why);
    return c;
  }
  for (const RecorderEntry& r : ListRecorders(data_dir))
    if (!r.alive) Remove(r, &c);
  return c;
}

std::string ParseRetentionDays(const std::string& text, double* out) {
  char* end = nullptr;
  errno = 0;
  const double d = std::strtod(text.c_str(), &end);
  if (text.empty() || errno != 0 || *end != '\0' || !(d >= 0 && d <= 36500))
    return "must be a number of days from 0 (no age bound) to 36500, not '" + text + "'";
  *out = d;
  return "";
}

std::string ParseRetentionMaxMb(const std::string& text, uint64_t* out) {
  char* end = nullptr;
  errno = 0;
  const long long n = std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || errno != 0 || *end != '\0' || n < 0 || n > 100'000'000)
    return "must be a whole number of MB from 0 (no size bound) to 100000000, not '" + text + "'";
  *out = static_cast<uint64_t>(n);
  return "";
}

Retention RetentionFromEnvironment(std::vector<std::string>* problems) {
  Retention r;
  // NOLINTNEXTLINE(concurrency-mt-unsafe): read-only use
  if (const char* v = std::getenv(kRetentionDaysEnv); v != nullptr && *v != '\0')
    if (std::string why = ParseRetentionDays(v, &r.days); !why.empty())
      problems->push_back(std::string(kRetentionDaysEnv) + "=" + v + " ignored: " + why);
  // NOLINTNEXTLINE(concurrency-mt-unsafe): read-only use
  if (const char* v = std::getenv(kRetentionMaxMbEnv); v != nullptr && *v != '\0')
    if (std::string why = ParseRetentionMaxMb(v, &r.max_mb); !why.empty())
      problems->push_back(std::string(kRetentionMaxMbEnv) + "=" + v + " ignored: " + why);
  return r;
}

Collected ApplyRetention(const std::string& data_dir, const Retention& r, int64_t now_real_ns) {
  Collected c;
  if (std::string why = NotOurs(data_dir); !why.empty()) {
    c.failed.push_back(why);
    return c;
  }
  std::vector<RecorderEntry> dead;
  for (RecorderEntry& e : ListRecorders(data_dir))
    if (!e.alive) dead.push_back(std::move(e));
  // Newest first: what is kept under the size bound is the most recent.
  std::sort(dead.begin(), dead.end(),
            [](const auto& a, const auto& b) { return a.last_written_ns > b.last_written_ns; });
  const auto max_age_ns = static_cast<int64_t>(r.days * 86400e9);
  const uint64_t max_bytes = r.max_mb << 20;
  uint64_t kept = 0;
  for (const RecorderEntry& e : dead) {
    const bool too_old = r.days > 0 && now_real_ns - e.last_written_ns > max_age_ns;
    const bool too_much = r.max_mb > 0 && kept + e.bytes > max_bytes;
    if (too_old || too_much)
      Remove(e, &c);
    else
      kept += e.bytes;
  }
  return c;
}

}  // namespace probing::live
