#include "probing/format/ptrace.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "probing/format/segment.h"
#include "test_events.h"
#include "temp_dir.h"

namespace probing::format {
namespace {

std::string TempPath(const char* name) { return (testing::TestTempDir() / name).string(); }

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}
void WriteAll(const std::string& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// Writes `n` segments (each with every event kind, seq 0..n-1), closing cleanly or not.
std::string WriteFile(const char* name, int n, bool close) {
  std::string path = TempPath(name);
  auto w = PtraceWriter::Create(path, 4242);
  EXPECT_TRUE(w.ok());
  for (int i = 0; i < n; ++i) {
    auto seg = RecompressSegment(testing::SealAllKinds(Codec::kLz4, i), Codec::kZstd);
    EXPECT_TRUE(seg.ok());
    EXPECT_TRUE(w->Append(*seg).ok());
  }
  if (close) {
    EXPECT_TRUE(w->Close().ok());
  } else {
    // Simulate a crash: copy the bytes written so far, before the destructor closes.
    std::string copy = ReadAll(path);
    std::string crashed = path + ".crashed";
    WriteAll(crashed, copy);
    return crashed;
  }
  return path;
}

TEST(Ptrace, RoundTripWithIndex) {
  std::string path = WriteFile("clean.ptrace", 5, true);
  auto r = PtraceReader::Open(path);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_TRUE(r->stats().used_index);
  EXPECT_EQ(r->info().pid, 4242u);
  ASSERT_EQ(r->segments().size(), 5u);
  for (size_t i = 0; i < 5; ++i) {
    auto seg = r->ReadSegment(i);
    ASSERT_TRUE(seg.ok()) << seg.status().message();
    EXPECT_EQ(seg->info.seq, i);
    EXPECT_EQ(seg->info.codec, static_cast<uint8_t>(Codec::kZstd));
    testing::CheckAllKinds(*seg);
  }
}

TEST(Ptrace, ReadableWithoutFooter) {
  std::string path = WriteFile("nofooter.ptrace", 4, false);
  auto r = PtraceReader::Open(path);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_FALSE(r->stats().used_index);
  EXPECT_FALSE(r->stats().truncated_tail);
  EXPECT_EQ(r->segments().size(), 4u);
}

TEST(Ptrace, TruncationAtEveryByteLoadsTheWholeSegmentsBeforeIt) {
  std::string full = ReadAll(WriteFile("trunc-src.ptrace", 3, true));
  auto whole = PtraceReader::Open(WriteFile("trunc-src2.ptrace", 3, true));
  ASSERT_TRUE(whole.ok());
  std::vector<uint64_t> ends;
  for (const auto& l : whole->segments()) ends.push_back(l.offset + l.size);
  std::string path = TempPath("trunc.ptrace");
  for (size_t n = 0; n < full.size(); ++n) {
    WriteAll(path, std::string_view(full).substr(0, n));
    auto r = PtraceReader::Open(path);
    if (n < kFileHeaderSize) {
      EXPECT_FALSE(r.ok()) << n;
      continue;
    }
    ASSERT_TRUE(r.ok()) << "cut at " << n << ": " << r.status().message();
    size_t expect = 0;
    for (uint64_t e : ends) expect += e <= n ? 1 : 0;
    ASSERT_EQ(r->segments().size(), expect) << "cut at " << n;
    for (size_t i = 0; i < r->segments().size(); ++i) ASSERT_TRUE(r->ReadSegment(i).ok());
  }
}

TEST(Ptrace, DamagedSegmentInTheMiddleIsSkippedAndCounted) {
  std::string path = WriteFile("damage-src.ptrace", 3, false);
  auto clean = PtraceReader::Open(path);
  ASSERT_TRUE(clean.ok());
  std::string bytes = ReadAll(path);
  // Smash the header magic of the middle segment.
  bytes[clean->segments()[1].offset] = 'X';
  std::string bad = TempPath("damaged.ptrace");
  WriteAll(bad, bytes);
  auto r = PtraceReader::Open(bad);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->segments().size(), 2u);
  EXPECT_EQ(r->stats().damaged_regions, 1u);
  EXPECT_EQ(r->stats().skipped_bytes, clean->segments()[1].size);
  EXPECT_FALSE(r->stats().first_error.empty());
  // A payload bit flip keeps the layout: the segment is found but fails its checksum.
  bytes = ReadAll(path);
  bytes[clean->segments()[2].offset + 70] ^= 0x10;
  WriteAll(bad, bytes);
  auto r2 = PtraceReader::Open(bad);
  ASSERT_TRUE(r2.ok());
  ASSERT_EQ(r2->segments().size(), 3u);
  EXPECT_TRUE(r2->ReadSegment(0).ok());
  EXPECT_FALSE(r2->ReadSegment(2).ok());
}

TEST(Ptrace, BadIndexFallsBackToScanning) {
  std::string path = WriteFile("badindex.ptrace", 3, true);
  std::string bytes = ReadAll(path);
  bytes[bytes.size() - kTrailerSize - 10] ^= 1;  // inside the index: its CRC fails
  WriteAll(path, bytes);
  auto r = PtraceReader::Open(path);
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->stats().used_index);
  EXPECT_EQ(r->segments().size(), 3u);
}

TEST(Ptrace, BadFilesGiveClearErrors) {
  std::string path = TempPath("text.ptrace");
  WriteAll(path, std::string(100, 'a'));
  auto r = PtraceReader::Open(path);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("not a .ptrace file"), std::string::npos);
  std::string newer = ReadAll(WriteFile("newer.ptrace", 1, true));
  newer[8] = 2;  // version_major
  WriteAll(path, newer);
  r = PtraceReader::Open(path);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("trace format v2 is newer than this build (reads up to v1)"),
            std::string::npos);
  EXPECT_FALSE(PtraceReader::Open(TempPath("does-not-exist.ptrace")).ok());
}

TEST(Ptrace, RecompressKeepsEvents) {
  std::string lz4 = testing::SealAllKinds(Codec::kLz4, 3);
  auto z = RecompressSegment(lz4, Codec::kZstd);
  ASSERT_TRUE(z.ok());
  auto seg = DecodeSegment(*z);
  ASSERT_TRUE(seg.ok()) << seg.status().message();
  testing::CheckAllKinds(*seg);
  lz4[80] ^= 1;
  EXPECT_FALSE(RecompressSegment(lz4, Codec::kZstd).ok());
}

}  // namespace
}  // namespace probing::format
