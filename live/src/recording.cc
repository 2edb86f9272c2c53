#include "probing/live/recording.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>
#include <vector>

#include "probing/base/clock.h"
#include "probing/format/segment.h"
#include "probing/live/session.h"

namespace probing::live {
namespace {

namespace fs = std::filesystem;

format::Stream StreamOfRing(const std::string& ring) {
  for (uint8_t s = 0; s <= format::kMaxStream; ++s)
    if (ring == format::StreamName(static_cast<format::Stream>(s)))
      return static_cast<format::Stream>(s);
  return format::Stream::kMixed;
}

double SecondsSince(int64_t t0) { return static_cast<double>(MonotonicNs() - t0) / 1e9; }

std::string ExitText(int status) {
  return WIFEXITED(status) ? "code " + std::to_string(WEXITSTATUS(status))
                           : "signal " + std::to_string(WTERMSIG(status));
}

// Starts `command` with the recorder on (PROBING=1). From a build tree, the probing package is
// found through its user site (build/pyuser), unless PYTHONUSERBASE says otherwise.
Result<pid_t> Launch(const std::vector<std::string>& command, const std::string& data_dir) {
  std::error_code ec;
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  fs::path pyuser = exe.parent_path().parent_path() / "pyuser";
  const bool use_pyuser = !ec && fs::exists(pyuser, ec);
  // Everything the child needs is prepared before fork: only async-signal-safe calls after it.
  std::vector<char*> argv;
  for (const auto& a : command) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::vector<std::string> env_strings;
  for (char** e = environ; *e != nullptr; ++e) {
    std::string kv = *e;
    const std::string key = kv.substr(0, kv.find('='));
    if (key == "PROBING" || key == "PROBING_DATA_DIR" || (key == "PYTHONUSERBASE" && use_pyuser))
      continue;
    env_strings.push_back(kv);
  }
  const char* probing = std::getenv("PROBING");  // NOLINT(concurrency-mt-unsafe): one thread here
  env_strings.push_back(
      std::string("PROBING=") +
      (probing != nullptr && *probing != '\0' && std::string(probing) != "0" ? probing : "1"));
  env_strings.push_back("PROBING_DATA_DIR=" + data_dir);
  const char* userbase = std::getenv("PYTHONUSERBASE");  // NOLINT(concurrency-mt-unsafe)
  if (use_pyuser)
    env_strings.push_back("PYTHONUSERBASE=" +
                          (userbase != nullptr ? std::string(userbase) : pyuser.string()));
  std::vector<char*> envp;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  const std::string cannot_run = "probing: cannot run " + command[0] + ": ";
  pid_t child = fork();
  if (child < 0) return ErrnoStatus("cannot start " + command[0], errno);
  if (child == 0) {
    execvpe(argv[0], argv.data(), envp.data());
    const char* why = strerror(errno);
    (void)!write(STDERR_FILENO, cannot_run.data(), cannot_run.size());
    (void)!write(STDERR_FILENO, why, strlen(why));
    (void)!write(STDERR_FILENO, "\n", 1);
    _exit(127);
  }
  return child;
}

// True when the process maps a Python runtime (its executable or libpython).
bool LooksLikePython(pid_t pid) {
  std::error_code ec;
  std::string exe = fs::read_symlink("/proc/" + std::to_string(pid) + "/exe", ec).filename();
  if (exe.find("python") != std::string::npos) return true;
  std::ifstream maps("/proc/" + std::to_string(pid) + "/maps");
  std::string line;
  while (std::getline(maps, line))
    if (line.find("libpython") != std::string::npos) return true;
  return false;
}

}  // namespace

// ---- the file --------------------------------------------------------------------------------

Result<Recording> Recording::Create(SegmentSource* source, const std::string& out_path,
                                    uint32_t pid, int zstd_level) {
  if (zstd_level < 1 || zstd_level > 19) return InvalidArgument("zstd level must be 1 to 19");
  PROBING_ASSIGN_OR_RETURN(format::PtraceWriter w, format::PtraceWriter::Create(out_path, pid));
  return Recording(source, std::move(w), zstd_level);
}

Status Recording::Poll() {
  if (finished_) return Internal("the recording is finished");
  FetchOutcome got;
  Status fetched = source_->Fetch({}, &cursors_, &got);
  // What was fetched before a failure is kept: written first, then the failure is returned.
  progress_.rings = std::max<uint64_t>(progress_.rings, cursors_.size());
  std::map<std::string, uint64_t> lost = got.lost;
  for (const RawSegment& raw : got.segments) {
    auto info = format::ParseSegmentHeader(raw.bytes);
    auto z = info.ok() ? format::RecompressSegment(raw.bytes, format::Codec::kZstd, level_)
                       : Result<std::string>(info.status());
    if (!z.ok()) {
      ++progress_.corrupt;
      ++lost[raw.ring];
      continue;
    }
    pid_of_ring_[raw.ring] = info->pid;
    PROBING_RETURN_IF_ERROR(writer_.Append(*z));
    ++progress_.segments;
    progress_.events += info->event_count;
  }
  for (const auto& [ring, n] : lost) {
    if (n == 0) continue;
    // Said in the file itself, so every reader of the recording sees the gap.
    const format::Stream stream = StreamOfRing(ring);
    format::SegmentBuilder b(stream, pid_of_ring_[ring]);
    b.AddLost(stream, n);
    std::string bytes;
    PROBING_RETURN_IF_ERROR(b.Seal(format::Codec::kZstd, 0, &bytes, level_));
    PROBING_RETURN_IF_ERROR(writer_.Append(bytes));
    progress_.lost += n;
  }
  progress_.bytes = writer_.bytes_written();
  return fetched;
}

Status Recording::Finish(bool last_poll) {
  Status last = finished_ || !last_poll ? Status::Ok() : Poll();
  finished_ = true;
  PROBING_RETURN_IF_ERROR(writer_.Close());
  progress_.bytes = writer_.bytes_written();
  return last;
}

// ---- the loop --------------------------------------------------------------------------------

Result<RecordOutcome> Record(Session* session, const RecordOptions& options,
                             const std::atomic<int>& stop,
                             const std::function<void(const RecordProgress&)>& on_progress,
                             const std::function<void(const std::string&)>& on_notice) {
  if (options.output.empty()) return InvalidArgument("a recording needs an output file");
  const int64_t began = MonotonicNs();
  RecordOutcome outcome;
  std::unique_ptr<Session> launched;
  pid_t child = 0;
  int child_status = -1;
  // A command started for this recording does not outlive a recording that failed.
  struct ChildGuard {
    pid_t pid = 0;
    ~ChildGuard() {
      if (pid != 0 && kill(pid, SIGTERM) == 0) waitpid(pid, nullptr, 0);
    }
  } guard;
  auto reaped = [&]() {
    if (child == 0 || child_status >= 0) return child_status >= 0;
    int status = 0;
    if (waitpid(child, &status, WNOHANG) == child) {
      child_status = status;
      guard.pid = 0;  // reaped: its pid is no longer ours to signal
    }
    return child_status >= 0;
  };
  if (!options.command.empty()) {
    if (session != nullptr) return InvalidArgument("record takes a target or a command, not both");
    const std::string data_dir = options.data_dir.empty() ? DefaultDataDir() : options.data_dir;
    PROBING_ASSIGN_OR_RETURN(child, Launch(options.command, data_dir));
    guard.pid = child;
    const std::string dir = data_dir + "/" + std::to_string(child);
    const std::string what = options.command[0] + " (process " + std::to_string(child) + ")";
    bool said_waiting = false, said_not_python = false, said_why = false;
    // The recorder creates its rings as the interpreter starts; wait for them, saying so.
    for (;;) {
      std::error_code ec;
      if (fs::exists(dir + "/process.json", ec)) break;
      if (reaped())
        return NotFound(what + " exited (" + ExitText(child_status) +
                        ") before its recorder started: is it a Python program, with the probing "
                        "package importable (docs/recorder.md)?");
      const double waited = SecondsSince(began);
      if (!said_waiting && waited >= 2) {
        said_waiting = true;
        on_notice("waiting for the recorder in " + what + " to start (looking for " + dir + ")");
      }
      // Half a second lets a wrapper (a pyenv shim, a shell script) exec the interpreter.
      if (!said_not_python && waited >= 0.5 && !LooksLikePython(child)) {
        said_not_python = true;
        on_notice(what +
                  " does not run Python (no python executable or libpython mapped); "
                  "its recorder can start only if it runs a Python interpreter");
      }
      if (!said_why && !said_not_python && waited >= 4) {
        said_why = true;
        std::string why = NoRecorder(child);
        const size_t colon = why.find(": ");
        if (colon != std::string::npos) on_notice("still no recorder in " + what + why.substr(colon));
      }
      if (waited > options.start_timeout || stop.load() != 0)
        return Unavailable(stop.load() != 0
                               ? "interrupted while waiting for the recorder in " + what
                               : "no recorder started in " + what + " within " +
                                     std::to_string(static_cast<int>(options.start_timeout)) +
                                     " s: is the probing package importable by it "
                                     "(docs/recorder.md)?");
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    SessionOptions so;
    so.data_dir = data_dir;
    PROBING_ASSIGN_OR_RETURN(launched, Session::Open(std::to_string(child), so));
    session = launched.get();
  }
  if (session == nullptr) return InvalidArgument("record needs a target or a command");
  if (session->kind() == TargetKind::kRecording)
    return InvalidArgument("record copies what a recorder writes; " + session->Describe() +
                           " is already a recording");
  outcome.target = session->Describe();
  const pid_t pid = session->kind() == TargetKind::kRemote ? 0 : session->pid().value_or(0);
  outcome.pid = pid;
  PROBING_ASSIGN_OR_RETURN(SegmentSource * source, session->Segments());
  PROBING_RETURN_IF_ERROR(source->Seal());  // the newest second is recorded too
  PROBING_ASSIGN_OR_RETURN(
      Recording rec,
      Recording::Create(source, options.output, static_cast<uint32_t>(pid), options.level));
  const int64_t started = MonotonicNs();
  bool target_ended = false;
  outcome.ended = "the duration was reached";
  auto alive = [&]() {
    if (child != 0) return !reaped();
    if (session->kind() == TargetKind::kRemote) return true;  // a failed poll tells
    if (pid == 0) return source->live();
    ProcessState s = StateOf(pid);
    return s == ProcessState::kRunning || s == ProcessState::kStopped;
  };
  for (;;) {
    Status polled = rec.Poll();
    if (!polled.ok()) {
      if (session->kind() != TargetKind::kRemote || polled.code() == StatusCode::kDataLoss ||
          polled.code() == StatusCode::kPermissionDenied)
        return polled;
      // The remote target went away: what it sent is kept, and the recording ends cleanly.
      outcome.ended = outcome.target + " stopped answering (" + polled.message() + ")";
      target_ended = true;
      break;
    }
    on_progress({pid, SecondsSince(started), rec.progress()});
    if (!alive()) {
      outcome.ended = (child != 0 ? options.command[0] + " (process " + std::to_string(pid) + ")"
                                  : outcome.target) +
                      " ended";
      target_ended = true;
      break;
    }
    if (int sig = stop.load(); sig != 0) {
      outcome.ended =
          sig == SIGINT ? "interrupted" : "stopped (signal " + std::to_string(sig) + ")";
      break;
    }
    if (options.duration > 0 && SecondsSince(started) >= options.duration) break;
    std::this_thread::sleep_for(std::chrono::duration<double>(options.interval));
  }
  if (child != 0 && !reaped()) {
    // The command was started for this recording: it ends with it. A Ctrl-C from the terminal
    // reached it already; otherwise it gets one SIGINT, then SIGKILL after 10 s. Its recorder
    // writes its last segments as it exits, and the polls below copy them.
    const int64_t stop_at = MonotonicNs();
    bool sent = false;
    while (!reaped()) {
      const double waited = SecondsSince(stop_at);
      if (!sent && (stop.load() == 0 || waited > 2)) {
        kill(child, SIGINT);
        sent = outcome.child_interrupted = true;
      }
      if (waited > 12) kill(child, SIGKILL);
      PROBING_RETURN_IF_ERROR(rec.Poll());
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (!sent) outcome.child_interrupted = true;  // the terminal's Ctrl-C ended it
  }
  if (!target_ended && alive()) (void)source->Seal();  // its last second, as Finish copies
  const bool remote_gone = target_ended && session->kind() == TargetKind::kRemote;
  PROBING_RETURN_IF_ERROR(rec.Finish(/*last_poll=*/!remote_gone));
  if (child_status >= 0) outcome.child_status = child_status;
  outcome.seconds = SecondsSince(started);
  outcome.progress = rec.progress();
  return outcome;
}

}  // namespace probing::live
