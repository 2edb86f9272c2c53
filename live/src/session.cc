#include "probing/live/session.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <regex>

#include "probing/base/files.h"
#include "probing/live/recorders.h"

namespace probing::live {
namespace {

namespace fs = std::filesystem;
using protocol::Json;

bool AllDigits(const std::string& s) {
  return !s.empty() && s.find_first_not_of("0123456789") == std::string::npos;
}

std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

size_t Mentions(const std::string& sql, const std::string& table) {
  size_t n = 0;
  for (size_t at = sql.find(table); at != std::string::npos; at = sql.find(table, at + 1)) ++n;
  return n;
}

bool Alive(pid_t pid) { return kill(pid, 0) == 0 || errno == EPERM; }

// The pid a ring directory's process.json names, when it can be read.
std::optional<pid_t> PidOfRingDir(const std::string& dir) {
  auto text = ReadSmallFile(dir + "/process.json", 1 << 20, Follow::kNo);  // never a FIFO
  if (!text.ok()) return std::nullopt;
  Json meta = Json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (!meta.is_object() || !meta.contains("pid") || !meta["pid"].is_number_integer())
    return std::nullopt;
  return meta["pid"].get<pid_t>();
}

bool SameFile(const std::string& a, const std::string& b) {
  std::error_code ec;
  return fs::equivalent(a, b, ec);
}

// Root reading a process's rings reads files that the process's user wrote: they must be that
// user's (or root's), never a third user's planted in their place.
Status CheckRingOwner(const std::string& dir, pid_t pid) {
  if (geteuid() != 0) return Status::Ok();  // the kernel keeps others' files from us
  struct stat st;
  if (lstat(dir.c_str(), &st) != 0) return Status::Ok();  // opening it says why
  if (S_ISLNK(st.st_mode))
    return PermissionDenied("refusing the ring directory " + dir +
                            " of process " + std::to_string(pid) +
                            ": it is a symbolic link (as root, probing follows none)");
  if (st.st_uid == 0) return Status::Ok();
  struct stat proc;
  const bool alive = ::stat(("/proc/" + std::to_string(pid)).c_str(), &proc) == 0;
  if (alive && proc.st_uid == st.st_uid) return Status::Ok();
  return PermissionDenied(
      "refusing the ring directory " + dir + ": it belongs to user " +
      std::to_string(st.st_uid) + ", not to " +
      (alive ? "process " + std::to_string(pid) + "'s user " + std::to_string(proc.st_uid)
             : std::string("root (its process is gone)")) +
      "; as root, probing reads only what the target's own user wrote (give the directory "
      "itself as the target to read it anyway)");
}

// Whether `host` names this machine: a loopback address, localhost, its host name, or one of
// its interfaces' addresses (as written: no name is looked up).
bool IsThisHost(const std::string& host) {
  if (host == "localhost" || host == "::1" || host == "0.0.0.0" || host == "::") return true;
  in_addr v4;
  if (inet_pton(AF_INET, host.c_str(), &v4) == 1 && (ntohl(v4.s_addr) >> 24) == 127) return true;
  char name[256] = {0};
  if (gethostname(name, sizeof name - 1) == 0 && Lower(host) == Lower(name)) return true;
  ifaddrs* all = nullptr;
  if (getifaddrs(&all) != 0) return false;
  bool found = false;
  for (ifaddrs* i = all; i != nullptr && !found; i = i->ifa_next) {
    if (i->ifa_addr == nullptr) continue;
    char text[INET6_ADDRSTRLEN] = {0};
    const int family = i->ifa_addr->sa_family;
    const void* addr =
        family == AF_INET    ? static_cast<const void*>(
                                &reinterpret_cast<const sockaddr_in*>(i->ifa_addr)->sin_addr)
        : family == AF_INET6 ? static_cast<const void*>(
                                   &reinterpret_cast<const sockaddr_in6*>(i->ifa_addr)->sin6_addr)
                             : nullptr;
    if (addr != nullptr && inet_ntop(family, addr, text, sizeof text) != nullptr)
      found = Lower(host) == text;
  }
  freeifaddrs(all);
  return found;
}

// The token a recorder of ours on this host made for its TCP port (protocol::kTokenFile in its
// ring directory) when `endpoint` is that recorder: this host, the port its process.json names,
// the process alive. "" when there is none to read: the file must be a regular file (never
// through a symbolic link) of this user, readable by nobody else.
std::string LocalToken(const Endpoint& endpoint, const std::string& data_dir) {
  if (!IsThisHost(endpoint.host)) return "";
  for (const RecorderEntry& e : ListRecorders(data_dir)) {
    if (!e.alive || e.tcp_port != endpoint.port) continue;
    auto fd = OpenRegular(e.dir + "/" + std::string(protocol::kTokenFile), Follow::kNo);
    if (!fd.ok()) continue;
    struct stat st;
    if (fstat(fd->get(), &st) != 0 || st.st_uid != geteuid() || (st.st_mode & 077) != 0 ||
        st.st_size > 1024)
      continue;
    std::string token(1024, '\0');
    const ssize_t n = read(fd->get(), token.data(), token.size());
    if (n <= 0) continue;
    token.resize(static_cast<size_t>(n));
    while (!token.empty() && std::isspace(static_cast<unsigned char>(token.back())))
      token.pop_back();
    if (!token.empty()) return token;
  }
  return "";
}

// What a seal request may take before the query goes on without it (the data is then at most
// about a second old).
constexpr double kSealTimeoutS = 2;

}  // namespace

const char* TargetKindName(TargetKind kind) {
  switch (kind) {
    case TargetKind::kProcess: return "process";
    case TargetKind::kRingDirectory: return "ring directory";
    case TargetKind::kRecording: return "recording";
    case TargetKind::kRemote: return "remote";
  }
  return "target";
}

Result<std::unique_ptr<Session>> Session::Open(const std::string& target,
                                               const SessionOptions& options) {
  if (target.empty())
    return InvalidArgument("no target: give a pid, host:port, a ring directory or a recording");
  std::unique_ptr<Session> s(new Session());
  s->target_ = target;
  s->options_ = options;
  if (s->options_.data_dir.empty()) s->options_.data_dir = DefaultDataDir();
  const double timeout = s->options_.timeout_s;

  if (AllDigits(target)) {
    long pid = target.size() > 9 ? 0 : std::strtol(target.c_str(), nullptr, 10);
    if (pid <= 0 || pid > 4194304) return InvalidArgument("'" + target + "' is not a process id");
    s->kind_ = TargetKind::kProcess;
    s->pid_ = static_cast<pid_t>(pid);
    std::string dir = s->options_.data_dir + "/" + target;
    std::error_code ec;
    if (fs::exists(dir + "/process.json", ec)) s->ring_dir_ = dir;
    if (!Alive(*s->pid_) && s->ring_dir_.empty()) return NotFound("no such process " + target);
    s->control_ = std::make_unique<ControlClient>(Endpoint::Local(*s->pid_), "", timeout);
    return s;
  }
  struct stat st;
  if (::stat(target.c_str(), &st) == 0) {
    std::error_code ec;
    if (S_ISDIR(st.st_mode) && fs::exists(target + "/manifest.json", ec)) {  // a bundle
      s->kind_ = TargetKind::kRecording;
      s->paths_ = {target};
      return s;
    }
    if (S_ISDIR(st.st_mode)) {
      s->kind_ = TargetKind::kRingDirectory;
      s->ring_dir_ = target;
      s->pid_ = PidOfRingDir(target);
      return s;
    }
    s->kind_ = TargetKind::kRecording;
    s->paths_ = {target};
    return s;
  }
  if (errno == EACCES) return CannotOpen(target, EACCES);
  if (auto endpoint = ParseHostPort(target)) {
    s->kind_ = TargetKind::kRemote;
    // No token given: a recorder of ours on this host that made its own lends it.
    if (s->options_.token.empty())
      s->options_.token = LocalToken(*endpoint, s->options_.data_dir);
    s->control_ = std::make_unique<ControlClient>(*endpoint, s->options_.token, timeout);
    return s;
  }
  if (target.find('/') != std::string::npos || target.find(".ptrace") != std::string::npos)
    return NotFound(target + ": no such file or directory");
  return InvalidArgument("target '" + target +
                         "' is neither a pid, host:port, a ring directory nor a recording");
}

Result<std::unique_ptr<Session>> Session::OpenFiles(const std::vector<std::string>& paths) {
  if (paths.size() == 1) {
    struct stat st;
    if (::stat(paths[0].c_str(), &st) != 0) return CannotOpen(paths[0], errno);
    PROBING_ASSIGN_OR_RETURN(auto s, Open(paths[0], {}));
    if (s->kind() != TargetKind::kRingDirectory && s->kind() != TargetKind::kRecording)
      return InvalidArgument(paths[0] + " is not a recording or a ring directory");
    return s;
  }
  std::unique_ptr<Session> s(new Session());
  s->kind_ = TargetKind::kRecording;
  s->paths_ = paths;
  for (const auto& p : paths) s->target_ += (s->target_.empty() ? "" : " ") + p;
  return s;
}

std::string Session::Describe() const {
  switch (kind_) {
    case TargetKind::kProcess: return "process " + std::to_string(*pid_);
    case TargetKind::kRingDirectory: return "the ring directory " + ring_dir_;
    case TargetKind::kRecording:
      return paths_.size() == 1 ? "the recording " + paths_[0]
                                : std::to_string(paths_.size()) + " recordings";
    case TargetKind::kRemote: return control_->endpoint().Describe();
  }
  return target_;
}

// ---- control ---------------------------------------------------------------------------------

bool Session::has_control() {
  if (kind_ == TargetKind::kRingDirectory && !control_checked_) {
    control_checked_ = true;
    // A live process's own ring directory: its control server answers for it, if it says that
    // this is where it writes (a pid reused by another process does not).
    if (pid_ && Alive(*pid_)) {
      auto c = std::make_unique<ControlClient>(Endpoint::Local(*pid_), "", options_.timeout_s);
      auto info = c->Get<protocol::InfoReply>(std::string(protocol::kInfoPath), "info");
      if (info.ok() && SameFile(info->data_dir, ring_dir_)) control_ = std::move(c);
    }
  }
  return control_ != nullptr;
}

Status Session::NoControl(std::string_view what) const {
  std::string w(what);
  switch (kind_) {
    case TargetKind::kRecording:
      return InvalidArgument(w + " needs a live process, and " +
                             (paths_.size() == 1 ? paths_[0] + " is a recording"
                                                 : std::string("these are recordings")) +
                             " (query, flamegraph and memory work on it)");
    case TargetKind::kRingDirectory:
      return InvalidArgument(w + " needs a live process, and " + ring_dir_ + " holds " +
                             (pid_ ? "what process " + std::to_string(*pid_) + " left behind"
                                   : std::string("rings without a running process")) +
                             " (query, flamegraph and memory work on it)");
    default: return InvalidArgument(w + " needs a live process");
  }
}

Result<ControlClient*> Session::Control(std::string_view what) {
  if (!has_control()) return NoControl(what);
  return control_.get();
}

Result<protocol::InfoReply> Session::Info() {
  PROBING_ASSIGN_OR_RETURN(ControlClient * c, Control("info"));
  return c->Get<protocol::InfoReply>(std::string(protocol::kInfoPath), "info");
}

Result<protocol::BacktraceReply> Session::Backtrace(const protocol::BacktraceRequest& request) {
  PROBING_ASSIGN_OR_RETURN(ControlClient * c, Control("backtrace"));
  return c->Get<protocol::BacktraceReply>(request.Target(), "backtrace");
}

Result<protocol::EvalReply> Session::Eval(const protocol::EvalRequest& request) {
  PROBING_ASSIGN_OR_RETURN(ControlClient * c, Control("eval"));
  // The code may run for its whole timeout; the answer comes after it.
  return c->Post<protocol::EvalReply>(std::string(protocol::kEvalPath), request, "eval",
                                      std::max(c->timeout(), request.timeout + 10));
}

Result<protocol::ConfigReply> Session::GetConfig(const std::string& key) {
  PROBING_ASSIGN_OR_RETURN(ControlClient * c, Control("config"));
  std::string t(protocol::kConfigPath);
  if (!key.empty()) t += "?key=" + protocol::UrlEncode(key);
  return c->Get<protocol::ConfigReply>(t, "config");
}

Result<protocol::ConfigReply> Session::SetConfig(const std::string& key, const std::string& value) {
  PROBING_ASSIGN_OR_RETURN(ControlClient * c, Control("config"));
  return c->Post<protocol::ConfigReply>(std::string(protocol::kConfigPath),
                                        protocol::ConfigSetRequest{key, value}, "config");
}

Result<protocol::TablesReply> Session::CustomTables() {
  PROBING_ASSIGN_OR_RETURN(ControlClient * c, Control("custom tables"));
  return c->Get<protocol::TablesReply>(std::string(protocol::kTablesPath), "tables");
}

Result<protocol::TableRowsReply> Session::CustomTable(const std::string& name) {
  PROBING_ASSIGN_OR_RETURN(ControlClient * c, Control("custom tables"));
  return c->Get<protocol::TableRowsReply>(
      std::string(protocol::kTablesPath) + "/" + protocol::UrlEncode(name), "table " + name);
}

// ---- data ------------------------------------------------------------------------------------

std::vector<std::string> Session::Inputs() const {
  if (kind_ == TargetKind::kRecording) return paths_;
  if (!ring_dir_.empty()) return {ring_dir_};
  return {};
}

Status Session::ResolveRings() {
  if (!ring_dir_.empty() || kind_ != TargetKind::kProcess) return Status::Ok();
  // Not under this user's data directory: the process's own PROBING_DATA_DIR (readable even
  // while it is stopped or hung), else what its recorder says.
  const std::string pid = std::to_string(*pid_);
  std::ifstream environ("/proc/" + pid + "/environ", std::ios::binary);
  std::string entry;
  while (std::getline(environ, entry, '\0')) {
    if (entry.rfind("PROBING_DATA_DIR=", 0) != 0 || entry.size() <= 17) continue;
    std::string dir = entry.substr(17) + "/" + pid;
    std::error_code ec;
    if (fs::exists(dir + "/process.json", ec)) {
      ring_dir_ = dir;
      return Status::Ok();
    }
  }
  PROBING_ASSIGN_OR_RETURN(protocol::InfoReply info, Info());
  ring_dir_ = info.data_dir;
  return Status::Ok();
}

Result<SegmentSource*> Session::Segments() {
  if (source_) return source_.get();
  switch (kind_) {
    case TargetKind::kRemote: source_ = std::make_unique<RemoteSource>(control_.get()); break;
    case TargetKind::kRecording: {
      PROBING_ASSIGN_OR_RETURN(source_, live::OpenFiles(paths_));
      break;
    }
    case TargetKind::kProcess:
    case TargetKind::kRingDirectory: {
      PROBING_RETURN_IF_ERROR(ResolveRings());
      if (kind_ == TargetKind::kProcess)
        PROBING_RETURN_IF_ERROR(CheckRingOwner(ring_dir_, *pid_));
      std::optional<pid_t> pid = pid_;
      auto seal = [this]() -> Status {
        if (!has_control()) return Status::Ok();
        // Best effort and quick: a hung process still answers (sealing needs no GIL); one that
        // cannot answer leaves the data a second old at most.
        auto r = control_->Request("POST", std::string(protocol::kSealPath), "{}", kSealTimeoutS);
        (void)r;
        return Status::Ok();
      };
      auto alive = [pid] { return pid.has_value() && Alive(*pid); };
      auto dir = RingDirSource::Open(ring_dir_, seal, alive);
      if (!dir.ok()) {
        if (kind_ == TargetKind::kProcess && dir.status().code() == StatusCode::kNotFound)
          return NotFound("process " + std::to_string(*pid_) + " has no rings in " + ring_dir_ +
                          " (" + dir.status().message() + ")");
        return dir.status();
      }
      source_ = std::move(dir).value();
      break;
    }
  }
  return source_.get();
}

Result<sql::QueryResult> Session::Query(const std::string& sql, const MoreTables& more,
                                        const sql::QueryLimits& limits) {
  PROBING_ASSIGN_OR_RETURN(auto db, sql::Database::Create());
  const std::string lower = Lower(sql);  // SQL names are case-insensitive
  PROBING_ASSIGN_OR_RETURN(SegmentSource * source, Segments());
  // The newest second first, once, and only when a ring table is read.
  auto sealed = std::make_shared<bool>(false);
  auto load = [source, sealed](
                  std::vector<format::Stream> streams) -> Result<std::vector<format::Segment>> {
    if (!*sealed) {
      *sealed = true;
      PROBING_RETURN_IF_ERROR(source->Seal());
    }
    PROBING_ASSIGN_OR_RETURN(format::TraceSet set, LoadStreams(*source, streams));
    return std::move(set.segments);
  };
  // Ring tables are read where they lie: a table the query scans once becomes a virtual table
  // over the decoded segments (nothing copied); one it names more than once (a self-join) is
  // copied into SQLite, where its scans are cheaper.
  for (const auto& t : format::AllTables()) {
    if (t.source != format::TableSource::kRing) continue;
    std::vector<format::Stream> streams;  // system.process: every ring
    if (auto stream = format::TableStream(t.id)) streams.push_back(*stream);
    if (Mentions(lower, std::string(t.name)) > 1) {
      PROBING_ASSIGN_OR_RETURN(auto segments, load(streams));
      PROBING_RETURN_IF_ERROR(db->LoadSegments(segments, {t.id}));
    } else {
      PROBING_RETURN_IF_ERROR(db->AttachLoader(t.id, [load, streams] { return load(streams); }));
    }
  }
  // Tables only a live process answers: asked for only when the query names them, and an
  // error (never an empty table) where there is no live process to ask.
  if (Mentions(lower, "python.backtrace") > 0) {
    PROBING_ASSIGN_OR_RETURN(protocol::BacktraceReply bt, Backtrace({}));
    std::vector<std::vector<Cell>> rows;
    for (const auto& t : bt.threads)
      for (const auto& f : t.frames)
        rows.push_back({f.func, f.file, f.lineno ? Cell(*f.lineno) : Cell(std::monostate{}),
                        f.depth, f.frame_type, static_cast<int64_t>(t.thread_id), t.thread_name});
    PROBING_RETURN_IF_ERROR(db->LoadRows(
        "python.backtrace",
        {"func", "file", "lineno", "depth", "frame_type", "thread_id", "thread_name"}, {}, rows));
  }
  if (Mentions(lower, "df_settings") > 0) {
    PROBING_ASSIGN_OR_RETURN(protocol::ConfigReply cfg, GetConfig());
    std::vector<std::vector<Cell>> rows;
    for (const auto& s : cfg.settings) rows.push_back({s.name, s.value});
    PROBING_RETURN_IF_ERROR(
        db->LoadRows("information_schema.df_settings", {"name", "value"}, {}, rows));
  }
  // Custom tables: asked for (a round trip that needs the GIL) only when the query names a
  // python.<something> that is none of ours.
  static const std::regex python_table(R"(python\.([A-Za-z_][A-Za-z_0-9]*))", std::regex::icase);
  std::vector<std::string> unknown;
  for (auto it = std::sregex_iterator(sql.begin(), sql.end(), python_table);
       it != std::sregex_iterator(); ++it)
    if (format::FindTable("python." + Lower((*it)[1].str())) == nullptr)
      unknown.push_back(Lower((*it)[1].str()));
  // A custom table may be named without its schema too (FROM my_data), as @probing.table
  // names it.
  static const std::regex bare_table(R"((?:from|join)\s+([A-Za-z_][A-Za-z_0-9]*)\b(?!\s*\.))",
                                     std::regex::icase);
  // Not the names the statement defines itself (WITH x AS (...)), nor the seeds' views.
  static const std::regex defined(R"(([A-Za-z_][A-Za-z_0-9]*)\s+as\s*\()", std::regex::icase);
  std::vector<std::string> own = {"comm_metrics",   "memory_usage",       "profiling_data",
                                  "training_logs",  "gpu_metrics",        "memory_allocations"};
  for (auto it = std::sregex_iterator(sql.begin(), sql.end(), defined);
       it != std::sregex_iterator(); ++it)
    own.push_back(Lower((*it)[1].str()));
  std::vector<std::string> bare;
  for (auto it = std::sregex_iterator(sql.begin(), sql.end(), bare_table);
       it != std::sregex_iterator(); ++it) {
    const std::string name = Lower((*it)[1].str());
    if (std::find(own.begin(), own.end(), name) == own.end()) bare.push_back(name);
  }
  auto named = [](const std::vector<std::string>& names, const std::string& name) {
    return std::find(names.begin(), names.end(), Lower(name)) != names.end();
  };
  if ((!unknown.empty() || !bare.empty()) && has_control()) {
    auto listed = CustomTables();
    if (listed.ok()) {
      for (const std::string& name : listed->tables) {
        const std::string table = "python." + name;
        if ((!named(unknown, name) && !named(bare, name)) || format::FindTable(table) != nullptr)
          continue;
        PROBING_ASSIGN_OR_RETURN(protocol::TableRowsReply t, CustomTable(name));
        std::vector<std::string> cols, types;
        for (const auto& c : t.columns) {
          cols.push_back(c.name);
          types.push_back(c.type);
        }
        PROBING_RETURN_IF_ERROR(db->LoadRows(table, cols, types, t.rows));
        if (named(bare, name)) PROBING_RETURN_IF_ERROR(db->AddAlias(name, table));
      }
    }
  }
  if (more) PROBING_RETURN_IF_ERROR(more(*db));
  // The statement is the user's: it reads only, and it has a deadline.
  sql::QueryLimits bounded = limits;
  bounded.read_only = true;
  if (bounded.timeout_s <= 0) bounded.timeout_s = options_.timeout_s;
  auto result = db->Query(sql, bounded);
  if (!result.ok() && result.status().message().find("no such table") != std::string::npos &&
      has_control()) {
    // The process's own tables are known tables too.
    auto listed = CustomTables();
    if (listed.ok() && !listed->tables.empty()) {
      std::string names;
      for (const std::string& n : listed->tables) names += (names.empty() ? "" : ", ") + n;
      return Status(result.status().code(), result.status().message() +
                                                "; the process's own tables (@probing.table): " +
                                                names);
    }
  }
  return result;
}

}  // namespace probing::live
