#include "probing/format/ptrace.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "internal.h"
#include "probing/base/clock.h"
#include "probing/format/crc32c.h"
#include "probing/format/segment.h"
#include "raw_headers.h"

namespace probing::format {
Result<std::string> RecompressSegment(std::string_view segment, Codec codec, int zstd_level) {
  PROBING_ASSIGN_OR_RETURN(SegmentInfo info, ParseSegmentHeader(segment));
  if (segment.size() < info.total_size()) return DataLoss("segment truncated");
  raw::SegmentHeader h;
  std::memcpy(&h, segment.data(), sizeof h);
  std::string_view stored = segment.substr(info.header_size, info.payload_size);
  raw::SegmentHeader check = h;
  check.checksum = 0;
  uint32_t crc = Crc32cExtend(Crc32c(&check, sizeof check), stored.data(), stored.size());
  if (crc != info.checksum) return DataLoss("segment checksum mismatch (corrupt data)");
  if (static_cast<Codec>(info.codec) == codec)
    return std::string(segment.substr(0, info.total_size()));

  std::string raw_payload, packed;
  PROBING_RETURN_IF_ERROR(
      Decompress(static_cast<Codec>(info.codec), stored, info.raw_size, &raw_payload));
  PROBING_RETURN_IF_ERROR(Compress(codec, raw_payload, &packed, zstd_level));
  h.codec = static_cast<uint8_t>(codec);
  h.header_size = kSegmentHeaderSize;
  h.payload_size = static_cast<uint32_t>(packed.size());
  h.checksum = 0;
  h.checksum = Crc32cExtend(Crc32c(&h, sizeof h), packed.data(), packed.size());
  std::string out(sizeof h + packed.size(), '\0');
  std::memcpy(out.data(), &h, sizeof h);
  std::memcpy(out.data() + sizeof h, packed.data(), packed.size());
  return out;
}

// ---------------------------------------------------------------------------------------------
// Writer

PtraceWriter::~PtraceWriter() {
  if (fd_.valid()) (void)Close();
}

Result<PtraceWriter> PtraceWriter::Create(const std::string& path, uint32_t pid) {
  PtraceWriter w;
  w.path_ = path;
  w.fd_ = UniqueFd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!w.fd_.valid()) return ErrnoStatus("create " + path, errno);
  raw::FileHeader h{};
  std::memcpy(h.magic, kFileMagic, sizeof h.magic);
  h.version_major = kVersionMajor;
  h.version_minor = kVersionMinor;
  h.header_size = kFileHeaderSize;
  h.created_ts = RealtimeNs();
  h.pid = pid;
  PROBING_RETURN_IF_ERROR(w.WriteAll({reinterpret_cast<const char*>(&h), sizeof h}));
  return w;
}

Status PtraceWriter::WriteAll(std::string_view bytes) {
  while (!bytes.empty()) {
    ssize_t n = ::write(fd_.get(), bytes.data(), bytes.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus("write " + path_, errno);
    }
    bytes.remove_prefix(static_cast<size_t>(n));
    offset_ += static_cast<uint64_t>(n);
  }
  return Status::Ok();
}

Status PtraceWriter::Append(std::string_view segment) {
  if (!fd_.valid()) return InvalidArgument(path_ + " is closed");
  PROBING_ASSIGN_OR_RETURN(SegmentInfo info, ParseSegmentHeader(segment));
  if (segment.size() != info.total_size())
    return InvalidArgument("segment is " + std::to_string(segment.size()) +
                           " bytes, its header says " + std::to_string(info.total_size()));
  raw::IndexEntry e{};
  e.offset = offset_;
  e.size = static_cast<uint32_t>(segment.size());
  e.stream = static_cast<uint8_t>(info.stream);
  e.seq = info.seq;
  e.first_ts = info.first_ts;
  e.last_ts = info.last_ts;
  PROBING_RETURN_IF_ERROR(WriteAll(segment));
  index_.append(reinterpret_cast<const char*>(&e), sizeof e);
  return Status::Ok();
}

Status PtraceWriter::Close() {
  if (!fd_.valid()) return Status::Ok();
  std::string block;
  uint32_t magic = kIndexMagic;
  uint32_t count = static_cast<uint32_t>(index_.size() / sizeof(raw::IndexEntry));
  block.append(reinterpret_cast<const char*>(&magic), 4);
  block.append(reinterpret_cast<const char*>(&count), 4);
  block += index_;
  raw::Trailer t{};
  t.index_offset = offset_;
  t.index_crc = Crc32c(block.data(), block.size());
  std::memcpy(t.magic, kTrailerMagic, sizeof t.magic);
  block.append(reinterpret_cast<const char*>(&t), sizeof t);
  Status st = WriteAll(block);
  if (st.ok() && ::fsync(fd_.get()) != 0) st = ErrnoStatus("fsync " + path_, errno);
  fd_.Reset();
  return st;
}

// ---------------------------------------------------------------------------------------------
// Reader

Result<PtraceReader> PtraceReader::Open(const std::string& path) {
  PROBING_ASSIGN_OR_RETURN(MappedFile map, MappedFile::OpenReadOnly(path));
  if (map.size() < kFileHeaderSize)
    return DataLoss(path + " is not a .ptrace file (" + std::to_string(map.size()) + " bytes)");
  raw::FileHeader h;
  std::memcpy(&h, map.data(), sizeof h);
  if (std::memcmp(h.magic, kFileMagic, sizeof h.magic) != 0)
    return DataLoss(path + " is not a .ptrace file (bad magic)");
  if (h.version_major > kVersionMajor) return internal::NewerVersion(path + ": ", h.version_major);
  if (h.version_major == 0 || h.header_size < kFileHeaderSize || h.header_size > map.size())
    return DataLoss(path + ": bad file header");
  PtraceReader r(std::move(map));
  r.info_.version_major = h.version_major;
  r.info_.version_minor = h.version_minor;
  r.info_.created_ts = h.created_ts;
  r.info_.pid = h.pid;
  if (!r.TryIndex()) r.Scan();
  return r;
}

bool PtraceReader::TryIndex() {
  std::string_view all = map_.view();
  if (all.size() < kFileHeaderSize + kTrailerSize + 8) return false;
  raw::Trailer t;
  std::memcpy(&t, all.data() + all.size() - kTrailerSize, sizeof t);
  if (std::memcmp(t.magic, kTrailerMagic, sizeof t.magic) != 0) return false;
  size_t index_end = all.size() - kTrailerSize;
  // Written without additions that could wrap: the offsets are untrusted 64-bit values.
  if (t.index_offset < kFileHeaderSize || t.index_offset > index_end ||
      index_end - t.index_offset < 8)
    return false;
  std::string_view block = all.substr(t.index_offset, index_end - t.index_offset);
  if (Crc32c(block.data(), block.size()) != t.index_crc) return false;
  uint32_t magic, count;
  std::memcpy(&magic, block.data(), 4);
  std::memcpy(&count, block.data() + 4, 4);
  if (magic != kIndexMagic || (block.size() - 8) != size_t{count} * sizeof(raw::IndexEntry))
    return false;
  std::vector<SegmentLocation> locs;
  locs.reserve(count);
  for (uint32_t i = 0; i < count; ++i) {
    raw::IndexEntry e;
    std::memcpy(&e, block.data() + 8 + size_t{i} * sizeof e, sizeof e);
    if (e.offset < kFileHeaderSize || e.size < kSegmentHeaderSize || e.offset > t.index_offset ||
        e.size > t.index_offset - e.offset || e.stream > kMaxStream)
      return false;
    locs.push_back({e.offset, e.size, static_cast<Stream>(e.stream), e.seq, e.first_ts, e.last_ts});
  }
  segments_ = std::move(locs);
  stats_.used_index = true;
  return true;
}

void PtraceReader::Scan() {
  std::string_view all = map_.view();
  size_t off = kFileHeaderSize;
  const char magic[4] = {'P', 'S', 'E', 'G'};
  auto note = [&](const std::string& what) {
    if (stats_.first_error.empty()) stats_.first_error = what + " at byte " + std::to_string(off);
  };
  while (off < all.size()) {
    std::string_view rest = all.substr(off);
    auto info = ParseSegmentHeader(rest);
    if (info.ok() && info->total_size() <= rest.size()) {
      segments_.push_back({off, static_cast<uint32_t>(info->total_size()), info->stream, info->seq,
                           info->first_ts, info->last_ts});
      off += info->total_size();
      continue;
    }
    if (rest.size() >= 4) {
      uint32_t m;
      std::memcpy(&m, rest.data(), 4);
      if (m == kIndexMagic) return;  // an index whose trailer did not check out
    }
    if (info.ok()) {
      // A whole header whose payload runs past the end: the recording was cut off here.
      stats_.truncated_tail = true;
      note("last segment cut off");
      stats_.skipped_bytes += rest.size();
      return;
    }
    // Damaged region: resynchronize on the next segment magic.
    note(info.status().message());
    ++stats_.damaged_regions;
    const void* next = memmem(rest.data() + 1, rest.size() - 1, magic, sizeof magic);
    if (next == nullptr) {
      if (rest.size() < kSegmentHeaderSize) stats_.truncated_tail = true;
      stats_.skipped_bytes += rest.size();
      return;
    }
    size_t skip = static_cast<size_t>(static_cast<const char*>(next) - rest.data());
    stats_.skipped_bytes += skip;
    off += skip;
  }
}

std::string_view PtraceReader::SegmentBytes(size_t i) const {
  const SegmentLocation& l = segments_.at(i);
  return map_.view().substr(l.offset, l.size);
}

Result<Segment> PtraceReader::ReadSegment(size_t i) const {
  if (i >= segments_.size()) return OutOfRange("no segment " + std::to_string(i));
  return DecodeSegment(SegmentBytes(i));
}

}  // namespace probing::format
