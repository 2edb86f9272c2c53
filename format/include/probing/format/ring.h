// Ring files: fixed slots in a shared file, one writer, any number of lock-free readers in
// other processes. Segment `seq` lives in slot `seq % slot_count`; a per-slot sequence word
// lets a reader detect a segment overwritten while it copied it and drop it. Layout and
// protocol: docs/format.md, "Ring file".
//
//   // writer (the recorder)
//   PROBING_ASSIGN_OR_RETURN(RingWriter w, RingWriter::Create(path, {Stream::kStacks, 256 << 10,
//   64, pid})); builder.Seal(Codec::kLz4, w.next_seq(), &bytes);  w.Append(bytes);
//   // reader (the CLI, any process)
//   PROBING_ASSIGN_OR_RETURN(RingReader r, RingReader::Open(path));
//   uint64_t cursor = 0, lost = 0;  std::vector<std::string> segs;
//   r.ReadFrom(&cursor, &segs, &lost);
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "probing/base/status.h"
#include "probing/format/events.h"
#include "probing/format/file.h"

namespace probing::format {

inline constexpr uint32_t kRingMagic = 0x474E5250;  // "PRNG"
inline constexpr size_t kRingHeaderSize = 4096;
inline constexpr size_t kSlotHeaderSize = 64;
inline constexpr uint32_t kMinSlotSize = 4096;
inline constexpr uint32_t kMaxSlotSize = 64u << 20;
inline constexpr uint32_t kMinSlotCount = 2;
inline constexpr uint32_t kMaxSlotCount = 1u << 20;

struct RingOptions {
  Stream stream = Stream::kMixed;
  uint32_t slot_size = 256 << 10;  // bytes per slot, slot header included
  uint32_t slot_count = 16;
  uint32_t pid = 0;
};

struct RingInfo {
  uint16_t version_major = 0;
  uint16_t version_minor = 0;
  Stream stream = Stream::kMixed;
  uint32_t slot_size = 0;
  uint32_t slot_count = 0;
  uint32_t pid = 0;
  int64_t created_ts = 0;
};

class RingWriter {
 public:
  // Creates (or replaces) the ring file with mode 0600, allocates and pre-faults it.
  static Result<RingWriter> Create(const std::string& path, const RingOptions& options);

  // The largest segment (header included) that fits in a slot.
  size_t max_segment_size() const { return info_.slot_size - kSlotHeaderSize; }
  // The seq the next appended segment must carry.
  uint64_t next_seq() const { return next_seq_; }
  // Publishes one sealed segment whose header seq is next_seq(). Never blocks, never allocates.
  Status Append(std::string_view segment) noexcept;
  const RingInfo& info() const { return info_; }

 private:
  RingWriter(MappedFile map, RingInfo info, uint64_t next)
      : map_(std::move(map)), info_(info), next_seq_(next) {}
  MappedFile map_;
  RingInfo info_;
  uint64_t next_seq_ = 0;
};

class RingReader {
 public:
  static Result<RingReader> Open(const std::string& path);

  const RingInfo& info() const { return info_; }
  // Segments ever committed (the next seq to be written).
  uint64_t next_seq() const;
  // The oldest seq that may still be in the ring.
  uint64_t oldest_seq() const;
  // Copies segment `seq`. kUnavailable when it is not (or no longer) in its slot, or was
  // overwritten during the copy. The copy is not decoded; DecodeSegment checks it.
  Status Read(uint64_t seq, std::string* out) const;
  // Copies every segment from *cursor to next_seq() into *out, advancing *cursor. Segments that
  // were overwritten before they could be copied are added to *lost.
  void ReadFrom(uint64_t* cursor, std::vector<std::string>* out, uint64_t* lost) const;

 private:
  RingReader(MappedFile map, RingInfo info) : map_(std::move(map)), info_(info) {}
  MappedFile map_;
  RingInfo info_;
};

}  // namespace probing::format
