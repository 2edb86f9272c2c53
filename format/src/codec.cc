#include "probing/format/codec.h"

#include <lz4.h>
#include <zstd.h>

#include <memory>

namespace probing::format {
namespace {

struct CCtxDeleter {
  void operator()(ZSTD_CCtx* c) const { ZSTD_freeCCtx(c); }
};
struct DCtxDeleter {
  void operator()(ZSTD_DCtx* c) const { ZSTD_freeDCtx(c); }
};

// One context per thread: creating one per segment costs more than compressing a small one.
ZSTD_CCtx* ThreadCCtx() {
  thread_local std::unique_ptr<ZSTD_CCtx, CCtxDeleter> ctx(ZSTD_createCCtx());
  return ctx.get();
}
ZSTD_DCtx* ThreadDCtx() {
  thread_local std::unique_ptr<ZSTD_DCtx, DCtxDeleter> ctx(ZSTD_createDCtx());
  return ctx.get();
}

}  // namespace

const char* CodecName(Codec c) {
  switch (c) {
    case Codec::kNone: return "none";
    case Codec::kLz4: return "lz4";
    case Codec::kZstd: return "zstd";
  }
  return "unknown";
}

Status Compress(Codec codec, std::string_view in, std::string* out, int zstd_level) {
  out->clear();
  switch (codec) {
    case Codec::kNone: out->assign(in); return Status::Ok();
    case Codec::kLz4: {
      if (in.size() > LZ4_MAX_INPUT_SIZE) return OutOfRange("input too large for lz4");
      int bound = LZ4_compressBound(static_cast<int>(in.size()));
      out->resize(static_cast<size_t>(bound));
      int n = LZ4_compress_default(in.data(), out->data(), static_cast<int>(in.size()), bound);
      if (n <= 0) return Internal("lz4 compression failed");
      out->resize(static_cast<size_t>(n));
      return Status::Ok();
    }
    case Codec::kZstd: {
      ZSTD_CCtx* ctx = ThreadCCtx();
      if (ctx == nullptr) return Internal("zstd: cannot allocate a compression context");
      out->resize(ZSTD_compressBound(in.size()));
      size_t n = ZSTD_compressCCtx(ctx, out->data(), out->size(), in.data(), in.size(), zstd_level);
      if (ZSTD_isError(n)) return Internal(std::string("zstd: ") + ZSTD_getErrorName(n));
      out->resize(n);
      return Status::Ok();
    }
  }
  return InvalidArgument("unknown codec " + std::to_string(static_cast<int>(codec)));
}

Status Decompress(Codec codec, std::string_view in, size_t raw_size, std::string* out) {
  out->clear();
  switch (codec) {
    case Codec::kNone:
      if (in.size() != raw_size) return DataLoss("stored size differs from raw size");
      out->assign(in);
      return Status::Ok();
    case Codec::kLz4: {
      if (in.size() > LZ4_MAX_INPUT_SIZE || raw_size > LZ4_MAX_INPUT_SIZE)
        return DataLoss("lz4 block too large");
      out->resize(raw_size);
      int n = LZ4_decompress_safe(in.data(), out->data(), static_cast<int>(in.size()),
                                  static_cast<int>(raw_size));
      if (n < 0 || static_cast<size_t>(n) != raw_size)
        return DataLoss("lz4 payload does not decompress to its declared size");
      return Status::Ok();
    }
    case Codec::kZstd: {
      ZSTD_DCtx* ctx = ThreadDCtx();
      if (ctx == nullptr) return Internal("zstd: cannot allocate a decompression context");
      out->resize(raw_size);
      size_t n = ZSTD_decompressDCtx(ctx, out->data(), raw_size, in.data(), in.size());
      if (ZSTD_isError(n) || n != raw_size)
        return DataLoss("zstd payload does not decompress to its declared size");
      return Status::Ok();
    }
  }
  return DataLoss("unknown codec " + std::to_string(static_cast<int>(codec)));
}

}  // namespace probing::format
