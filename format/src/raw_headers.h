// Raw on-disk and shared-memory layouts. Fixed width, little-endian (checked below), copied in
// and out with memcpy so nothing depends on the alignment of the input.
#pragma once

#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>

namespace probing::format::raw {

static_assert(std::endian::native == std::endian::little,
              "the trace format is little-endian; a big-endian build needs byte swaps here");

struct SegmentHeader {
  uint32_t magic;
  uint16_t version_major;
  uint16_t version_minor;
  uint8_t codec;
  uint8_t stream;
  uint16_t header_size;
  uint32_t payload_size;
  uint32_t raw_size;
  uint32_t event_count;
  uint64_t seq;
  int64_t first_ts;
  int64_t last_ts;
  uint32_t pid;
  uint32_t checksum;
  uint64_t reserved;
};
static_assert(sizeof(SegmentHeader) == 64);
static_assert(offsetof(SegmentHeader, seq) == 24);
static_assert(offsetof(SegmentHeader, checksum) == 52);

// Ring files live in shared memory: the header occupies one page.
struct RingHeader {
  uint32_t magic;
  uint16_t version_major;
  uint16_t version_minor;
  uint32_t header_size;
  uint8_t stream;
  uint8_t pad0[3];
  uint32_t slot_size;
  uint32_t slot_count;
  uint32_t pid;
  uint32_t pad1;
  int64_t created_ts;
  std::atomic<uint64_t> next_seq;  // segments ever committed
  uint8_t reserved[4096 - 48];
};
static_assert(sizeof(RingHeader) == 4096);
static_assert(offsetof(RingHeader, next_seq) == 40);
static_assert(std::atomic<uint64_t>::is_always_lock_free,
              "ring readers in other processes need lock-free 64-bit atomics");

struct SlotHeader {
  std::atomic<uint64_t> state;  // 2*seq+1 being written, 2*seq+2 complete, 0 never written
  uint32_t length;
  uint32_t pad;
  uint8_t reserved[48];
};
static_assert(sizeof(SlotHeader) == 64);

struct FileHeader {
  char magic[8];  // "PTRACE\r\n"
  uint16_t version_major;
  uint16_t version_minor;
  uint32_t header_size;
  int64_t created_ts;
  uint32_t pid;
  uint8_t reserved[36];
};
static_assert(sizeof(FileHeader) == 64);

struct IndexEntry {
  uint64_t offset;
  uint32_t size;
  uint8_t stream;
  uint8_t pad[3];
  uint64_t seq;
  int64_t first_ts;
  int64_t last_ts;
};
static_assert(sizeof(IndexEntry) == 40);

struct Trailer {
  uint64_t index_offset;
  uint32_t index_crc;
  uint32_t reserved;
  char magic[8];  // "PTEND\0\0\0"
};
static_assert(sizeof(Trailer) == 24);

}  // namespace probing::format::raw
