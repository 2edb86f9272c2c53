// Recording: follows a process's ring directory and appends every new segment, re-compressed
// with zstd, to a .ptrace file (`probing record`). Segments a ring overwrote before they could
// be copied are counted, and the count is written into the file as a "lost" record, so a
// recording never drops data silently. The file is valid at every moment: a crash of the
// recorder loses at most the segment being written, and Finish() adds the index.
//
//   PROBING_ASSIGN_OR_RETURN(auto rec, Recording::Create("/dev/shm/probing-0/4242", "run.ptrace"));
//   while (running) { PROBING_RETURN_IF_ERROR(rec.Poll()); sleep(0.1); }
//   PROBING_RETURN_IF_ERROR(rec.Finish());
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "probing/format/ptrace.h"
#include "probing/format/ring.h"

namespace probing::live {

class Recording {
 public:
  struct Progress {
    uint64_t segments = 0;  // copied into the file
    uint64_t events = 0;    // events in those segments
    uint64_t bytes = 0;     // file size so far
    uint64_t lost = 0;      // overwritten in a ring before they were copied
    uint64_t corrupt = 0;   // copied but failing their checksum: left out, counted as lost
    uint64_t rings = 0;     // ring files followed
  };

  // Starts the file. Segments already in the rings are recorded too (the oldest still there
  // first); what the rings had already overwritten before we started is not counted as lost.
  // `zstd_level` is the recording's compression level (1 to 19).
  static Result<Recording> Create(const std::string& ring_dir, const std::string& out_path,
                                  int zstd_level = kDefaultLevel);
  static constexpr int kDefaultLevel = 9;

  // Copies every segment new since the last call, from every ring (rings that appear later,
  // such as torch.ring once PyTorch is imported, are picked up).
  Status Poll();
  // A last Poll, then the index and trailer.
  Status Finish();

  const Progress& progress() const { return progress_; }

 private:
  struct Followed {
    std::unique_ptr<format::RingReader> reader;
    uint64_t cursor = 0;
  };
  Recording(std::string dir, format::PtraceWriter writer, int level)
      : dir_(std::move(dir)), writer_(std::move(writer)), level_(level) {}
  Status Discover();
  std::string dir_;
  format::PtraceWriter writer_;
  int level_;
  std::map<std::string, Followed> rings_;  // by file name
  Progress progress_;
  bool finished_ = false;
};

}  // namespace probing::live
