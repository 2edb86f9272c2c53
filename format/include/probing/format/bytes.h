// Byte-level encoding shared by every Probing record: LEB128 varints, zigzag, fixed-width
// little-endian fields, and a reader that bounds-checks every read.
//
//   ByteWriter w;  w.PutVarint(300);  w.PutZigzag(-2);
//   ByteReader r(w.view());
//   uint64_t v;  if (!r.GetVarint(&v)) { /* truncated or overlong */ }
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace probing::format {

inline uint64_t ZigzagEncode(int64_t v) {
  return (static_cast<uint64_t>(v) << 1) ^ static_cast<uint64_t>(v >> 63);
}
inline int64_t ZigzagDecode(uint64_t v) {
  return static_cast<int64_t>(v >> 1) ^ -static_cast<int64_t>(v & 1);
}

// Appends to a growable buffer. Never fails (std::vector grows; the caller bounds sizes).
class ByteWriter {
 public:
  void PutByte(uint8_t b) { buf_.push_back(b); }
  void PutVarint(uint64_t v) {
    uint8_t tmp[10];
    size_t n = 0;
    while (v >= 0x80) {
      tmp[n++] = static_cast<uint8_t>(v) | 0x80;
      v >>= 7;
    }
    tmp[n++] = static_cast<uint8_t>(v);
    buf_.insert(buf_.end(), tmp, tmp + n);
  }
  void PutZigzag(int64_t v) { PutVarint(ZigzagEncode(v)); }
  void PutDouble(double d) {
    uint64_t bits;
    std::memcpy(&bits, &d, sizeof bits);
    PutFixed64(bits);
  }
  void PutFixed64(uint64_t v) {
    for (int i = 0; i < 8; ++i) buf_.push_back(static_cast<uint8_t>(v >> (8 * i)));
  }
  void PutBytes(std::string_view s) { buf_.insert(buf_.end(), s.begin(), s.end()); }
  void PutLengthPrefixed(std::string_view s) {
    PutVarint(s.size());
    PutBytes(s);
  }

  size_t size() const { return buf_.size(); }
  void clear() { buf_.clear(); }
  void reserve(size_t n) { buf_.reserve(n); }
  const uint8_t* data() const { return buf_.data(); }
  std::string_view view() const {
    return {reinterpret_cast<const char*>(buf_.data()), buf_.size()};
  }
  std::vector<uint8_t>& buffer() { return buf_; }

 private:
  std::vector<uint8_t> buf_;
};

// Reads from a fixed span. Every getter returns false, and consumes nothing useful, when the
// input is too short or malformed; it never reads past the end.
class ByteReader {
 public:
  ByteReader() = default;
  explicit ByteReader(std::string_view in)
      : p_(reinterpret_cast<const uint8_t*>(in.data())), end_(p_ + in.size()) {}

  bool GetByte(uint8_t* out) {
    if (p_ == end_) return false;
    *out = *p_++;
    return true;
  }
  bool GetVarint(uint64_t* out) {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (p_ == end_) return false;
      uint8_t b = *p_++;
      if (shift == 63 && b > 1) return false;  // would overflow 64 bits
      v |= static_cast<uint64_t>(b & 0x7f) << shift;
      if (!(b & 0x80)) {
        *out = v;
        return true;
      }
    }
    return false;
  }
  bool GetZigzag(int64_t* out) {
    uint64_t v;
    if (!GetVarint(&v)) return false;
    *out = ZigzagDecode(v);
    return true;
  }
  bool GetFixed64(uint64_t* out) {
    if (remaining() < 8) return false;
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(p_[i]) << (8 * i);
    p_ += 8;
    *out = v;
    return true;
  }
  bool GetDouble(double* out) {
    uint64_t bits;
    if (!GetFixed64(&bits)) return false;
    std::memcpy(out, &bits, sizeof bits);
    return true;
  }
  // A view into the input of `n` bytes; false when fewer remain.
  bool GetBytes(uint64_t n, std::string_view* out) {
    if (n > remaining()) return false;
    *out = {reinterpret_cast<const char*>(p_), static_cast<size_t>(n)};
    p_ += n;
    return true;
  }
  bool GetLengthPrefixed(std::string_view* out, uint64_t max_len) {
    uint64_t n;
    if (!GetVarint(&n) || n > max_len) return false;
    return GetBytes(n, out);
  }

  size_t remaining() const { return static_cast<size_t>(end_ - p_); }
  bool empty() const { return p_ == end_; }

 private:
  const uint8_t* p_ = nullptr;
  const uint8_t* end_ = nullptr;
};

}  // namespace probing::format
