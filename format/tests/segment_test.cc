#include "probing/format/segment.h"

#include <gtest/gtest.h>

#include <cstring>
#include <limits>
#include <random>

#include "probing/format/bytes.h"
#include "probing/format/crc32c.h"
#include "test_events.h"

namespace probing::format {
namespace {

using testing::CheckAllKinds;
using testing::FillAllKinds;
using testing::SealAllKinds;

TEST(Varint, RoundTripsEdgeValues) {
  const uint64_t values[] = {0, 1, 127, 128, 300, 1ull << 35, std::numeric_limits<uint64_t>::max()};
  ByteWriter w;
  for (uint64_t v : values) w.PutVarint(v);
  for (int64_t v : {int64_t{0}, int64_t{-1}, int64_t{1}, std::numeric_limits<int64_t>::min(),
                    std::numeric_limits<int64_t>::max()})
    w.PutZigzag(v);
  ByteReader r(w.view());
  for (uint64_t v : values) {
    uint64_t got;
    ASSERT_TRUE(r.GetVarint(&got));
    EXPECT_EQ(got, v);
  }
  for (int64_t v : {int64_t{0}, int64_t{-1}, int64_t{1}, std::numeric_limits<int64_t>::min(),
                    std::numeric_limits<int64_t>::max()}) {
    int64_t got;
    ASSERT_TRUE(r.GetZigzag(&got));
    EXPECT_EQ(got, v);
  }
  EXPECT_TRUE(r.empty());
}

TEST(Varint, RejectsOverlongAndTruncated) {
  std::string eleven(11, '\xff');
  ByteReader r(eleven);
  uint64_t v;
  EXPECT_FALSE(r.GetVarint(&v));
  std::string cut = "\x80\x80";
  ByteReader r2(cut);
  EXPECT_FALSE(r2.GetVarint(&v));
}

TEST(Crc32c, KnownValue) {
  // The check value of CRC-32C (RFC 3720): "123456789" -> 0xE3069283.
  EXPECT_EQ(Crc32c("123456789", 9), 0xE3069283u);
  EXPECT_EQ(Crc32cExtend(Crc32c("1234", 4), "56789", 5), 0xE3069283u);
}

class SegmentRoundTrip : public ::testing::TestWithParam<Codec> {};

TEST_P(SegmentRoundTrip, EveryEventKind) {
  std::string bytes = SealAllKinds(GetParam(), /*seq=*/9);
  size_t consumed = 0;
  auto seg = DecodeSegment(bytes, &consumed);
  ASSERT_TRUE(seg.ok()) << seg.status().message();
  EXPECT_EQ(consumed, bytes.size());
  EXPECT_EQ(seg->info.seq, 9u);
  EXPECT_EQ(seg->info.codec, static_cast<uint8_t>(GetParam()));
  CheckAllKinds(*seg);
}

INSTANTIATE_TEST_SUITE_P(Codecs, SegmentRoundTrip,
                         ::testing::Values(Codec::kNone, Codec::kLz4, Codec::kZstd));

TEST(SegmentBuilder, EachSegmentIsSelfContained) {
  SegmentBuilder b(Stream::kStacks, 1);
  b.SetProcess(ProcessInfo::Of(1, 0, -1, "3.11", "x", "h"));
  uint64_t gen = b.generation();
  uint32_t t = b.InternThread(1, b.InternString("MainThread"));
  FrameLine f[] = {{"f", "a.py", 1, 2}};
  b.AddStackSample(100, t, b.InternStack(f), 0);
  std::string first, second;
  ASSERT_TRUE(b.Seal(Codec::kLz4, 0, &first).ok());
  EXPECT_NE(b.generation(), gen);
  // After sealing, ids start over: the caller re-interns and the new segment defines them again.
  t = b.InternThread(1, b.InternString("MainThread"));
  b.AddStackSample(200, t, b.InternStack(f), 0);
  ASSERT_TRUE(b.Seal(Codec::kLz4, 1, &second).ok());
  auto s2 = DecodeSegment(second);  // decodes alone, without the first
  ASSERT_TRUE(s2.ok()) << s2.status().message();
  ASSERT_EQ(s2->samples.size(), 1u);
  EXPECT_EQ(s2->String(s2->frames[s2->callsites[s2->samples[0].callsite].frame].func), "f");
  EXPECT_EQ(s2->processes.size(), 1u);  // the process record opens every segment
}

TEST(SegmentBuilder, EmptyTracksEventsNotDefinitions) {
  SegmentBuilder b(Stream::kStacks, 1);
  b.SetProcess(ProcessInfo::Of(1, 0, -1, "3.11", "x", "h"));
  EXPECT_TRUE(b.empty());
  b.InternString("x");
  EXPECT_TRUE(b.empty());
  b.AddMetric(1, 1, 1.0);
  EXPECT_FALSE(b.empty());
}

TEST(SegmentBuilder, RefusesOversizedPayload) {
  SegmentBuilder b(Stream::kVariables, 1);
  std::string big(kMaxStringSize, 'x');
  for (size_t i = 0; i <= kMaxRawSegmentSize / kMaxStringSize; ++i)
    b.AddVariable(1, 0, i, 0, 0, big);
  std::string out;
  Status st = b.Seal(Codec::kNone, 0, &out);
  EXPECT_EQ(st.code(), StatusCode::kOutOfRange);
  EXPECT_TRUE(b.empty());
}

TEST(SegmentDecode, RefusesNewerMajorVersionByName) {
  std::string bytes = SealAllKinds(Codec::kLz4);
  uint16_t v3 = 3;
  std::memcpy(bytes.data() + 4, &v3, 2);
  auto seg = DecodeSegment(bytes);
  ASSERT_FALSE(seg.ok());
  EXPECT_EQ(seg.status().code(), StatusCode::kUnimplemented);
  EXPECT_EQ(seg.status().message(), "trace format v3 is newer than this build (reads up to v1)");
}

TEST(SegmentDecode, WrongMagic) {
  std::string bytes = SealAllKinds(Codec::kNone);
  bytes[0] = 'X';
  auto seg = DecodeSegment(bytes);
  ASSERT_FALSE(seg.ok());
  EXPECT_NE(seg.status().message().find("bad magic"), std::string::npos);
}

TEST(SegmentDecode, HugeDeclaredSizesAreRefusedBeforeAllocating) {
  std::string bytes = SealAllKinds(Codec::kZstd);
  uint32_t huge = 0xfffffff0;
  std::string a = bytes;
  std::memcpy(a.data() + 16, &huge, 4);  // raw_size
  EXPECT_EQ(DecodeSegment(a).status().code(), StatusCode::kDataLoss);
  std::string b = bytes;
  std::memcpy(b.data() + 12, &huge, 4);  // payload_size
  EXPECT_EQ(DecodeSegment(b).status().code(), StatusCode::kDataLoss);
}

TEST(SegmentDecode, EveryTruncationIsAnErrorNeverACrash) {
  for (Codec c : {Codec::kNone, Codec::kLz4, Codec::kZstd}) {
    std::string bytes = SealAllKinds(c);
    for (size_t n = 0; n < bytes.size(); ++n) {
      auto seg = DecodeSegment(std::string_view(bytes).substr(0, n));
      EXPECT_FALSE(seg.ok()) << "codec " << CodecName(c) << " cut at " << n;
    }
  }
}

TEST(SegmentDecode, EveryBitFlipIsDetected) {
  for (Codec c : {Codec::kNone, Codec::kLz4}) {
    std::string bytes = SealAllKinds(c);
    for (size_t i = 0; i < bytes.size(); ++i) {
      for (int bit = 0; bit < 8; ++bit) {
        std::string bad = bytes;
        bad[i] = static_cast<char>(bad[i] ^ (1 << bit));
        auto seg = DecodeSegment(bad);
        // Flips in the reserved header bytes are outside what v1 gives meaning to, but the
        // checksum covers them too: every flip must be caught.
        EXPECT_FALSE(seg.ok()) << "flip at byte " << i << " bit " << bit;
      }
    }
  }
}

// Valid checksums over invalid records: the decoder, not the checksum, must catch these.
std::string SealRaw(std::string_view payload, uint32_t event_count) {
  SegmentBuilder b(Stream::kMixed, 1);
  std::string sealed;
  EXPECT_TRUE(b.Seal(Codec::kNone, 0, &sealed).ok());
  std::string out = sealed.substr(0, kSegmentHeaderSize);
  uint32_t size = static_cast<uint32_t>(payload.size());
  std::memcpy(out.data() + 12, &size, 4);
  std::memcpy(out.data() + 16, &size, 4);
  std::memcpy(out.data() + 20, &event_count, 4);
  uint32_t zero = 0;
  std::memcpy(out.data() + 52, &zero, 4);
  uint32_t crc = Crc32cExtend(Crc32c(out.data(), out.size()), payload.data(), payload.size());
  std::memcpy(out.data() + 52, &crc, 4);
  out.append(payload);
  return out;
}

TEST(SegmentDecode, UndefinedReferencesAndCountsAreErrors) {
  // A stack sample naming thread 5 that was never defined.
  ByteWriter w;
  w.PutByte(static_cast<uint8_t>(RecordKind::kStackSample));
  w.PutZigzag(1);
  w.PutVarint(5);
  w.PutVarint(0);
  w.PutByte(0);
  auto seg = DecodeSegment(SealRaw(w.view(), 1));
  ASSERT_FALSE(seg.ok());
  EXPECT_NE(seg.status().message().find("undefined thread"), std::string::npos)
      << seg.status().message();
  // A call site whose parent is itself (a cycle) cannot be defined: parents precede children.
  ByteWriter c;
  c.PutByte(static_cast<uint8_t>(RecordKind::kString));
  c.PutLengthPrefixed("f");
  c.PutByte(static_cast<uint8_t>(RecordKind::kFrame));
  c.PutVarint(1);
  c.PutVarint(1);
  c.PutVarint(0);
  c.PutByte(static_cast<uint8_t>(RecordKind::kCallSite));
  c.PutVarint(1);  // parent 1 = itself, not yet defined
  c.PutVarint(1);
  c.PutVarint(3);
  EXPECT_FALSE(DecodeSegment(SealRaw(c.view(), 3)).ok());
  // Wrong event count.
  ByteWriter s;
  s.PutByte(static_cast<uint8_t>(RecordKind::kString));
  s.PutLengthPrefixed("x");
  EXPECT_FALSE(DecodeSegment(SealRaw(s.view(), 2)).ok());
  EXPECT_TRUE(DecodeSegment(SealRaw(s.view(), 1)).ok());
  // Unknown core kind.
  EXPECT_FALSE(DecodeSegment(SealRaw("\x3f", 1)).ok());
}

TEST(SegmentDecode, SkipsUnknownSkippableKinds) {
  ByteWriter w;
  w.PutByte(100);  // a kind a later minor version might add
  w.PutLengthPrefixed("future data");
  w.PutByte(static_cast<uint8_t>(RecordKind::kString));
  w.PutLengthPrefixed("still read");
  auto seg = DecodeSegment(SealRaw(w.view(), 2));
  ASSERT_TRUE(seg.ok()) << seg.status().message();
  EXPECT_EQ(seg->skipped_records, 1u);
  EXPECT_EQ(seg->String(1), "still read");
}

// A process's place in a job travels in the skippable job record after its process record.
TEST(SegmentDecode, TheJobRecordCompletesTheProcessRecord) {
  SegmentBuilder b(Stream::kMemory, 7);
  ProcessInfo p = ProcessInfo::Of(7, 0, 2, "3.11", "python train.py", "node7");
  p.run_id = "job-1";
  p.world_size = 4;
  p.local_rank = 0;
  p.node = "node7";
  p.role = "rank";
  b.SetProcess(p);
  MemoryEvent m;
  m.ts = 1;
  b.AddMemory(m);
  std::string bytes;
  ASSERT_TRUE(b.Seal(Codec::kLz4, 0, &bytes).ok());
  auto seg = DecodeSegment(bytes);
  ASSERT_TRUE(seg.ok()) << seg.status().message();
  ASSERT_EQ(seg->processes.size(), 1u);
  const ProcessEvent& e = seg->processes[0];
  EXPECT_EQ(e.rank, 2);
  EXPECT_EQ(seg->String(e.run_id), "job-1");
  EXPECT_EQ(e.world_size, 4);
  EXPECT_EQ(e.local_rank, 0);
  EXPECT_EQ(seg->String(e.role), "rank");
  EXPECT_EQ(seg->skipped_records, 0u);
  // Outside a job nothing is written, and a reader sees "unknown".
  SegmentBuilder plain(Stream::kMemory, 8);
  plain.SetProcess(ProcessInfo::Of(8, 0, -1, "3.11", "python x.py", "h"));
  plain.AddMemory(m);
  ASSERT_TRUE(plain.Seal(Codec::kLz4, 0, &bytes).ok());
  seg = DecodeSegment(bytes);
  ASSERT_TRUE(seg.ok());
  EXPECT_EQ(seg->processes[0].run_id, 0u);
  EXPECT_EQ(seg->processes[0].world_size, -1);
}

TEST(SegmentBuilder, SamplerStatsRoundTrip) {
  SegmentBuilder b(Stream::kStacks, 1);
  b.AddSamplerStats({5, 2});
  b.AddSamplerStats({0, 9});
  EXPECT_FALSE(b.empty());
  std::string bytes;
  ASSERT_TRUE(b.Seal(Codec::kLz4, 0, &bytes).ok());
  auto seg = DecodeSegment(bytes);
  ASSERT_TRUE(seg.ok()) << seg.status().message();
  EXPECT_EQ(seg->info.version_minor, 1);
  ASSERT_EQ(seg->sampler_stats.size(), 2u);
  EXPECT_EQ(seg->sampler_stats[0], (SamplerStatsEvent{5, 2}));
  EXPECT_EQ(seg->sampler_stats[1], (SamplerStatsEvent{0, 9}));
  EXPECT_EQ(seg->skipped_records, 0u);
}

TEST(SegmentDecode, SamplerStatsTakesKnownFieldsAndRefusesShortOnes) {
  ByteWriter later;  // a later writer appending a field this build does not know
  later.PutVarint(3);
  later.PutVarint(4);
  later.PutVarint(99);
  ByteWriter w;
  w.PutByte(kSamplerStatsKind);
  w.PutLengthPrefixed(later.view());
  auto seg = DecodeSegment(SealRaw(w.view(), 1));
  ASSERT_TRUE(seg.ok()) << seg.status().message();
  ASSERT_EQ(seg->sampler_stats.size(), 1u);
  EXPECT_EQ(seg->sampler_stats[0], (SamplerStatsEvent{3, 4}));

  ByteWriter one;
  one.PutVarint(3);
  ByteWriter cut;
  cut.PutByte(kSamplerStatsKind);
  cut.PutLengthPrefixed(one.view());
  auto bad = DecodeSegment(SealRaw(cut.view(), 1));
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("sampler stats record too short"), std::string::npos);
}

// A payload of torch records (times as deltas) around a torch step record (kind 74, its time
// absolute), with `step_kind` in place of 74: an older reader sees an unknown skippable kind.
std::string TorchAroundAStep(uint8_t step_kind, std::string_view step_body) {
  ByteWriter w;
  w.PutByte(static_cast<uint8_t>(RecordKind::kString));
  w.PutLengthPrefixed("MainThread");
  w.PutByte(static_cast<uint8_t>(RecordKind::kString));
  w.PutLengthPrefixed("fc");
  w.PutByte(static_cast<uint8_t>(RecordKind::kThread));
  w.PutVarint(4242);
  w.PutVarint(1);
  auto torch = [&](int64_t dt) {
    w.PutByte(static_cast<uint8_t>(RecordKind::kTorch));
    w.PutZigzag(dt);
    w.PutVarint(1);  // thread
    w.PutVarint(7);  // step
    w.PutVarint(0);  // seq
    w.PutVarint(2);  // module "fc"
    w.PutByte(0);    // forward
    w.PutVarint(1000);
    w.PutByte(0);  // no CUDA values
  };
  torch(1'000'000);
  w.PutByte(step_kind);
  w.PutLengthPrefixed(step_body);
  torch(500);
  return SealRaw(w.view(), 6);
}

std::string StepBody(uint64_t thread, uint8_t decision) {
  ByteWriter b;
  b.PutZigzag(123'456'789);
  b.PutVarint(2'000'000);
  b.PutVarint(thread);
  b.PutVarint(7);
  b.PutByte(decision);
  b.PutVarint(30'000);
  b.PutVarint(10'000);
  return std::string(b.view());
}

TEST(SegmentDecode, TorchStepsAreReadAndAnOlderReaderSkipsThem) {
  auto seg = DecodeSegment(TorchAroundAStep(kTorchStepRecordKind, StepBody(1, kStepOverBudget)));
  ASSERT_TRUE(seg.ok()) << seg.status().message();
  ASSERT_EQ(seg->torch_steps.size(), 1u);
  EXPECT_EQ(seg->torch_steps[0],
            (TorchStepEvent{123'456'789, 2'000'000, 1, 7, kStepOverBudget, 30'000, 10'000}));
  ASSERT_EQ(seg->torch.size(), 2u);
  EXPECT_EQ(seg->torch[1].ts, 1'000'500);  // the step's absolute time leaves the deltas alone
  EXPECT_EQ(seg->skipped_records, 0u);
  // A reader that predates kind 74 reads the same payload with the record skipped.
  seg = DecodeSegment(TorchAroundAStep(kLastSkippableKind, StepBody(1, kStepOverBudget)));
  ASSERT_TRUE(seg.ok()) << seg.status().message();
  EXPECT_TRUE(seg->torch_steps.empty());
  EXPECT_EQ(seg->skipped_records, 1u);
  ASSERT_EQ(seg->torch.size(), 2u);
  EXPECT_EQ(seg->torch[0].ts, 1'000'000);
  EXPECT_EQ(seg->torch[1].ts, 1'000'500);
}

TEST(SegmentDecode, TorchStepTakesKnownFieldsAndRefusesBadOnes) {
  std::string later = StepBody(1, kStepTraced);
  later += '\x05';  // a field a later writer appends
  auto seg = DecodeSegment(TorchAroundAStep(kTorchStepRecordKind, later));
  ASSERT_TRUE(seg.ok()) << seg.status().message();
  ASSERT_EQ(seg->torch_steps.size(), 1u);
  EXPECT_EQ(seg->torch_steps[0].budget_ppm, 10'000u);

  auto error = [](std::string_view body) {
    auto bad = DecodeSegment(TorchAroundAStep(kTorchStepRecordKind, body));
    return bad.ok() ? std::string("decoded") : bad.status().message();
  };
  const std::string body = StepBody(1, kStepTraced);
  EXPECT_NE(error(body.substr(0, body.size() - 1)).find("torch step record too short"),
            std::string::npos);
  EXPECT_NE(error(StepBody(1, 3)).find("torch step record: unknown decision 3"), std::string::npos)
      << error(StepBody(1, 3));
  EXPECT_NE(error(StepBody(2, kStepTraced)).find("undefined thread"), std::string::npos);
  // The length itself past the payload.
  ByteWriter w;
  w.PutByte(kTorchStepRecordKind);
  w.PutVarint(100);
  w.PutByte(0);
  auto cut = DecodeSegment(SealRaw(w.view(), 1));
  ASSERT_FALSE(cut.ok());
  EXPECT_NE(cut.status().message().find("record truncated"), std::string::npos);
}

// A rank's clock offset moves every time it recorded, the skippable records' too.
TEST(ShiftTimes, MovesEveryEventTime) {
  SegmentBuilder b(Stream::kMixed, 1);
  FillAllKinds(b);
  CollectiveEvent c;
  c.ts = 100;
  c.end_ts = 150;
  b.AddCollective(c);
  GpuEvent g;
  g.ts = 200;
  b.AddGpu(g);
  AllocationEvent a;
  a.ts = 300;
  b.AddAllocation(a);
  TorchStepEvent t;
  t.ts_ns = 400;
  b.AddTorchStep(t);
  std::string bytes;
  ASSERT_TRUE(b.Seal(Codec::kNone, 0, &bytes).ok());
  auto seg = DecodeSegment(bytes);
  ASSERT_TRUE(seg.ok()) << seg.status().message();
  ShiftTimes(&*seg, -7);
  EXPECT_EQ(seg->samples[0].ts, testing::kBaseTs - 7);
  EXPECT_EQ(seg->torch[0].ts, testing::kBaseTs + 1'000 - 7);
  EXPECT_EQ(seg->memory[0].ts, testing::kBaseTs + 30'000'000 - 7);
  EXPECT_EQ(seg->collectives[0].ts, 93);
  EXPECT_EQ(seg->collectives[0].end_ts, 143);
  EXPECT_EQ(seg->gpus[0].ts, 193);
  EXPECT_EQ(seg->allocations[0].ts, 293);
  EXPECT_EQ(seg->torch_steps[0].ts_ns, 393);
}

TEST(SegmentDecode, RandomGarbageNeverCrashes) {
  std::mt19937_64 rng(7);
  std::string base = SealAllKinds(Codec::kNone);
  for (int i = 0; i < 2000; ++i) {
    std::string bad = base;
    int flips = 1 + static_cast<int>(rng() % 8);
    for (int k = 0; k < flips; ++k) bad[rng() % bad.size()] = static_cast<char>(rng());
    (void)DecodeSegment(bad);
  }
}

}  // namespace
}  // namespace probing::format
