// Recording: follows a session's segments and appends every new one, re-compressed with zstd,
// to a .ptrace file (`probing record`), for a local process, a ring directory or a recorder on
// another host alike. Segments a ring overwrote before they could be copied are counted, and
// the count is written into the file as a "lost" record, so a recording never drops data
// silently. The file is valid at every moment: a crash of the recorder loses at most the segment
// being written, and Finish() adds the index.
//
//   PROBING_ASSIGN_OR_RETURN(auto session, Session::Open("4242", {}));
//   RecordOptions o;
//   o.output = "run.ptrace";
//   o.duration = 10;
//   PROBING_ASSIGN_OR_RETURN(RecordOutcome r, Record(session.get(), o, stop_flag, on_progress));
//
//   o.command = {"python3", "train.py"};               // or start it with the recorder on
//   PROBING_ASSIGN_OR_RETURN(RecordOutcome r, Record(nullptr, o, stop_flag, on_progress));
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "probing/format/ptrace.h"
#include "probing/live/segment_source.h"

namespace probing::live {

class Session;

class Recording {
 public:
  struct Progress {
    uint64_t segments = 0;  // copied into the file
    uint64_t events = 0;    // events in those segments
    uint64_t bytes = 0;     // file size so far
    uint64_t lost = 0;      // overwritten in a ring before they were copied
    uint64_t corrupt = 0;   // copied but failing their checksum: left out, counted as lost
    uint64_t rings = 0;     // rings followed
  };

  // Starts the file. Segments already in the rings are recorded too (the oldest still there
  // first); what the rings had already overwritten before we started is not counted as lost.
  // `pid` goes into the file header (0: unknown; the segments carry theirs). `zstd_level` is
  // the recording's compression level (1 to 19).
  static Result<Recording> Create(SegmentSource* source, const std::string& out_path, uint32_t pid,
                                  int zstd_level = kDefaultLevel);
  static constexpr int kDefaultLevel = 9;

  // Copies every segment new since the last call, from every ring (rings that appear later,
  // such as torch.ring once PyTorch is imported, are picked up).
  Status Poll();
  // A last Poll (unless the source is known to be gone), then the index and trailer.
  Status Finish(bool last_poll = true);

  const Progress& progress() const { return progress_; }

 private:
  Recording(SegmentSource* source, format::PtraceWriter writer, int level)
      : source_(source), writer_(std::move(writer)), level_(level) {}
  SegmentSource* source_;
  format::PtraceWriter writer_;
  int level_;
  Cursors cursors_;
  std::map<std::string, uint32_t> pid_of_ring_;  // for the lost records
  Progress progress_;
  bool finished_ = false;
};

struct RecordOptions {
  std::string output;     // the .ptrace file (replaced)
  double duration = 0;    // seconds; 0: until stopped or the target ends
  double interval = 0.1;  // seconds between copies
  int level = Recording::kDefaultLevel;
  // Started with the recorder on (PROBING=1) and recorded from its first step, instead of a
  // session. It ends with the recording: one SIGINT, then SIGKILL after 10 s.
  std::vector<std::string> command;
  std::string data_dir;       // where a launched command's recorder writes (empty: the default)
  double start_timeout = 60;  // seconds a launched command has to start its recorder
};

struct RecordProgress {
  pid_t pid = 0;  // 0 for a remote target
  double seconds = 0;
  Recording::Progress progress;
};

struct RecordOutcome {
  pid_t pid = 0;
  std::string target;  // "process 4242", "node7:9922"
  double seconds = 0;
  std::string ended;  // "the duration was reached", "interrupted", "process 4242 ended", ...
  Recording::Progress progress;
  // A launched command: how it ended (a waitpid status), and whether we stopped it.
  std::optional<int> child_status;
  bool child_interrupted = false;
};

// Records `session` (or launches options.command when session is null) until the duration,
// a nonzero *stop (the signal number that asked for it), or the target's end. `on_progress` is
// called after every copy; `on_notice` gets one-line messages for the user (waiting for a
// launched command's recorder, and why it does not start).
Result<RecordOutcome> Record(Session* session, const RecordOptions& options,
                             const std::atomic<int>& stop,
                             const std::function<void(const RecordProgress&)>& on_progress,
                             const std::function<void(const std::string&)>& on_notice);

}  // namespace probing::live
