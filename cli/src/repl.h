// `probing -t PID repl`: an interactive Python prompt whose code runs in the target's __main__
// (over POST /eval). Line editing and history (libedit), tab completion computed in the target
// (rlcompleter on its namespace), multi-line blocks decided by the target's own compiler
// (codeop), Ctrl-C drops the line or stops waiting (never touches the target), Ctrl-D leaves.
// Without a terminal on standard input it reads statements from it, without prompts.
//
//   return probing::cli::RunRepl(*session, {.history = "~/.probing_history"});
#pragma once

#include <string>

#include "probing/live/session.h"

namespace probing::cli {

struct ReplOptions {
  std::string history;   // file; empty: no history kept
  double timeout = 300;  // seconds each statement may run in the target
};

// Returns the exit code: 0 after Ctrl-D or end of input, 1 when the target cannot be reached.
int RunRepl(live::Session& target, const ReplOptions& options);

}  // namespace probing::cli
