#include "probing/live/segment_source.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>

#include "../../format/tests/temp_dir.h"
#include "../../format/tests/test_events.h"
#include "probing/format/ptrace.h"
#include "probing/format/ring.h"
#include "probing/live/protocol.h"

namespace probing::live {
namespace {

namespace fs = std::filesystem;
using format::Codec;
using format::RingWriter;
using format::Stream;

std::string Fixture() {
  return std::string(PROBING_SOURCE_DIR) + "/tests/fixtures/format_v1.ptrace";
}

fs::path TempDir() { return format::testing::TestTempDir(); }

Result<format::TraceSet> Load(const std::vector<std::string>& paths) {
  PROBING_ASSIGN_OR_RETURN(auto source, OpenFiles(paths));
  return LoadStreams(*source, {});
}

// A ring directory of a process that is gone: `count` segments of every kind in `slots` slots.
fs::path DeadRings(const std::string& name, uint64_t count, uint32_t slots) {
  fs::path dir = TempDir() / name;
  fs::create_directories(dir);
  auto w =
      RingWriter::Create((dir / "stacks.ring").string(), {Stream::kStacks, 64 << 10, slots, 4242});
  EXPECT_TRUE(w.ok());
  for (uint64_t i = 0; i < count; ++i)
    EXPECT_TRUE(w->Append(format::testing::SealAllKinds(Codec::kLz4, i)).ok());
  return dir;
}

TEST(OpenFiles, FixtureLoadsByItsIndex) {
  auto set = Load({Fixture()});
  ASSERT_TRUE(set.ok()) << set.status().message();
  ASSERT_EQ(set->sources.size(), 1u);
  EXPECT_EQ(set->sources[0].kind, "ptrace");
  EXPECT_EQ(set->sources[0].segments_ok, 3u);
  EXPECT_TRUE(set->sources[0].used_index);
  EXPECT_EQ(set->segments.size(), 3u);
}

TEST(OpenFiles, RingDirectoryOfADeadProcess) {
  fs::path dir = DeadRings("4242", 3, 2);  // two slots: the oldest was overwritten
  auto set = Load({dir.string()});
  ASSERT_TRUE(set.ok()) << set.status().message();
  ASSERT_EQ(set->sources.size(), 1u);
  EXPECT_EQ(set->sources[0].kind, "ring");
  EXPECT_EQ(set->sources[0].segments_ok, 2u);
  EXPECT_EQ(set->sources[0].segments_lost, 0u);  // overwritten before we looked: not lost
}

TEST(OpenFiles, CorruptSegmentsAreCountedAndTheRestLoads) {
  std::ifstream in(Fixture(), std::ios::binary);
  std::string bytes{std::istreambuf_iterator<char>(in), {}};
  auto clean = format::PtraceReader::Open(Fixture());
  ASSERT_TRUE(clean.ok());
  bytes[clean->segments()[1].offset + 100] ^= 0x40;  // payload bit flip in segment 1
  fs::path p = TempDir() / "corrupt.ptrace";
  std::ofstream(p, std::ios::binary)
      .write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  auto set = Load({p.string()});
  ASSERT_TRUE(set.ok());
  EXPECT_EQ(set->sources[0].segments_ok, 2u);
  EXPECT_EQ(set->sources[0].segments_corrupt, 1u);
  EXPECT_NE(set->sources[0].first_error.find("checksum"), std::string::npos);
}

TEST(OpenFiles, ClearErrorsForWhatIsNotATrace) {
  auto missing = Load({"/nonexistent/run.ptrace"});
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().message(), "/nonexistent/run.ptrace: no such file or directory");
  fs::path p = TempDir() / "notes.txt";
  std::ofstream(p) << "this is not a trace, it is a text file of some length.\n";
  auto text = Load({p.string()});
  ASSERT_FALSE(text.ok());
  EXPECT_NE(text.status().message().find("not a .ptrace file"), std::string::npos);
  fs::path empty_dir = TempDir() / "empty";
  fs::create_directories(empty_dir);
  EXPECT_FALSE(Load({empty_dir.string()}).ok());
}

TEST(RingDirSource, ADamagedRingFileIsSkippedAndTheOthersLoad) {
  fs::path dir = DeadRings("damaged", 2, 4);
  std::ofstream(dir / "torch.ring") << "PRNX but not a ring at all";  // an interrupted start
  fs::create_symlink(dir / "stacks.ring", dir / "memory.ring");       // planted: not followed
  ASSERT_EQ(mkfifo((dir / "metrics.ring").c_str(), 0600), 0);         // would hang a reader
  auto set = Load({dir.string()});
  ASSERT_TRUE(set.ok()) << set.status().message();
  EXPECT_EQ(set->segments.size(), 2u);
  std::map<std::string, std::string> errors;
  for (const auto& s : set->sources)
    if (s.unreadable) errors[fs::path(s.path).filename().string()] = s.first_error;
  ASSERT_EQ(errors.size(), 3u);
  EXPECT_NE(errors["torch.ring"].find("skipped"), std::string::npos);
  EXPECT_NE(errors["memory.ring"].find("symbolic link"), std::string::npos);
  EXPECT_NE(errors["metrics.ring"].find("not a regular file"), std::string::npos);
}

// Rings process.json lists that are not there are reported as missing; the others load. A
// process.json that is a FIFO or a symlink is not read (it would hang us, or point anywhere).
TEST(RingDirSource, AMissingRingIsReported) {
  fs::path dir = DeadRings("missing", 2, 4);
  std::ofstream(dir / "process.json")
      << R"({"pid": 4242, "rings": ["stacks.ring", "torch.ring", "../escape.ring", 7]})";
  auto set = Load({dir.string()});
  ASSERT_TRUE(set.ok()) << set.status().message();
  EXPECT_EQ(set->segments.size(), 2u);
  std::map<std::string, std::string> errors;
  for (const auto& s : set->sources)
    if (s.unreadable) errors[fs::path(s.path).filename().string()] = s.first_error;
  EXPECT_EQ(errors, (std::map<std::string, std::string>{
                        {"torch.ring", "skipped: missing (process.json lists it)"}}));
  fs::remove(dir / "process.json");
  ASSERT_EQ(mkfifo((dir / "process.json").c_str(), 0600), 0);
  set = Load({dir.string()});  // returns: the FIFO is never opened for reading
  ASSERT_TRUE(set.ok()) << set.status().message();
  EXPECT_EQ(set->segments.size(), 2u);
}

TEST(OpenFiles, AFifoIsNamedForWhatItIsAndNeverWaitedOn) {
  fs::path fifo = TempDir() / "run.ptrace.fifo";
  fs::remove(fifo);
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  auto r = Load({fifo.string()});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("is a FIFO, not a regular file"), std::string::npos)
      << r.status().message();
}

TEST(RingDirSource, CursorsFollowTheRingAndCountWhatWasOverwritten) {
  fs::path dir = TempDir() / "follow";
  fs::create_directories(dir);
  auto w = RingWriter::Create((dir / "stacks.ring").string(), {Stream::kStacks, 64 << 10, 4, 1});
  ASSERT_TRUE(w.ok());
  auto source = RingDirSource::Open(dir.string());
  ASSERT_TRUE(source.ok());
  Cursors cursors;
  FetchOutcome got;
  ASSERT_TRUE((*source)->Fetch({}, &cursors, &got).ok());
  EXPECT_TRUE(got.segments.empty());
  for (uint64_t i = 0; i < 3; ++i)
    ASSERT_TRUE(w->Append(format::testing::SealAllKinds(Codec::kLz4, i)).ok());
  got = {};
  ASSERT_TRUE((*source)->Fetch({"stacks"}, &cursors, &got).ok());
  ASSERT_EQ(got.segments.size(), 3u);
  EXPECT_EQ(got.segments[2].seq, 2u);
  EXPECT_EQ(cursors["stacks"], 3u);
  for (uint64_t i = 3; i < 10; ++i)  // 7 more into 4 slots: 3 overwritten unread
    ASSERT_TRUE(w->Append(format::testing::SealAllKinds(Codec::kLz4, i)).ok());
  got = {};
  ASSERT_TRUE((*source)->Fetch({"stacks"}, &cursors, &got).ok());
  EXPECT_EQ(got.segments.size(), 4u);
  EXPECT_EQ(got.lost["stacks"], 3u);
  // What the ring still holds, for readers that keep segments: 6..9.
  EXPECT_EQ(got.oldest[(dir / "stacks.ring").string()], 6u);
  got = {};
  ASSERT_TRUE((*source)->Fetch({"memory"}, &cursors, &got).ok());  // another ring: none here
  EXPECT_TRUE(got.segments.empty());
}

TEST(SegmentBatch, RoundTripsAndRefusesDamage) {
  protocol::SegmentBatch b;
  b.rings = {{"stacks", 1, 9, 2, 4, 1}, {"memory", 0, 1, 0, 1, 0}};
  b.segments = {{0, 2, "abc"}, {0, 3, std::string(1000, 'x')}, {1, 0, ""}};
  b.more = true;
  b.sealed = 2;
  std::string body = protocol::EncodeSegmentBatch(b);
  auto back = protocol::DecodeSegmentBatch(body);
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_EQ(back->rings.size(), 2u);
  EXPECT_EQ(back->rings[0].lost, 1u);
  EXPECT_EQ(back->segments.size(), 3u);
  EXPECT_EQ(back->segments[1].bytes, std::string(1000, 'x'));
  EXPECT_TRUE(back->more);
  EXPECT_EQ(back->sealed, 2);
  for (size_t cut : {size_t{0}, size_t{3}, size_t{10}, body.size() - 1})
    EXPECT_FALSE(protocol::DecodeSegmentBatch(body.substr(0, cut)).ok()) << cut;
  EXPECT_FALSE(protocol::DecodeSegmentBatch(body + "x").ok());
  protocol::SegmentBatch bad = b;
  bad.segments[0].ring = 7;  // names a ring the header does not have
  EXPECT_FALSE(protocol::DecodeSegmentBatch(protocol::EncodeSegmentBatch(bad)).ok());
}

}  // namespace
}  // namespace probing::live
