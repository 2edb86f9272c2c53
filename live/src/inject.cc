#include "probing/live/inject.h"

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <thread>

#include "probing/base/clock.h"
#include "probing/live/control_client.h"

namespace probing::live {

std::vector<std::string> RecorderDirs() {
  const char* only = std::getenv("PROBING_RECORDER_DIR");  // NOLINT(concurrency-mt-unsafe)
  if (only != nullptr && *only != '\0') return {only};
  std::vector<std::string> dirs;
  std::error_code ec;
  std::filesystem::path exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    dirs.push_back((exe.parent_path().parent_path() / "lib").string());
    dirs.push_back((exe.parent_path().parent_path() / "lib" / "probing").string());
  }
  return dirs;
}

Result<InjectOutcome> InjectAndWait(const InjectOptions& options) {
  const int64_t began = MonotonicNs();
  injector::Options io;
  io.pid = options.pid;
  io.recorder_dirs = RecorderDirs();
  io.library = options.library;
  io.safe_point_timeout_ms = static_cast<int64_t>(options.safe_point_timeout_s * 1000);
  io.on_slow = options.on_slow;
  InjectOutcome out;
  PROBING_ASSIGN_OR_RETURN(out.injected, injector::Inject(io));
  // The recorder answers once its control server is up; its rings fill from then on.
  ControlClient client(Endpoint::Local(options.pid), "", 5);
  const std::string p = std::to_string(options.pid);
  for (;;) {
    auto r = client.Get<protocol::InfoReply>(std::string(protocol::kInfoPath), "info");
    if (r.ok()) {
      out.info = std::move(r).value();
      break;
    }
    const ProcessState state = StateOf(options.pid);
    if (state == ProcessState::kGone || state == ProcessState::kZombie)
      return Unavailable("process " + p +
                         " exited while its recorder was starting (`probing list --gc` removes "
                         "what it left)");
    if (static_cast<double>(MonotonicNs() - began) / 1e9 > options.answer_timeout_s)
      return Unavailable("the recorder was loaded into process " + p + " but does not answer (" +
                         r.status().message() + "); its standard error says why");
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  out.answered_ms = static_cast<double>(MonotonicNs() - began) / 1e6;
  for (const auto& [key, value] : options.settings) {
    auto r = client.Post<protocol::ConfigReply>(std::string(protocol::kConfigPath),
                                                protocol::ConfigSetRequest{key, value}, "config");
    if (!r.ok()) return r.status().WithContext("the recorder is running, but --set " + key);
  }
  return out;
}

}  // namespace probing::live
