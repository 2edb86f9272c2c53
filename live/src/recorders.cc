#include "probing/live/recorders.h"

#include <signal.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "probing/base/files.h"
#include "probing/procfs/proc_stat.h"

namespace probing::live {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

uint64_t DirSize(const fs::path& p) {
  uint64_t n = 0;
  std::error_code ec;
  for (const auto& e : fs::recursive_directory_iterator(p, ec))
    if (e.is_regular_file(ec) && !e.is_symlink(ec)) n += e.file_size(ec);
  return n;
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
    r.bytes = DirSize(e.path());
    out.push_back(std::move(r));
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.pid < b.pid; });
  return out;
}

Collected CollectDead(const std::string& data_dir) {
  Collected c;
  // Only in a directory of our own: in another user's, they could swap a directory for a
  // symlink while we remove it, and have us delete files of ours elsewhere.
  struct stat st;
  if (lstat(data_dir.c_str(), &st) != 0) return c;  // nothing recorded yet
  if (!S_ISDIR(st.st_mode) || st.st_uid != geteuid()) {
    c.failed.push_back(data_dir + ": " +
                       (S_ISDIR(st.st_mode) ? "belongs to user " + std::to_string(st.st_uid) +
                                                  ", not to you; nothing removed"
                                            : FileKind(st.st_mode) + ", not a directory"));
    return c;
  }
  for (const RecorderEntry& r : ListRecorders(data_dir)) {
    if (r.alive) continue;
    std::error_code ec;
    fs::remove_all(r.dir, ec);
    if (ec) {
      c.failed.push_back(r.dir + ": " + ec.message());
      continue;
    }
    ++c.dirs;
    c.bytes += r.bytes;
  }
  return c;
}

}  // namespace probing::live
