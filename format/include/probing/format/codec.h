// Compression codecs for segment payloads: none, lz4 (live rings: fast) and zstd (files:
// small). Decompression is told the exact output size and refuses anything else.
//
//   std::string out;
//   PROBING_RETURN_IF_ERROR(Compress(Codec::kLz4, raw, &out));
//   PROBING_RETURN_IF_ERROR(Decompress(Codec::kLz4, out, raw.size(), &back));
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "probing/base/status.h"

namespace probing::format {

enum class Codec : uint8_t { kNone = 0, kLz4 = 1, kZstd = 2 };
inline constexpr uint8_t kMaxCodec = 2;

const char* CodecName(Codec c);

// Appends the compressed form of `in` to `out` (cleared first).
Status Compress(Codec codec, std::string_view in, std::string* out, int zstd_level = 3);
// Decompresses `in` into `out`, which must come out exactly `raw_size` bytes.
Status Decompress(Codec codec, std::string_view in, size_t raw_size, std::string* out);

}  // namespace probing::format
