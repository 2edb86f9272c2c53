#include "repl.h"

#include <editline/readline.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <iostream>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

namespace probing::cli {
namespace {

using json = nlohmann::json;

volatile sig_atomic_t g_interrupted = 0;
void OnInterrupt(int) { g_interrupted = 1; }

// What the prompt talks to: a copy of the session's transport, so that a call still running on
// its own thread after Ctrl-C never touches the session itself.
struct Session {
  live::ControlClient client;
  double timeout = 300;
};
const Session* g_session = nullptr;  // for libedit's completion callback
std::vector<std::string> g_matches;  // the completions being offered

// A JSON string is also a valid Python string literal: the way text reaches code we send.
std::string PyString(const std::string& s) { return json(s).dump(); }

Result<protocol::EvalReply> Eval(const Session& s, const std::string& code, double timeout) {
  live::ControlClient c = s.client;
  return c.Post<protocol::EvalReply>(std::string(protocol::kEvalPath),
                                     protocol::EvalRequest{code, timeout}, "eval", timeout + 10);
}

// Runs `call` on its own thread and waits for it; Ctrl-C stops the waiting (nullopt), not the
// call: an eval already sent runs on in the target until it ends or its timeout.
using EvalResult = Result<protocol::EvalReply>;
std::optional<EvalResult> Interruptible(std::function<EvalResult()> call) {
  struct Pending {
    std::mutex m;
    std::condition_variable cv;
    std::optional<EvalResult> result;
  };
  auto p = std::make_shared<Pending>();
  std::thread([p, call = std::move(call)] {
    auto r = call();
    std::lock_guard<std::mutex> l(p->m);
    p->result = std::move(r);
    p->cv.notify_one();
  }).detach();
  std::unique_lock<std::mutex> l(p->m);
  while (!p->result) {
    if (g_interrupted) return std::nullopt;
    p->cv.wait_for(l, std::chrono::milliseconds(20));
  }
  return std::move(p->result);
}

// What the target's rlcompleter offers for `text` in __main__'s namespace.
std::vector<std::string> TargetCompletions(const std::string& text) {
  const std::string code =
      "print(__import__('json').dumps((lambda c, t: list(__import__('itertools').takewhile("
      "lambda x: x is not None, (c.complete(t, i) for i in range(1000)))))("
      "__import__('rlcompleter').Completer(__import__('__main__').__dict__), " +
      PyString(text) + ")))";
  auto r = Eval(*g_session, code, 2);
  if (!r.ok() || r->exception) return {};
  json list = json::parse(r->out, nullptr, false);
  std::vector<std::string> out;
  if (list.is_array())
    for (const auto& m : list)
      if (m.is_string()) out.push_back(m.get<std::string>());
  return out;
}

char* NextMatch(const char*, int state) {
  return static_cast<size_t>(state) < g_matches.size() ? strdup(g_matches[state].c_str()) : nullptr;
}

char** CompleteInTarget(const char* text, int, int) {
  rl_attempted_completion_over = 1;  // never file names
  if (*text == '\0') {
    rl_insert_text("    ");  // Tab on nothing indents, as in Python's own prompt
    return nullptr;
  }
  g_matches = TargetCompletions(text);
  if (g_matches.empty()) return nullptr;
  return rl_completion_matches(text, NextMatch);
}

enum class Read { kLine, kInterrupted, kEnd };

Read ReadLine(bool tty, const char* prompt, std::string* line) {
  if (!tty) return std::getline(std::cin, *line) ? Read::kLine : Read::kEnd;
  g_interrupted = 0;
  char* l = readline(prompt);
  if (l == nullptr) return g_interrupted ? Read::kInterrupted : Read::kEnd;
  *line = l;
  free(l);  // NOLINT(cppcoreguidelines-no-malloc): readline's allocation
  return g_interrupted ? Read::kInterrupted : Read::kLine;
}

void Show(const protocol::EvalReply& r) {
  std::cout << r.out << std::flush;
  std::cerr << r.err;
  if (r.value) std::cout << *r.value << "\n";
  if (r.exception) std::cerr << r.exception->traceback;
  std::cout << std::flush;
  std::cerr << std::flush;
}

}  // namespace

int RunRepl(live::Session& target, const ReplOptions& options) {
  // The banner says what we are attached to, and proves the target answers.
  auto info = target.Info();
  if (!info.ok()) {
    std::cerr << "probing: " << info.status().message() << "\n";
    return 1;
  }
  auto client = target.Control("repl");
  if (!client.ok()) {
    std::cerr << "probing: " << client.status().message() << "\n";
    return 1;
  }
  Session session{**client, options.timeout};
  g_session = &session;
  const bool tty = isatty(STDIN_FILENO) != 0;
  if (tty) {
    std::cout
        << "Python " << info->python_version << " in " << target.Describe() << " (" << info->cmdline
        << ")\n"
        << "Code runs in its __main__. Tab completes, Ctrl-C drops the line, Ctrl-D leaves.\n";
    rl_readline_name = "probing";
    rl_attempted_completion_function = CompleteInTarget;
    rl_completion_append_character = '\0';
    static char breaks[] = " \t\n\"\\'`@$><=;|&{(,[]+-*/%:~^!";  // not '.': attributes complete
    rl_basic_word_break_characters = breaks;
    rl_completer_word_break_characters = breaks;
    using_history();
    stifle_history(1000);
    if (!options.history.empty()) read_history(options.history.c_str());
  }
  struct sigaction sa = {};
  sa.sa_handler = OnInterrupt;  // no SA_RESTART: a blocked read returns
  struct sigaction old_int;
  sigaction(SIGINT, &sa, &old_int);

  for (;;) {
    std::vector<std::string> lines;
    std::string line;
    Read got = ReadLine(tty, ">>> ", &line);
    if (got == Read::kEnd) break;
    if (got == Read::kInterrupted) {
      std::cout << "\nKeyboardInterrupt\n";
      continue;
    }
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    lines.push_back(line);
    // More lines while the target's compiler says the statement goes on.
    bool dropped = false, ended = false;
    for (;;) {
      std::string source;
      for (size_t i = 0; i < lines.size(); ++i) source += (i ? "\n" : "") + lines[i];
      g_interrupted = 0;
      auto done = Interruptible([session, source] {
        return Eval(session,
                    "print(__import__('codeop').compile_command(" + PyString(source) +
                        ", '<probing repl>', 'single') is not None)",
                    5);
      });
      if (!done) {
        std::cout << "\nKeyboardInterrupt\n";
        dropped = true;
        break;
      }
      if (!done->ok()) {
        std::cerr << "probing: " << done->status().message() << "\n";
        dropped = true;
        break;
      }
      // A syntax error is "complete": running it shows the error as Python words it.
      if ((*done)->exception || (*done)->out == "True\n") break;
      got = ReadLine(tty, "... ", &line);
      if (got == Read::kEnd) {
        ended = true;
        break;
      }
      if (got == Read::kInterrupted) {
        std::cout << "\nKeyboardInterrupt\n";
        dropped = true;
        break;
      }
      lines.push_back(line);
    }
    if (dropped) continue;
    std::string source;
    for (size_t i = 0; i < lines.size(); ++i) source += (i ? "\n" : "") + lines[i];
    if (tty) add_history(source.c_str());
    g_interrupted = 0;
    auto r = Interruptible([session, source] { return Eval(session, source, session.timeout); });
    if (!r) {
      std::cout << "\nKeyboardInterrupt (stopped waiting; the code runs on in the target until "
                   "it ends or its "
                << session.timeout << " s timeout)\n";
    } else if (!r->ok()) {
      std::cerr << "probing: " << r->status().message() << "\n";
      if (target.pid() && kill(*target.pid(), 0) != 0) break;  // the target is gone
    } else {
      Show(**r);
    }
    if (ended) break;
  }
  if (tty) {
    std::cout << "\n";
    if (!options.history.empty()) write_history(options.history.c_str());
  }
  sigaction(SIGINT, &old_int, nullptr);
  return 0;
}

}  // namespace probing::cli
