// CRC32C (Castagnoli), the checksum of segments and of the .ptrace index.
// Uses the SSE4.2 instruction when the CPU has it, a table otherwise; both give the same value.
//
//   uint32_t c = Crc32c(data, size);
//   c = Crc32cExtend(c, more, more_size);
#pragma once

#include <cstddef>
#include <cstdint>

namespace probing::format {

uint32_t Crc32cExtend(uint32_t crc, const void* data, size_t size);
inline uint32_t Crc32c(const void* data, size_t size) { return Crc32cExtend(0, data, size); }

}  // namespace probing::format
