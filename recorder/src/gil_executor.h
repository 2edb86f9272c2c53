// Runs work that needs the GIL (eval, locals, custom tables) on one thread of the recorder's
// own, never on a caller's thread. A caller waits at most `gil_timeout_ms` for its job to
// start; if the interpreter has not released the GIL by then, the job is cancelled and the
// caller gets kGilTimeout, so a hung interpreter never hangs a request.
// The GIL is taken at a bounded pace: a token bucket of GIL time, refilled at `share` of the
// wall clock (probing.server.gil_share) and holding at most 100 ms, pays for each taking (the
// time held plus a handoff's cost); in debt, the executor waits (at most 1 s) and the jobs
// waiting then run together. So a burst of requests runs at once, and no number of clients
// sending without pause takes more than about `share` of the interpreter's time; a job still
// waiting for its turn at its timeout gets kBusy.
//
//   GilExecutor ex;  if (!ex.Start(&why)) ...;
//   auto st = ex.Run([&] { /* Python C API here, GIL held */ }, 5000, 30000);
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <cstdint>
#include <string>

namespace probing::recorder {

class GilExecutor {
 public:
  enum class Outcome { kDone, kGilTimeout, kBusy, kRunTimeout, kStopped };

  // Starts its thread; false (with why) when there is none to be had.
  bool Start(std::string* why);
  // Runs `fn` with the GIL held. `run_timeout_ms`: how long to wait for it to finish once it
  // started (fn must enforce its own deadline; past this the caller stops waiting). `fn` may
  // outlive this call, so it must own what it writes: capture a shared_ptr, never a reference
  // to the caller's stack.
  Outcome Run(std::function<void()> fn, int gil_timeout_ms, int run_timeout_ms);
  // How long until the pacing lets the GIL be taken again (0: now). A caller with a short
  // `gil_timeout_ms` adds it, so that it measures the interpreter, not the pacing.
  int TurnInMs();
  // Like Run, but when the job is still running after `run_timeout_ms`, raises TimeoutError in
  // it (PyThreadState_SetAsyncExc, from a helper thread that waits for the GIL; Python code
  // stops at its next instruction) and waits `grace_ms` more.
  Outcome RunInterruptible(std::function<void()> fn, int gil_timeout_ms, int run_timeout_ms,
                           int grace_ms);
  void Stop();
  uint64_t native_id() const { return native_id_; }

 private:
  struct Job {
    std::function<void()> fn;
    enum State { kQueued, kRunning, kDone, kCancelled } state = kQueued;
  };
  std::shared_ptr<Job> Enqueue(std::function<void()> fn);  // mu_ held
  Outcome Wait(const std::shared_ptr<Job>& job, std::unique_lock<std::mutex>& lock,
               int gil_timeout_ms, int run_timeout_ms);
  void Loop();

  std::mutex mu_;
  std::condition_variable cv_;       // jobs queued / stop
  std::condition_variable done_cv_;  // job state changes
  std::deque<std::shared_ptr<Job>> queue_;
  bool stop_ = false;
  bool started_ = false;
  bool acquiring_ = false;  // the executor waits in PyGILState_Ensure
  int64_t next_ns_ = 0;     // CLOCK_MONOTONIC: the GIL is not taken again before this
  // The pacing's bucket (only the executor thread touches these): GIL time left to take, in
  // ns (negative: owed), as of refilled_ns_.
  double tokens_ns_ = 0;
  int64_t refilled_ns_ = 0;
  uint64_t native_id_ = 0;
  unsigned long python_ident_ = 0;  // the executor thread's threading ident
};

}  // namespace probing::recorder
