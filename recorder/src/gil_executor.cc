#include "gil_executor.h"

#include <Python.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <thread>

#include "config.h"
#include "py_ref.h"
#include "probing/base/clock.h"

namespace probing::recorder {
namespace {

// What one taking of the GIL costs the interpreter beyond the jobs' own time: its thread
// drops the GIL at its next switch interval, waits for ours to run and give it back, then to
// be woken. Counted against the share.
constexpr int64_t kHandoffNs = 200'000;
// Jobs waiting when the GIL is taken run together, up to this long, so that many requests at
// once cost one handoff rather than one each.
constexpr int64_t kBatchNs = 5'000'000;
// The pacing is a token bucket of GIL time, refilled at `share` of the wall clock: a burst of
// up to this much (a person's few requests, a tool's short series) runs at once; only a
// sustained stream waits its turn.
constexpr double kBurstNs = 100'000'000;
// The longest pause after one taking: a single long request (an eval of a few seconds, which
// its user asked for) delays the next by at most this, instead of 1/share times its length.
constexpr int64_t kMaxRestNs = 1'000'000'000;

}  // namespace

bool GilExecutor::Start(std::string* why) {
  std::lock_guard<std::mutex> lock(mu_);
  if (started_) return true;
  try {
    std::thread([this] { Loop(); }).detach();
  } catch (const std::exception& e) {
    *why = std::string("no thread for requests that need the GIL: ") + e.what();
    return false;
  }
  started_ = true;
  return true;
}

void GilExecutor::Stop() {
  std::lock_guard<std::mutex> lock(mu_);
  stop_ = true;
  cv_.notify_all();
  done_cv_.notify_all();
}

void GilExecutor::Loop() {
  pthread_setname_np(pthread_self(), "probing-gil");
  native_id_ = static_cast<uint64_t>(syscall(SYS_gettid));
  python_ident_ = static_cast<unsigned long>(pthread_self());  // what threading.get_ident() says
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
      // Paced: requests that need the GIL take at most their share of the interpreter's time
      // (probing.server.gil_share); the waiting ones count as busy, not as a hung interpreter.
      cv_.wait_until(lock, std::chrono::steady_clock::time_point(std::chrono::nanoseconds(next_ns_)),
                     [&] { return stop_; });
      if (stop_) return;
      if (queue_.empty()) continue;  // every waiting job was given up meanwhile
      acquiring_ = true;
    }
    if (!Py_IsInitialized()) {
      std::lock_guard<std::mutex> lock(mu_);
      acquiring_ = false;
      for (auto& job : queue_) job->state = Job::kCancelled;
      queue_.clear();
      done_cv_.notify_all();
      continue;
    }
    int64_t held_from = 0;
    {
      GilGuard gil;  // may wait as long as the interpreter wants
      held_from = MonotonicNs();
      for (;;) {
        std::shared_ptr<Job> job;
        {
          std::lock_guard<std::mutex> lock(mu_);
          acquiring_ = false;
          while (!queue_.empty() && !job) {
            if (queue_.front()->state == Job::kQueued && !stop_) job = queue_.front();
            queue_.pop_front();
          }
          if (!job) break;
          job->state = Job::kRunning;
          done_cv_.notify_all();
        }
        job->fn();
        // An interruption that arrived after the job ended must not hit the next one.
        PyThreadState_SetAsyncExc(python_ident_, nullptr);
        PyErr_Clear();
        {
          std::lock_guard<std::mutex> lock(mu_);
          job->state = Job::kDone;
          done_cv_.notify_all();
        }
        if (MonotonicNs() - held_from > kBatchNs) break;
      }
    }
    const int64_t now = MonotonicNs();
    const double share = Config::Get().gil_share();
    // Refill for the time since the last taking, pay for this one, and wait while in debt.
    tokens_ns_ = std::min(kBurstNs, tokens_ns_ + static_cast<double>(now - refilled_ns_) * share);
    refilled_ns_ = now;
    tokens_ns_ -= static_cast<double>(now - held_from + kHandoffNs);
    tokens_ns_ = std::max(tokens_ns_, -share * static_cast<double>(kMaxRestNs));
    std::lock_guard<std::mutex> lock(mu_);
    next_ns_ = tokens_ns_ >= 0 ? now : now + static_cast<int64_t>(-tokens_ns_ / share);
  }
}

std::shared_ptr<GilExecutor::Job> GilExecutor::Enqueue(std::function<void()> fn) {
  auto job = std::make_shared<Job>();
  job->fn = std::move(fn);
  queue_.push_back(job);
  cv_.notify_all();
  return job;
}

GilExecutor::Outcome GilExecutor::Run(std::function<void()> fn, int gil_timeout_ms,
                                      int run_timeout_ms) {
  std::unique_lock<std::mutex> lock(mu_);
  if (stop_ || !started_) return Outcome::kStopped;
  auto job = Enqueue(std::move(fn));
  return Wait(job, lock, gil_timeout_ms, run_timeout_ms);
}

int GilExecutor::TurnInMs() {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int>(std::max<int64_t>(0, next_ns_ - MonotonicNs()) / 1'000'000);
}

GilExecutor::Outcome GilExecutor::RunInterruptible(std::function<void()> fn, int gil_timeout_ms,
                                                   int run_timeout_ms, int grace_ms) {
  std::unique_lock<std::mutex> lock(mu_);
  if (stop_ || !started_) return Outcome::kStopped;
  auto job = Enqueue(std::move(fn));
  Outcome o = Wait(job, lock, gil_timeout_ms, run_timeout_ms);
  if (o != Outcome::kRunTimeout) return o;
  unsigned long ident = python_ident_;
  try {
    std::thread([job, ident] {
      // Waits for the GIL like any thread; the running Python code gives it up regularly.
      GilGuard gil;
      PyObject* exc = job->state == Job::kRunning ? PyExc_TimeoutError : nullptr;
      if (exc != nullptr) PyThreadState_SetAsyncExc(ident, exc);
    }).detach();
  } catch (const std::exception&) {
    return Outcome::kRunTimeout;  // no thread to interrupt it with: it runs on, as a C call would
  }
  bool finished = done_cv_.wait_for(lock, std::chrono::milliseconds(grace_ms),
                                    [&] { return job->state == Job::kDone || stop_; });
  return finished && job->state == Job::kDone ? Outcome::kDone : Outcome::kRunTimeout;
}

GilExecutor::Outcome GilExecutor::Wait(const std::shared_ptr<Job>& job,
                                       std::unique_lock<std::mutex>& lock, int gil_timeout_ms,
                                       int run_timeout_ms) {
  auto started = done_cv_.wait_for(lock, std::chrono::milliseconds(gil_timeout_ms),
                                   [&] { return job->state != Job::kQueued || stop_; });
  if (!started || stop_) {
    if (job->state == Job::kQueued) job->state = Job::kCancelled;
    if (stop_) return Outcome::kStopped;
    // Still queued: either the interpreter has not given up the GIL, or other requests used
    // up the share meanwhile.
    return acquiring_ ? Outcome::kGilTimeout : Outcome::kBusy;
  }
  if (job->state == Job::kCancelled) return Outcome::kStopped;
  bool finished = done_cv_.wait_for(lock, std::chrono::milliseconds(run_timeout_ms),
                                    [&] { return job->state == Job::kDone || stop_; });
  // The job may outlive this call (a C call that ignores the deadline): it owns its state.
  return finished && job->state == Job::kDone ? Outcome::kDone : Outcome::kRunTimeout;
}

}  // namespace probing::recorder
