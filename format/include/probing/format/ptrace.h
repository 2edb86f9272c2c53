// .ptrace files: a recording. A header, segments appended one after another (zstd), and on a
// clean close an index and trailer for fast open. A file cut off by a crash has no trailer and
// is read by scanning up to its last whole segment. Layout: docs/format.md, ".ptrace file".
//
//   PROBING_ASSIGN_OR_RETURN(PtraceWriter w, PtraceWriter::Create("run.ptrace", pid));
//   w.Append(segment_bytes);             // any codec; RecompressSegment() turns lz4 into zstd
//   w.Close();
//   PROBING_ASSIGN_OR_RETURN(PtraceReader r, PtraceReader::Open("run.ptrace"));
//   for (size_t i = 0; i < r.segments().size(); ++i) { auto seg = r.ReadSegment(i); ... }
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "probing/base/status.h"
#include "probing/format/codec.h"
#include "probing/format/events.h"
#include "probing/format/file.h"

namespace probing::format {

inline constexpr char kFileMagic[8] = {'P', 'T', 'R', 'A', 'C', 'E', '\r', '\n'};
inline constexpr char kTrailerMagic[8] = {'P', 'T', 'E', 'N', 'D', 0, 0, 0};
inline constexpr uint32_t kIndexMagic = 0x58444950;  // "PIDX"
inline constexpr size_t kFileHeaderSize = 64;
inline constexpr size_t kTrailerSize = 24;

// Re-encodes a sealed segment with another codec (recomputing the checksum). Checks the input.
Result<std::string> RecompressSegment(std::string_view segment, Codec codec, int zstd_level = 3);

class PtraceWriter {
 public:
  PtraceWriter(PtraceWriter&&) = default;
  PtraceWriter& operator=(PtraceWriter&&) = default;
  ~PtraceWriter();

  // Creates (truncates) `path`, mode 0644, and writes the file header.
  static Result<PtraceWriter> Create(const std::string& path, uint32_t pid);
  // Appends one sealed segment as it is. Its header is checked; its payload is not decoded.
  Status Append(std::string_view segment);
  // Writes the index and trailer and closes the file. Without it the file is still readable.
  Status Close();

  uint64_t bytes_written() const { return offset_; }
  size_t segment_count() const { return index_.size(); }

 private:
  PtraceWriter() = default;
  Status WriteAll(std::string_view bytes);
  UniqueFd fd_;
  std::string path_;
  uint64_t offset_ = 0;
  std::string index_;
};

struct FileInfo {
  uint16_t version_major = 0;
  uint16_t version_minor = 0;
  int64_t created_ts = 0;
  uint32_t pid = 0;
};

struct SegmentLocation {
  uint64_t offset = 0;
  uint32_t size = 0;
  Stream stream = Stream::kMixed;
  uint64_t seq = 0;
  int64_t first_ts = 0;
  int64_t last_ts = 0;
};

// What opening a file found: how it was read and what had to be skipped.
struct ReadStats {
  bool used_index = false;      // false: scanned (no trailer, or a bad index)
  bool truncated_tail = false;  // the last segment was cut off
  uint64_t skipped_bytes = 0;   // bytes between segments that did not parse
  uint64_t damaged_regions = 0;
  std::string first_error;  // the first problem met while scanning, for --stats
};

class PtraceReader {
 public:
  static Result<PtraceReader> Open(const std::string& path);

  const FileInfo& info() const { return info_; }
  const std::vector<SegmentLocation>& segments() const { return segments_; }
  const ReadStats& stats() const { return stats_; }
  std::string_view SegmentBytes(size_t i) const;
  // Decodes segment i (checksum and records checked).
  Result<Segment> ReadSegment(size_t i) const;

 private:
  PtraceReader(MappedFile map) : map_(std::move(map)) {}
  bool TryIndex();
  void Scan();
  MappedFile map_;
  FileInfo info_;
  std::vector<SegmentLocation> segments_;
  ReadStats stats_;
};

}  // namespace probing::format
