// Where recorded segments come from, one interface for every kind of target: the ring files of
// a process on this host (alive or dead), recordings (.ptrace files), and a recorder on another
// host that hands out its sealed segments over TCP (GET /segments). Queries, recordings, flame
// graphs and memory read through it and cannot tell the kinds apart.
//
//   std::unique_ptr<SegmentSource> src = RingDirSource::Open("/dev/shm/probing-0/4242");
//   Cursors cursors;                        // ring -> next seq; empty: from the oldest
//   FetchOutcome got;
//   PROBING_RETURN_IF_ERROR(src->Fetch({"stacks"}, &cursors, &got));   // raw, as sealed
//   PROBING_ASSIGN_OR_RETURN(format::TraceSet set, LoadStreams(*src, {format::Stream::kStacks}));
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "probing/base/status.h"
#include "probing/format/events.h"
#include "probing/format/ring.h"
#include "probing/format/trace_set.h"

namespace probing::live {

class ControlClient;

// One sealed segment as it lies in its ring or file: checksummed, compressed, not yet decoded.
struct RawSegment {
  std::string ring;    // "stacks", "memory", ... (a recording: the stream its header names)
  std::string origin;  // the file (or remote ring) it came from, as stats() names it
  uint64_t seq = 0;
  std::string bytes;
  int64_t shift_ns = 0;  // added to its times once decoded (a bundle's clock offsets)
};

// ring -> the next seq to fetch. A ring missing from the map starts at its oldest segment.
using Cursors = std::map<std::string, uint64_t>;

struct FetchOutcome {
  std::vector<RawSegment> segments;
  // Per ring: segments overwritten before they could be copied.
  std::map<std::string, uint64_t> lost;
  std::map<std::string, std::string> origin_of;  // ring -> its origin, for the lost counts
  // Per origin of a ring that wraps (a live ring, local or remote): the oldest seq it still
  // holds, so a reader that keeps segments can drop the ones the ring no longer has.
  std::map<std::string, uint64_t> oldest;
};

class SegmentSource {
 public:
  virtual ~SegmentSource() = default;
  virtual std::string Describe() const = 0;
  // Asks a live recorder to seal its open segments now, so that what it recorded in the last
  // second is readable. Best effort: a no-op for files, and OK (with nothing sealed) when the
  // target cannot answer (stopped, gone); only a refusal (a wrong token) is an error.
  virtual Status Seal() { return Status::Ok(); }
  // Appends to `out` the segments of `rings` (empty: every ring) after each ring's cursor, and
  // moves the cursors past them. Sources with a cap per call (remote) return what fits; call
  // again until a call adds nothing. Damage is counted (stats(), out->lost), never fatal.
  virtual Status Fetch(const std::vector<std::string>& rings, Cursors* cursors,
                       FetchOutcome* out) = 0;
  // One entry per origin (ring file, recording, remote ring) with what opening it found:
  // damaged ring files, bytes of a recording that did not parse. Decoding adds the rest
  // (LoadStreams).
  virtual std::vector<format::SourceStats> stats() const = 0;
  // True when segments may still arrive (a live ring); false for files and dead rings.
  virtual bool live() const { return false; }
};

// A directory of ring files: $PROBING_DATA_DIR/<pid>/ of a live or dead process. Only regular
// files named *.ring are read (never through a symlink or from a FIFO); a damaged ring file is
// skipped and reported in stats(); the others load. `seal` asks the process to seal (may be
// empty); `alive` tells whether the writer still runs.
class RingDirSource : public SegmentSource {
 public:
  static Result<std::unique_ptr<RingDirSource>> Open(const std::string& dir,
                                                     std::function<Status()> seal = {},
                                                     std::function<bool()> alive = {});
  std::string Describe() const override { return "the rings in " + dir_; }
  Status Seal() override { return seal_ ? seal_() : Status::Ok(); }
  Status Fetch(const std::vector<std::string>& rings, Cursors* cursors, FetchOutcome* out) override;
  std::vector<format::SourceStats> stats() const override;
  bool live() const override { return alive_ && alive_(); }
  const std::string& dir() const { return dir_; }

 private:
  RingDirSource(std::string dir, std::function<Status()> seal, std::function<bool()> alive)
      : dir_(std::move(dir)), seal_(std::move(seal)), alive_(std::move(alive)) {}
  void Discover();
  std::string dir_;
  std::function<Status()> seal_;
  std::function<bool()> alive_;
  std::map<std::string, std::unique_ptr<format::RingReader>> rings_;  // by ring name
  std::map<std::string, std::string> damaged_;                        // file -> why
};

// One or more recordings (.ptrace files, or single ring files given by name). Fetch returns
// every segment once, by stream.
class RecordingSource : public SegmentSource {
 public:
  // `shifts_ns`, when given, one per path: added to each file's event times.
  static Result<std::unique_ptr<RecordingSource>> Open(const std::vector<std::string>& paths,
                                                       std::vector<int64_t> shifts_ns = {});
  std::string Describe() const override;
  Status Fetch(const std::vector<std::string>& rings, Cursors* cursors, FetchOutcome* out) override;
  std::vector<format::SourceStats> stats() const override;

 private:
  RecordingSource() = default;
  struct File;
  std::vector<std::shared_ptr<File>> files_;
};

// A recorder on another host, through its control server's GET /segments.
class RemoteSource : public SegmentSource {
 public:
  explicit RemoteSource(ControlClient* client) : client_(client) {}
  std::string Describe() const override;
  Status Seal() override;
  Status Fetch(const std::vector<std::string>& rings, Cursors* cursors, FetchOutcome* out) override;
  std::vector<format::SourceStats> stats() const override { return stats_; }
  bool live() const override { return true; }

 private:
  ControlClient* client_;
  std::vector<format::SourceStats> stats_;
};

// Several sources read as one (probing-analyze rank0.ptrace rank1.ptrace /dev/shm/.../4242).
class MultiSource : public SegmentSource {
 public:
  explicit MultiSource(std::vector<std::unique_ptr<SegmentSource>> parts)
      : parts_(std::move(parts)) {}
  std::string Describe() const override;
  Status Seal() override;
  Status Fetch(const std::vector<std::string>& rings, Cursors* cursors, FetchOutcome* out) override;
  std::vector<format::SourceStats> stats() const override;
  bool live() const override;

 private:
  std::vector<std::unique_ptr<SegmentSource>> parts_;
  std::vector<Cursors> cursors_;  // one set per part: their ring names may coincide
};

// A bundle (`probing cluster record -o DIR`): DIR/manifest.json lists one recording per rank
// and each rank's clock offset, applied as its segments are decoded. Nullopt when `dir` holds
// no manifest; an error when it holds a damaged one.
Result<std::optional<std::unique_ptr<SegmentSource>>> OpenBundle(const std::string& dir);

// Recorded data on disk: each path a .ptrace file, a single ring file, a ring directory, or a
// bundle directory (with its manifest.json).
// Fails only when a path cannot be read at all or is not a trace; damage inside is counted.
Result<std::unique_ptr<SegmentSource>> OpenFiles(const std::vector<std::string>& paths);

// Why `path` cannot be opened, in words for the user: "...: permission denied (run probing as
// its owner, or as root)", "...: no such file or directory", else the system's message.
Status CannotOpen(const std::string& path, int err);

// The ring a stream's segments live in ("stacks" for Stream::kStacks).
std::string RingOf(format::Stream stream);

// Every segment of these streams (empty: all) the source holds now, decoded, with per-ring
// counts of what loaded, was lost or was damaged. Asks nothing of the target: call Seal first
// for the newest second.
Result<format::TraceSet> LoadStreams(SegmentSource& source,
                                     const std::vector<format::Stream>& streams);

}  // namespace probing::live
