// `probing install`: the PROBING=1 start-up hook for one interpreter, venv or conda environment.
// It asks the interpreter where its site-packages are, checks that a recorder is built for its
// version, and writes probing.pth there: a line that puts this build's (or installation's)
// `probing` package on sys.path, and the hook line of python/probing.pth. Then it asks the
// interpreter to find its recorder through the hook, so a success is a checked one.
//
//   auto done = InstallHook({.python = "/opt/venv/bin/python"});
//   // done->pth == "/opt/venv/lib/python3.11/site-packages/probing.pth"
#pragma once

#include <string>

#include "probing/base/status.h"

namespace probing::live {

struct InstallOptions {
  std::string python = "python3";  // a path, or a name looked up in PATH
  bool user = false;               // the interpreter's user site-packages, not its own
  bool remove = false;             // take the hook out again
};

struct InstallOutcome {
  std::string executable;   // sys.executable
  std::string version;      // "3.11"
  std::string pth;          // the probing.pth written (or removed)
  std::string package_dir;  // the directory probing.pth puts on sys.path
  std::string recorder;     // the recorder the interpreter found through the hook
  bool changed = false;     // false: --remove found no hook of ours
};

Result<InstallOutcome> InstallHook(const InstallOptions& options);

}  // namespace probing::live
