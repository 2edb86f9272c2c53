#include "gil_executor.h"

#include <Python.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <chrono>
#include <thread>

namespace probing::recorder {

void GilExecutor::Start() {
  std::lock_guard<std::mutex> lock(mu_);
  if (started_) return;
  started_ = true;
  std::thread([this] { Loop(); }).detach();
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
    std::shared_ptr<Job> job;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
      if (stop_) return;
      job = queue_.front();
      queue_.pop_front();
      if (job->state == Job::kCancelled) continue;
    }
    if (!Py_IsInitialized()) {
      std::lock_guard<std::mutex> lock(mu_);
      job->state = Job::kCancelled;
      done_cv_.notify_all();
      continue;
    }
    PyGILState_STATE g = PyGILState_Ensure();  // may wait as long as the interpreter wants
    bool run = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (job->state == Job::kQueued && !stop_) {
        job->state = Job::kRunning;
        run = true;
      }
      done_cv_.notify_all();
    }
    if (run) job->fn();
    // An interruption that arrived after the job ended must not hit the next one.
    PyThreadState_SetAsyncExc(python_ident_, nullptr);
    PyErr_Clear();
    PyGILState_Release(g);
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (run) job->state = Job::kDone;
      done_cv_.notify_all();
    }
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

GilExecutor::Outcome GilExecutor::RunInterruptible(std::function<void()> fn, int gil_timeout_ms,
                                                   int run_timeout_ms, int grace_ms) {
  std::unique_lock<std::mutex> lock(mu_);
  if (stop_ || !started_) return Outcome::kStopped;
  auto job = Enqueue(std::move(fn));
  Outcome o = Wait(job, lock, gil_timeout_ms, run_timeout_ms);
  if (o != Outcome::kRunTimeout) return o;
  unsigned long ident = python_ident_;
  std::thread([job, ident] {
    // Waits for the GIL like any thread; the running Python code gives it up regularly.
    PyGILState_STATE g = PyGILState_Ensure();
    PyObject* exc = job->state == Job::kRunning ? PyExc_TimeoutError : nullptr;
    if (exc != nullptr) PyThreadState_SetAsyncExc(ident, exc);
    PyGILState_Release(g);
  }).detach();
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
    return stop_ ? Outcome::kStopped : Outcome::kGilTimeout;
  }
  if (job->state == Job::kCancelled) return Outcome::kStopped;
  bool finished = done_cv_.wait_for(lock, std::chrono::milliseconds(run_timeout_ms),
                                    [&] { return job->state == Job::kDone || stop_; });
  // The job may outlive this call (a C call that ignores the deadline): it owns its state.
  return finished && job->state == Job::kDone ? Outcome::kDone : Outcome::kRunTimeout;
}

}  // namespace probing::recorder
