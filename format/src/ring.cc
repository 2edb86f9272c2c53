#include "probing/format/ring.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>

#include "internal.h"
#include "probing/base/clock.h"
#include "raw_headers.h"

namespace probing::format {
namespace {

Status CheckGeometry(uint32_t slot_size, uint32_t slot_count) {
  if (slot_size < kMinSlotSize || slot_size > kMaxSlotSize || slot_size % 64 != 0)
    return InvalidArgument("ring slot size " + std::to_string(slot_size) +
                           " must be a multiple of 64 between " + std::to_string(kMinSlotSize) +
                           " and " + std::to_string(kMaxSlotSize));
  if (slot_count < kMinSlotCount || slot_count > kMaxSlotCount)
    return InvalidArgument("ring slot count " + std::to_string(slot_count) + " must be between " +
                           std::to_string(kMinSlotCount) + " and " + std::to_string(kMaxSlotCount));
  return Status::Ok();
}

raw::RingHeader* Header(const MappedFile& m) {
  return reinterpret_cast<raw::RingHeader*>(m.data());
}
raw::SlotHeader* Slot(const MappedFile& m, const RingInfo& info, uint64_t seq) {
  size_t index = static_cast<size_t>(seq % info.slot_count);
  return reinterpret_cast<raw::SlotHeader*>(m.data() + kRingHeaderSize + index * info.slot_size);
}

}  // namespace

Result<RingWriter> RingWriter::Create(const std::string& path, const RingOptions& o) {
  PROBING_RETURN_IF_ERROR(CheckGeometry(o.slot_size, o.slot_count));
  size_t size = kRingHeaderSize + size_t{o.slot_size} * o.slot_count;
  ::unlink(path.c_str());
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (!fd.valid()) return ErrnoStatus("create " + path, errno);
  int err = ::posix_fallocate(fd.get(), 0, static_cast<off_t>(size));
  if (err != 0) {
    ::unlink(path.c_str());
    return ErrnoStatus("allocate " + std::to_string(size) + " bytes for " + path, err);
  }
  auto map = MappedFile::MapReadWrite(fd.get(), size, /*populate=*/true);
  if (!map.ok()) {
    ::unlink(path.c_str());
    return map.status().WithContext(path);
  }
  RingInfo info;
  info.version_major = kVersionMajor;
  info.version_minor = kVersionMinor;
  info.stream = o.stream;
  info.slot_size = o.slot_size;
  info.slot_count = o.slot_count;
  info.pid = o.pid;
  info.created_ts = RealtimeNs();

  raw::RingHeader* h = Header(*map);
  h->version_major = info.version_major;
  h->version_minor = info.version_minor;
  h->header_size = kRingHeaderSize;
  h->stream = static_cast<uint8_t>(info.stream);
  h->slot_size = info.slot_size;
  h->slot_count = info.slot_count;
  h->pid = info.pid;
  h->created_ts = info.created_ts;
  h->next_seq.store(0, std::memory_order_relaxed);
  // The magic goes last: a reader that sees it sees a complete header.
  std::atomic_thread_fence(std::memory_order_release);
  h->magic = kRingMagic;
  return RingWriter(std::move(map).value(), info, 0);
}

Status RingWriter::Append(std::string_view segment) noexcept {
  if (segment.size() > max_segment_size())
    return OutOfRange("segment of " + std::to_string(segment.size()) +
                      " bytes does not fit a ring slot of " + std::to_string(max_segment_size()));
  if (segment.size() >= 32) {
    uint64_t seq;
    std::memcpy(&seq, segment.data() + offsetof(raw::SegmentHeader, seq), sizeof seq);
    if (seq != next_seq_)
      return InvalidArgument("segment carries seq " + std::to_string(seq) + ", ring expects " +
                             std::to_string(next_seq_));
  }
  raw::SlotHeader* slot = Slot(map_, info_, next_seq_);
  slot->state.store(2 * next_seq_ + 1, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_release);  // odd state before any payload byte
  slot->length = static_cast<uint32_t>(segment.size());
  std::memcpy(reinterpret_cast<char*>(slot) + kSlotHeaderSize, segment.data(), segment.size());
  slot->state.store(2 * next_seq_ + 2, std::memory_order_release);
  ++next_seq_;
  Header(map_)->next_seq.store(next_seq_, std::memory_order_release);
  return Status::Ok();
}

Result<RingReader> RingReader::Open(const std::string& path) {
  PROBING_ASSIGN_OR_RETURN(MappedFile map, MappedFile::OpenReadOnly(path));
  if (map.size() < kRingHeaderSize)
    return DataLoss(path + " is not a ring file (" + std::to_string(map.size()) + " bytes)");
  const raw::RingHeader* h = Header(map);
  if (h->magic != kRingMagic) return DataLoss(path + " is not a ring file (bad magic)");
  if (h->version_major > kVersionMajor)
    return internal::NewerVersion(path + ": ", h->version_major);
  if (h->header_size != kRingHeaderSize)
    return DataLoss(path + ": ring header size " + std::to_string(h->header_size));
  PROBING_RETURN_IF_ERROR(CheckGeometry(h->slot_size, h->slot_count).WithContext(path));
  if (h->stream > kMaxStream) return DataLoss(path + ": unknown stream");
  size_t want = kRingHeaderSize + size_t{h->slot_size} * h->slot_count;
  if (map.size() < want)
    return DataLoss(path + ": ring file is " + std::to_string(map.size()) +
                    " bytes, its header needs " + std::to_string(want));
  RingInfo info;
  info.version_major = h->version_major;
  info.version_minor = h->version_minor;
  info.stream = static_cast<Stream>(h->stream);
  info.slot_size = h->slot_size;
  info.slot_count = h->slot_count;
  info.pid = h->pid;
  info.created_ts = h->created_ts;
  return RingReader(std::move(map), info);
}

uint64_t RingReader::next_seq() const {
  return Header(map_)->next_seq.load(std::memory_order_acquire);
}

uint64_t RingReader::oldest_seq() const {
  uint64_t next = next_seq();
  return next > info_.slot_count ? next - info_.slot_count : 0;
}

Status RingReader::Read(uint64_t seq, std::string* out) const {
  const raw::SlotHeader* slot = Slot(map_, info_, seq);
  const uint64_t want = 2 * seq + 2;
  if (slot->state.load(std::memory_order_acquire) != want)
    return Unavailable("segment " + std::to_string(seq) + " is not in the ring");
  uint32_t length = slot->length;
  if (length > info_.slot_size - kSlotHeaderSize)
    length = 0;  // torn length: the state check below drops it, or the decoder rejects it
  out->assign(reinterpret_cast<const char*>(slot) + kSlotHeaderSize, length);
  std::atomic_thread_fence(std::memory_order_acquire);
  if (slot->state.load(std::memory_order_relaxed) != want)
    return Unavailable("segment " + std::to_string(seq) + " was overwritten while read");
  return Status::Ok();
}

void RingReader::ReadFrom(uint64_t* cursor, std::vector<std::string>* out, uint64_t* lost) const {
  uint64_t next = next_seq();
  uint64_t oldest = next > info_.slot_count ? next - info_.slot_count : 0;
  if (*cursor < oldest) {
    *lost += oldest - *cursor;
    *cursor = oldest;
  }
  std::string buf;
  for (; *cursor < next; ++*cursor) {
    if (Read(*cursor, &buf).ok()) {
      out->push_back(std::move(buf));
    } else {
      ++*lost;
    }
  }
}

}  // namespace probing::format
