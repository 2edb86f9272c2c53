// libFuzzer target: any bytes into the segment decoder and the row builder. Must never crash,
// hang or allocate without bound. Each input is tried twice: as it is (the header and checksum
// checks), and with a valid checksum patched in, so the fuzzer reaches the record decoder that a
// random checksum would otherwise hide.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "probing/format/crc32c.h"
#include "probing/format/segment.h"
#include "probing/format/tables.h"

namespace {

void Decode(std::string_view in) {
  using namespace probing::format;
  auto seg = DecodeSegment(in);
  if (!seg.ok()) return;
  RowContext ctx;
  size_t cells = 0;
  for (const TableSchema& t : AllTables())
    SegmentRows(*seg, t.id, ctx, [&](std::span<const Value> row) { cells += row.size(); });
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace probing::format;
  std::string in(reinterpret_cast<const char*>(data), size);
  Decode(in);
  if (in.size() >= kSegmentHeaderSize) {
    uint32_t payload;
    std::memcpy(&payload, in.data() + 12, 4);
    size_t n = std::min<size_t>(payload, in.size() - kSegmentHeaderSize);
    std::memset(in.data() + 52, 0, 4);
    uint32_t crc =
        Crc32cExtend(Crc32c(in.data(), kSegmentHeaderSize), in.data() + kSegmentHeaderSize, n);
    std::memcpy(in.data() + 52, &crc, 4);
    Decode(in);
  }
  return 0;
}
