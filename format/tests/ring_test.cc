#include "probing/format/ring.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>

#include "probing/format/segment.h"
#include "test_events.h"
#include "temp_dir.h"

namespace probing::format {
namespace {

std::string TempPath(const char* name) { return (testing::TestTempDir() / name).string(); }

std::string MakeSegment(uint64_t seq, uint64_t payload_marker, size_t variables = 1,
                        Codec codec = Codec::kLz4) {
  SegmentBuilder b(Stream::kVariables, 1);
  for (size_t i = 0; i < variables; ++i)
    b.AddVariable(static_cast<int64_t>(seq), 0, payload_marker, 0, 0,
                  std::string(200, static_cast<char>('a' + payload_marker % 26)));
  std::string out;
  EXPECT_TRUE(b.Seal(codec, seq, &out).ok());
  return out;
}

TEST(Ring, WriteThenReadBack) {
  std::string path = TempPath("basic.ring");
  auto w = RingWriter::Create(path, {Stream::kMixed, 64 << 10, 4, 4242});
  ASSERT_TRUE(w.ok()) << w.status().message();
  EXPECT_EQ(std::filesystem::status(path).permissions() & std::filesystem::perms::all,
            std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  std::string seg = testing::SealAllKinds(Codec::kLz4, w->next_seq());
  ASSERT_TRUE(w->Append(seg).ok());

  auto r = RingReader::Open(path);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->info().pid, 4242u);
  EXPECT_EQ(r->next_seq(), 1u);
  std::string copy;
  ASSERT_TRUE(r->Read(0, &copy).ok());
  auto decoded = DecodeSegment(copy);
  ASSERT_TRUE(decoded.ok()) << decoded.status().message();
  testing::CheckAllKinds(*decoded);
  EXPECT_EQ(r->Read(1, &copy).code(), StatusCode::kUnavailable);
}

TEST(Ring, WrapAroundCountsLostSegments) {
  std::string path = TempPath("wrap.ring");
  auto w = RingWriter::Create(path, {Stream::kVariables, 16 << 10, 4, 1});
  ASSERT_TRUE(w.ok());
  auto r = RingReader::Open(path);
  ASSERT_TRUE(r.ok());
  for (uint64_t s = 0; s < 10; ++s) ASSERT_TRUE(w->Append(MakeSegment(s, s)).ok());
  uint64_t cursor = 0, lost = 0;
  std::vector<std::string> got;
  r->ReadFrom(&cursor, &got, &lost);
  EXPECT_EQ(lost, 6u);
  ASSERT_EQ(got.size(), 4u);
  EXPECT_EQ(cursor, 10u);
  for (size_t i = 0; i < got.size(); ++i) {
    auto seg = DecodeSegment(got[i]);
    ASSERT_TRUE(seg.ok());
    EXPECT_EQ(seg->info.seq, 6 + i);
  }
  EXPECT_EQ(r->oldest_seq(), 6u);
}

TEST(Ring, RefusesWrongSeqAndOversizedSegments) {
  std::string path = TempPath("refuse.ring");
  auto w = RingWriter::Create(path, {Stream::kVariables, 4096, 2, 1});
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(w->Append(MakeSegment(5, 1)).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(w->Append(MakeSegment(0, 1, 200, Codec::kNone)).code(), StatusCode::kOutOfRange);
  EXPECT_TRUE(w->Append(MakeSegment(0, 1)).ok());
}

TEST(Ring, BadGeometryAndBadFiles) {
  EXPECT_FALSE(RingWriter::Create(TempPath("g1.ring"), {Stream::kMixed, 100, 4, 1}).ok());
  EXPECT_FALSE(RingWriter::Create(TempPath("g2.ring"), {Stream::kMixed, 4096, 1, 1}).ok());
  std::string path = TempPath("notaring.ring");
  FILE* f = fopen(path.c_str(), "w");
  fputs("hello", f);
  fclose(f);
  auto r = RingReader::Open(path);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("not a ring file"), std::string::npos);
  EXPECT_FALSE(RingReader::Open(TempPath("missing.ring")).ok());
}

// A writer process appends as fast as it can while this process reads. Every segment the reader
// accepts must decode and carry the payload its seq says; torn copies must be dropped.
TEST(Ring, CrossProcessStressNeverAcceptsTornSegments) {
  std::string path = TempPath("stress.ring");
  std::filesystem::remove(path);
  constexpr uint64_t kSegments = 20000;
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    auto w = RingWriter::Create(path, {Stream::kVariables, 8192, 4, 1});
    if (!w.ok()) _exit(2);
    for (uint64_t s = 0; s < kSegments; ++s) {
      if (!w->Append(MakeSegment(s, s * 7919)).ok()) _exit(3);
    }
    _exit(0);
  }
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  Result<RingReader> r = NotFound("not yet");
  while (!r.ok() && std::chrono::steady_clock::now() < deadline) r = RingReader::Open(path);
  uint64_t accepted = 0, dropped = 0, cursor = 0;
  bool done = false;
  while (r.ok() && !done && std::chrono::steady_clock::now() < deadline) {
    int status = 0;
    done = waitpid(child, &status, WNOHANG) == child;
    if (done) {
      EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    std::vector<std::string> got;
    uint64_t lost = 0;
    r->ReadFrom(&cursor, &got, &lost);
    dropped += lost;
    for (const std::string& bytes : got) {
      auto seg = DecodeSegment(bytes);
      if (!seg.ok()) {
        ++dropped;  // the checksum caught a torn copy that slipped past the state check
        continue;
      }
      ASSERT_EQ(seg->variables.size(), 1u);
      const VariableEvent& v = seg->variables[0];
      ASSERT_EQ(v.step, seg->info.seq * 7919) << "segment content does not match its seq";
      ASSERT_EQ(v.value, std::string(200, static_cast<char>('a' + v.step % 26)));
      ++accepted;
    }
  }
  if (!done) {
    kill(child, SIGKILL);
    waitpid(child, nullptr, 0);
    FAIL() << "writer did not finish: " << (r.ok() ? "timeout" : r.status().message());
  }
  EXPECT_GT(accepted, 0u);
  EXPECT_EQ(cursor, kSegments);
  RecordProperty("accepted", std::to_string(accepted));
  RecordProperty("dropped", std::to_string(dropped));
}

}  // namespace
}  // namespace probing::format
