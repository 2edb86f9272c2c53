#include "probing/live/install.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <vector>

#include "probing/base/clock.h"
#include "probing/base/files.h"
#include "probing/live/inject.h"

extern char** environ;  // NOLINT(readability-redundant-declaration): POSIX declares it nowhere

namespace probing::live {
namespace {

namespace fs = std::filesystem;

// The first line of every probing.pth this command writes: how it knows its own.
constexpr const char* kMarker = "# probing start-up hook, written by `probing install`";

struct Ran {
  int status = 0;
  std::string out, err;
};

// Runs argv with PROBING=0 (its own recorder must not start), output captured, for at most
// `seconds`.
Result<Ran> RunCaptured(const std::vector<std::string>& argv, double seconds) {
  int out[2], err[2];
  if (pipe2(out, O_CLOEXEC) != 0) return ErrnoStatus("pipe", errno);
  if (pipe2(err, O_CLOEXEC) != 0) {
    close(out[0]);
    close(out[1]);
    return ErrnoStatus("pipe", errno);
  }
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  posix_spawn_file_actions_adddup2(&fa, err[1], 2);
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e)
    if (std::strncmp(*e, "PROBING=", 8) != 0 && std::strncmp(*e, "PROBE=", 6) != 0)
      env.emplace_back(*e);
  env.emplace_back("PROBING=0");
  std::vector<char*> args, envp;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  pid_t pid = 0;
  const int rc = posix_spawnp(&pid, argv[0].c_str(), &fa, nullptr, args.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  close(out[1]);
  close(err[1]);
  if (rc != 0) {
    close(out[0]);
    close(err[0]);
    return ErrnoStatus("cannot run " + argv[0], rc);
  }
  Ran ran;
  const int64_t deadline = MonotonicNs() + static_cast<int64_t>(seconds * 1e9);
  pollfd fds[2] = {{out[0], POLLIN, 0}, {err[0], POLLIN, 0}};
  int open_fds = 2;
  bool timed_out = false;
  while (open_fds > 0) {
    const int64_t left_ms = (deadline - MonotonicNs()) / 1'000'000;
    if (left_ms <= 0) {
      timed_out = true;
      break;
    }
    if (poll(fds, 2, static_cast<int>(left_ms)) < 0 && errno != EINTR) break;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || fds[i].revents == 0) continue;
      char buf[4096];
      const ssize_t n = read(fds[i].fd, buf, sizeof buf);
      if (n > 0) {
        (i == 0 ? ran.out : ran.err).append(buf, static_cast<size_t>(n));
      } else if (n == 0 || errno != EINTR) {
        close(fds[i].fd);
        fds[i].fd = -1;
        --open_fds;
      }
    }
  }
  for (auto& f : fds)
    if (f.fd >= 0) close(f.fd);
  if (timed_out) kill(pid, SIGKILL);
  while (waitpid(pid, &ran.status, 0) < 0 && errno == EINTR) {
  }
  if (timed_out)
    return DeadlineExceeded(argv[0] + " did not answer within " + std::to_string(int(seconds)) +
                            " s");
  return ran;
}

std::string LastLine(const std::string& text) {
  std::string t = text;
  while (!t.empty() && (t.back() == '\n' || t.back() == ' ')) t.pop_back();
  const size_t nl = t.rfind('\n');
  return nl == std::string::npos ? t : t.substr(nl + 1);
}

// What the interpreter says of itself. Python 2 and 3 parse this; versions we cannot serve are
// refused by version, not by a syntax error.
constexpr const char* kAsk =
    "import json, sys, sysconfig, site\n"
    "u = site.getusersitepackages() if getattr(site, 'ENABLE_USER_SITE', False) else ''\n"
    "print(json.dumps({'executable': sys.executable, 'major': sys.version_info[0],\n"
    "                  'minor': sys.version_info[1], 'purelib': sysconfig.get_paths()['purelib'],\n"
    "                  'user_site': u, 'venv': sys.prefix != getattr(sys, 'base_prefix', sys.prefix)}))\n";

bool OursOrOldHook(const std::string& text) {
  // Ours, or the one-line hook `make install` puts beside the package (same hook, no path).
  return text.rfind(kMarker, 0) == 0 ||
         (text.find("probing._startup") != std::string::npos &&
          std::count(text.begin(), text.end(), '\n') <= 1);
}

}  // namespace

Result<InstallOutcome> InstallHook(const InstallOptions& options) {
  const std::string& py = options.python;
  PROBING_ASSIGN_OR_RETURN(Ran asked, RunCaptured({py, "-c", kAsk}, 30));
  nlohmann::json info = nlohmann::json::parse(LastLine(asked.out), nullptr, false);
  if (!WIFEXITED(asked.status) || WEXITSTATUS(asked.status) != 0 || !info.is_object() ||
      !info.contains("purelib"))
    return InvalidArgument(py + " is not a Python interpreter we can use" +
                           (asked.err.empty() ? std::string()
                                              : " (it said: " + LastLine(asked.err) + ")"));
  InstallOutcome done;
  done.executable = info.value("executable", py);
  const int major = info.value("major", 0), minor = info.value("minor", 0);
  done.version = std::to_string(major) + "." + std::to_string(minor);
  const std::string tag = std::to_string(major) + std::to_string(minor);

  std::string site = info.value("purelib", "");
  if (options.user) {
    if (info.value("venv", false))
      return InvalidArgument(done.executable + " is a virtual environment's: it has no user "
                             "site-packages; leave out --user");
    site = info.value("user_site", "");
    if (site.empty())
      return InvalidArgument(done.executable + " has user site-packages turned off; leave out "
                             "--user");
  }
  done.pth = site + "/probing.pth";

  std::error_code ec;
  if (options.remove) {
    auto text = ReadSmallFile(done.pth, 1 << 16, Follow::kNo);
    if (!text.ok()) return done;  // nothing to take out
    if (!OursOrOldHook(*text))
      return InvalidArgument(done.pth + " was not written by probing; left as it is");
    if (!fs::remove(done.pth, ec) || ec)
      return ErrnoStatus("remove " + done.pth, ec ? ec.value() : EIO);
    done.changed = true;
    return done;
  }

  if (major != 3 || minor < 8)
    return InvalidArgument(done.executable + " is Python " + done.version +
                           "; the recorder runs under Python 3.8 to 3.13");
  // The recorder for its version, and the package beside it.
  std::string recorder, built;
  for (const std::string& dir : RecorderDirs()) {
    for (const auto& e : fs::directory_iterator(dir, ec)) {
      const std::string name = e.path().filename().string();
      if (name.rfind("probing_recorder_cp", 0) == 0) built += (built.empty() ? "" : ", ") + name;
    }
    const std::string so = dir + "/probing_recorder_cp" + tag + ".so";
    if (recorder.empty() && fs::exists(so, ec)) recorder = so;
    if (done.package_dir.empty() && fs::exists(dir + "/python/probing/__init__.py", ec))
      done.package_dir = dir + "/python";
  }
  if (recorder.empty())
    return NotFound("no recorder is built for Python " + done.version + " (" +
                    (built.empty() ? "none found" : "built: " + built) +
                    "); rebuild after installing that interpreter (make build finds those under "
                    "~/.pyenv/versions)");
  if (done.package_dir.empty())
    return NotFound("the probing Python package is not beside the recorder (" + recorder +
                    "): rebuild, or reinstall with make install");
  auto hook = ReadSmallFile(done.package_dir + "/probing.pth", 1 << 16, Follow::kYes);
  if (!hook.ok()) return hook.status().WithContext("the start-up hook");

  if (auto old = ReadSmallFile(done.pth, 1 << 16, Follow::kNo); old.ok() && !OursOrOldHook(*old))
    return InvalidArgument(done.pth + " exists and was not written by probing; left as it is");
  fs::create_directories(site, ec);
  if (ec) return ErrnoStatus("create " + site, ec.value());
  const std::string tmp = done.pth + ".tmp";
  {
    std::ofstream f(tmp, std::ios::trunc);
    f << kMarker << " (" << done.executable << ")\n" << done.package_dir << "\n" << *hook;
    if (!f.flush()) return ErrnoStatus("write " + tmp, errno);
  }
  if (rename(tmp.c_str(), done.pth.c_str()) != 0) {
    const int err = errno;
    fs::remove(tmp, ec);
    return ErrnoStatus("write " + done.pth, err);
  }
  done.changed = true;

  // Checked through the hook: the interpreter imports our package and finds its recorder.
  PROBING_ASSIGN_OR_RETURN(
      Ran check, RunCaptured({py, "-c", "import probing._recorder as r; print(r.library_path())"},
                             30));
  if (!WIFEXITED(check.status) || WEXITSTATUS(check.status) != 0)
    return Internal("wrote " + done.pth + ", but " + done.executable +
                    " cannot find the recorder through it: " + LastLine(check.err));
  done.recorder = LastLine(check.out);
  return done;
}

}  // namespace probing::live
