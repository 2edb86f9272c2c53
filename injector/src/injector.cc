#include "probing/injector/injector.h"

#include <dirent.h>
#include <dlfcn.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <regex>

#include "process_image.h"
#include "safe_point.h"
#include "tracee.h"

namespace probing::injector {
namespace {

// The private region mapped in the target for a call: a guard page, then the recorder's path,
// then the stack the calls run on (dlopen runs constructors; 1 MiB is plenty, and untouched
// pages cost nothing).
constexpr size_t kGuard = 4096;
constexpr size_t kRegion = kGuard + 1024 * 1024;
// Below the hijacked thread's stack pointer, past the x86-64 red zone, for the two calls made
// before the region exists.
constexpr uintptr_t kBelowRedZone = 128 + 512;
constexpr int64_t kRetryPauseNs = 1'000'000;

std::string Pid(pid_t pid) { return std::to_string(pid); }

// Blocks signals for as long as it lives: SIGCHLD always (tracee stops are waited for with
// sigtimedwait), and while the target is modified also the ones that would kill us half-way
// and leave its thread returning into address 0.
class SignalBlock {
 public:
  explicit SignalBlock(bool terminating) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    if (terminating)
      for (int s : {SIGINT, SIGTERM, SIGHUP, SIGQUIT}) sigaddset(&set, s);
    pthread_sigmask(SIG_BLOCK, &set, &old_);
  }
  ~SignalBlock() { pthread_sigmask(SIG_SETMASK, &old_, nullptr); }

 private:
  sigset_t old_;
};

char ProcessState(pid_t pid) {
  std::ifstream in("/proc/" + Pid(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  size_t p = stat.rfind(')');
  return p != std::string::npos && p + 2 < stat.size() ? stat[p + 2] : '?';
}

// Exited or exiting: a zombie, or no process at all.
bool Gone(pid_t pid) {
  if (kill(pid, 0) != 0 && errno == ESRCH) return true;
  const char state = ProcessState(pid);
  return state == 'Z' || state == 'X' || state == '?';
}

// The process's threads, main thread first.
std::vector<pid_t> Threads(pid_t pid) {
  std::vector<pid_t> tids{pid};
  if (DIR* d = opendir(("/proc/" + Pid(pid) + "/task").c_str())) {
    while (dirent* e = readdir(d)) {
      pid_t tid = static_cast<pid_t>(std::atoi(e->d_name));
      if (tid > 0 && tid != pid) tids.push_back(tid);
    }
    closedir(d);
  }
  return tids;
}

std::string RealPath(const std::string& path) {
  char buf[PATH_MAX];
  return realpath(path.c_str(), buf) != nullptr ? buf : path;
}

// The Python minor version from the interpreter's files: libpython3.X*.so or python3.X.
std::optional<std::string> VersionFromFiles(const ProcessImage& image, pid_t pid) {
  static const std::regex kLib(R"(^libpython(3\.\d+)[a-z]*\.so)");
  static const std::regex kExe(R"(^python(3\.\d+)[a-z]*$)");
  std::smatch m;
  for (const Mapping& map : image.maps()) {
    const std::string base = map.path.substr(map.path.rfind('/') + 1);
    if (std::regex_search(base, m, kLib)) return m[1].str();
  }
  char exe[PATH_MAX] = {0};
  ssize_t n = readlink(("/proc/" + Pid(pid) + "/exe").c_str(), exe, sizeof exe - 1);
  if (n > 0) {
    std::string path(exe, static_cast<size_t>(n));
    const std::string base = path.substr(path.rfind('/') + 1);
    if (std::regex_search(base, m, kExe)) return m[1].str();
  }
  return std::nullopt;
}

Status NotPython(pid_t pid) {
  return InvalidArgument("process " + Pid(pid) +
                         " is not a Python process (no python3.X or libpython3.X among its files)");
}

Result<std::string> FindLibrary(const Options& o, const std::string& version) {
  if (!o.library.empty()) {
    if (access(o.library.c_str(), R_OK) != 0)
      return NotFound("recorder build " + o.library + " not found");
    return RealPath(o.library);
  }
  std::string tag = "cp" + version.substr(0, 1) + version.substr(2);
  std::string name = "probing_recorder_" + tag + ".so";
  std::string looked;
  for (const std::string& dir : o.recorder_dirs) {
    if (dir.empty()) continue;
    std::string path = dir + "/" + name;
    if (access(path.c_str(), R_OK) == 0) return RealPath(path);
    looked += (looked.empty() ? "" : ", ") + dir;
  }
  return NotFound("no recorder build for Python " + version + " (" + name + " not in " +
                  (looked.empty() ? "any directory" : looked) +
                  "); build Probing with that interpreter present (README)");
}

struct Functions {
  uintptr_t dlopen = 0, dlerror = 0, errno_location = 0, mmap = 0, munmap = 0, mprotect = 0;
};

Result<Functions> Resolve(ProcessImage& image) {
  const pid_t pid = image.pid();
  std::string libc = image.FindFile("libc.so");
  if (libc.empty()) libc = image.FindFile("libc-2.");
  if (libc.empty())
    return Unimplemented("process " + Pid(pid) + " has no glibc mapped (static or musl)");
  Functions f;
  auto need = [&](const std::string& lib, const char* name, uintptr_t* out) {
    if (auto a = image.Address(lib, name)) *out = *a;
    return *out != 0;
  };
  if (!need(libc, "__errno_location", &f.errno_location) || !need(libc, "mmap", &f.mmap) ||
      !need(libc, "munmap", &f.munmap) || !need(libc, "mprotect", &f.mprotect))
    return Unimplemented("cannot find mmap and errno in " + libc + " of process " + Pid(pid));
  // glibc 2.34+ has dlopen in libc; before, in libdl when the process loaded it.
  if (!need(libc, "dlopen", &f.dlopen)) {
    std::string libdl = image.FindFile("libdl.so");
    if (libdl.empty() || !need(libdl, "dlopen", &f.dlopen))
      return Unimplemented("process " + Pid(pid) + " has no dlopen to call (glibc older than " +
                           "2.34 without libdl loaded)");
    need(libdl, "dlerror", &f.dlerror);
  } else {
    need(libc, "dlerror", &f.dlerror);
  }
  return f;
}

// Loads the recorder in the stopped thread `t` and starts it. `t` is put back on every path.
Result<int> LoadAndStart(Tracee& t, ProcessImage& image, const Functions& f,
                         const std::string& library, const Options& o, Outcome* out) {
  const pid_t pid = image.pid();
  PROBING_RETURN_IF_ERROR(t.Save());
  const uintptr_t scratch = t.saved().rsp - kBelowRedZone;
  uint8_t scratch_bytes[16];
  PROBING_RETURN_IF_ERROR(t.Read((scratch & ~uintptr_t{15}) - 16, scratch_bytes, 16));

  // The region is unmapped on the thread's own stack, below its red zone, so that the last call
  // (which starts the recorder's threads) comes after every other change is undone.
  uintptr_t region = 0;
  auto unmap = [&] {
    if (region != 0) (void)t.Call(f.munmap, {region, kRegion}, scratch, "munmap");
    region = 0;
  };
  auto finish = [&](Status s) -> Status {
    unmap();
    (void)t.Write((scratch & ~uintptr_t{15}) - 16, scratch_bytes, 16);
    Status r = t.Restore();
    return s.ok() ? r : s;
  };

  PROBING_ASSIGN_OR_RETURN(uint64_t errno_at, t.Call(f.errno_location, {}, scratch, "__errno_location"));
  int saved_errno = 0;
  if (Status s = t.Read(errno_at, &saved_errno, sizeof saved_errno); !s.ok()) return finish(s);
  auto run = [&]() -> Result<int> {
    PROBING_ASSIGN_OR_RETURN(
        region, t.Call(f.mmap,
                       {0, kRegion, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                        static_cast<uint64_t>(-1), 0},
                       scratch, "mmap"));
    if (region == reinterpret_cast<uintptr_t>(MAP_FAILED)) {
      region = 0;
      int err = 0;
      (void)t.Read(errno_at, &err, sizeof err);
      return Unavailable("mmap in process " + Pid(pid) + " failed: " + std::strerror(err));
    }
    const uintptr_t top = region + kRegion;
    (void)t.Call(f.mprotect, {region, kGuard, PROT_NONE}, top, "mprotect");  // best effort
    const uintptr_t path_at = region + kGuard;
    PROBING_RETURN_IF_ERROR(t.Write(path_at, library.c_str(), library.size() + 1));
    // RTLD_NOW: a symbol the target's interpreter lacks fails here, cleanly, instead of ending
    // the process at its first call (lazy binding exits on an unresolved symbol).
    int64_t t0 = MonotonicNs();
    PROBING_ASSIGN_OR_RETURN(uint64_t handle,
                             t.Call(f.dlopen, {path_at, RTLD_NOW}, top, "dlopen", o.on_slow));
    out->dlopen_ns = MonotonicNs() - t0;
    if (handle == 0) {
      std::string message = "unknown error";
      if (f.dlerror != 0) {
        auto text = t.Call(f.dlerror, {}, top, "dlerror");
        char buf[512] = {0};
        if (text.ok() && *text != 0 && t.Read(*text, buf, sizeof buf - 1).ok()) message = buf;
      }
      return Internal("dlopen failed in process " + Pid(pid) + ": " + message);
    }
    PROBING_ASSIGN_OR_RETURN(ProcessImage loaded, ProcessImage::Read(pid));
    auto start = loaded.Address(library, "probing_start_detached");
    if (!start)
      return Internal("loaded " + library + " in process " + Pid(pid) +
                      " but found no probing_start_detached in it");
    unmap();
    t0 = MonotonicNs();
    PROBING_ASSIGN_OR_RETURN(uint64_t rc,
                             t.Call(*start, {}, scratch, "probing_start_detached", o.on_slow));
    out->start_ns = MonotonicNs() - t0;
    return static_cast<int>(static_cast<int32_t>(rc));
  };
  Result<int> rc = run();
  (void)t.Write(errno_at, &saved_errno, sizeof saved_errno);
  Status done = finish(rc.ok() ? Status::Ok() : rc.status());
  if (!done.ok()) return done;
  return rc;
}

}  // namespace

Result<Outcome> Inject(const Options& o) {
  const int64_t begin = MonotonicNs();
  const pid_t pid = o.pid;
  if (pid <= 0) return InvalidArgument("not a process id: " + Pid(pid));
  if (kill(pid, 0) != 0 && errno == ESRCH) return NotFound("no such process " + Pid(pid));
  switch (ProcessState(pid)) {
    case 'Z':
    case 'X': return Unavailable("process " + Pid(pid) + " has exited (zombie)");
    case 'T': return Unavailable("process " + Pid(pid) + " is stopped; resume it first (kill -CONT " +
                                 Pid(pid) + ")");
    default: break;
  }
  auto read = ProcessImage::Read(pid);
  if (!read.ok() && read.status().code() == StatusCode::kUnavailable)
    return Unavailable(PermissionReason(pid, EPERM));
  PROBING_ASSIGN_OR_RETURN(ProcessImage image, std::move(read));
  Outcome out;
  if (auto v = VersionFromFiles(image, pid)) out.python = *v;
  else return NotPython(pid);
  for (const Mapping& m : image.maps())
    if (m.path.find("/probing_recorder_cp") != std::string::npos) {
      out.already_running = true;
      out.library = m.path;
      out.total_ns = MonotonicNs() - begin;
      return out;
    }
  PROBING_ASSIGN_OR_RETURN(out.library, FindLibrary(o, out.python));
  // The target opens the path in its own mount namespace: it must be the same file there.
  struct stat here {}, there {};
  if (stat(out.library.c_str(), &here) != 0 ||
      stat(image.HostPath(out.library).c_str(), &there) != 0 || here.st_dev != there.st_dev ||
      here.st_ino != there.st_ino)
    return Unavailable(out.library + " is not visible to process " + Pid(pid) +
                       " (another mount namespace: a container?); copy it into the target's "
                       "filesystem and pass --library");
  PROBING_ASSIGN_OR_RETURN(Functions functions, Resolve(image));

  SignalBlock chld(false);
  const int64_t deadline = begin + o.safe_point_timeout_ms * 1'000'000;
  std::string last_why;
  while (MonotonicNs() < deadline) {
    for (pid_t tid : Threads(pid)) {
      if (MonotonicNs() >= deadline) break;
      const int64_t stop_began = MonotonicNs();
      auto seized = Tracee::Seize(pid, tid);
      if (!seized.ok()) {
        if (seized.status().code() == StatusCode::kNotFound) continue;  // thread ended
        if (Gone(pid)) return Unavailable("process " + Pid(pid) + " exited during injection");
        return seized.status();
      }
      std::unique_ptr<Tracee> t = std::move(seized).value();
      Status stopped = t->Stop(deadline);
      if (!stopped.ok()) {
        if (Gone(pid)) return Unavailable("process " + Pid(pid) + " exited during injection");
        if (MonotonicNs() >= deadline) break;  // it did not stop in time
        continue;
      }
      ++out.attempts;
      const int64_t check_began = MonotonicNs();
      SafePoint sp = CheckSafePoint(tid, image);
      out.check_ns = MonotonicNs() - check_began;
      if (!sp.safe) {
        last_why = "thread " + std::to_string(tid) + " " + sp.why;
        PROBING_RETURN_IF_ERROR(t->Detach());
        out.checks_ns += MonotonicNs() - stop_began;
        continue;
      }
      Result<int> rc = [&] {
        SignalBlock no_interruptions(true);
        Result<int> r = LoadAndStart(*t, image, functions, out.library, o, &out);
        (void)t->Detach();
        return r;
      }();
      out.stopped_ns = MonotonicNs() - stop_began;
      out.thread = tid;
      if (!rc.ok()) return rc.status();
      if (*rc == 1) out.already_running = true;
      else if (*rc != 0)
        return Internal("the recorder could not start a thread in process " + Pid(pid));
      out.total_ns = MonotonicNs() - begin;
      return out;
    }
    struct timespec pause{0, kRetryPauseNs};
    nanosleep(&pause, nullptr);
  }
  if (Gone(pid)) return Unavailable("process " + Pid(pid) + " exited during injection");
  return Unavailable("no safe point in process " + Pid(pid) + " within " +
                     std::to_string(o.safe_point_timeout_ms / 1000.0).substr(0, 4) + " s (" +
                     (last_why.empty() ? "no thread could be stopped" : "last seen: " + last_why) +
                     "); nothing was changed, try again or raise --timeout");
}

}  // namespace probing::injector
