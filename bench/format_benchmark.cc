// Format throughput and size (issue targets: append >= 10 M events/s on one core, decode >= 20 M
// events/s, <= 4 bytes per stack sample after compression on the realistic stream).
// Run fully with `make bench`; ctest runs each once as a smoke test.
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <filesystem>
#include <unordered_map>

#include "probing/format/ring.h"
#include "probing/format/segment.h"
#include "stream.h"

namespace probing::bench {
namespace {

using namespace probing::format;

constexpr size_t kSealAt = 192 << 10;  // raw bytes per segment before sealing into a 256 KiB slot

// Interns a stream stack the way the recorder does: through a cache of call-site ids that is
// dropped when the builder starts a new segment (generation changes).
class CallSiteCache {
 public:
  uint32_t Intern(SegmentBuilder& b, const RealisticStream& st,
                  const std::vector<StreamFrame>& outer_first) {
    if (b.generation() != gen_) {
      cache_.clear();
      frames_.clear();
      gen_ = b.generation();
    }
    uint32_t parent = 0;
    for (const StreamFrame& f : outer_first) {
      uint64_t key = (uint64_t{parent} << 40) ^ (uint64_t{f.func} << 20) ^ f.line;
      auto it = cache_.find(key);
      if (it != cache_.end()) {
        parent = it->second;
        continue;
      }
      auto fit = frames_.find(f.func);
      uint32_t frame;
      if (fit == frames_.end()) {
        const auto& fn = st.funcs[f.func];
        frame = b.InternFrame(b.InternString(fn.name), b.InternString(fn.file), fn.first_line);
        frames_.emplace(f.func, frame);
      } else {
        frame = fit->second;
      }
      parent = b.InternCallSite(parent, frame, f.line);
      cache_.emplace(key, parent);
    }
    return parent;
  }

 private:
  uint64_t gen_ = ~0ull;
  std::unordered_map<uint64_t, uint32_t> cache_;
  std::unordered_map<uint32_t, uint32_t> frames_;
};

std::string TempRing() {
  return (std::filesystem::temp_directory_path() /
          ("probing-bench-" + std::to_string(getpid()) + ".ring"))
      .string();
}

// Encode + seal (lz4) + append to a ring, stack samples with cached call sites: the recorder's
// steady state. Counts sample events.
void BM_AppendStackSamples(benchmark::State& state) {
  RealisticStream st;
  const std::vector<std::vector<StreamFrame>> stacks = st.Tick();
  std::string path = TempRing();
  auto ring = RingWriter::Create(path, {Stream::kStacks, 256 << 10, 64, 1});
  if (!ring.ok()) {
    state.SkipWithError(ring.status().message().c_str());
    return;
  }
  SegmentBuilder b(Stream::kStacks, 1);
  b.SetProcess(ProcessInfo::Of(1, 0, -1, "3.11.2", "python train.py", "host"));
  CallSiteCache cache;
  std::string sealed;
  int64_t ts = 1'700'000'000'000'000'000;
  uint32_t thread = 0;
  uint64_t gen = ~0ull;
  std::vector<uint32_t> cs(RealisticStream::kThreads);
  uint64_t events = 0;
  for (auto _ : state) {
    // One sampler tick: 20 threads.
    if (b.generation() != gen) {
      gen = b.generation();
      thread = b.InternThread(1234, b.InternString("MainThread"));
      for (int t = 0; t < RealisticStream::kThreads; ++t) cs[t] = cache.Intern(b, st, stacks[t]);
    }
    ts += RealisticStream::kPeriodNs;
    for (int t = 0; t < RealisticStream::kThreads; ++t) b.AddStackSample(ts, thread, cs[t], 0);
    events += RealisticStream::kThreads;
    if (b.raw_size() >= kSealAt) {
      if (!b.Seal(Codec::kLz4, ring->next_seq(), &sealed).ok() || !ring->Append(sealed).ok()) {
        state.SkipWithError("seal/append failed");
        break;
      }
    }
  }
  state.SetItemsProcessed(static_cast<int64_t>(events));
  std::filesystem::remove(path);
}
BENCHMARK(BM_AppendStackSamples);

// The realistic stream, sealed once a second (the recorder's interval), as the ring would hold
// it. Returns sealed segments and the sample count.
std::vector<std::string> SealStream(Codec codec, int seconds, uint64_t* samples,
                                    double* raw_bytes) {
  RealisticStream st;
  SegmentBuilder b(Stream::kStacks, 1);
  b.SetProcess(format::ProcessInfo::Of(1, 1'700'000'000'000'000'000, -1, "3.11.2",
                                       "python train.py --epochs 90", "gpu-node-17"));
  CallSiteCache cache;
  std::vector<uint32_t> threads(RealisticStream::kThreads);
  uint64_t gen = ~0ull;
  std::vector<std::string> out;
  int64_t ts = 1'700'000'000'000'000'000;
  *samples = 0;
  *raw_bytes = 0;
  for (int sec = 0; sec < seconds; ++sec) {
    for (int tick = 0; tick < 100; ++tick) {
      const auto& stacks = st.Tick();
      if (b.generation() != gen) {
        gen = b.generation();
        for (int t = 0; t < RealisticStream::kThreads; ++t)
          threads[t] = b.InternThread(1000 + t, b.InternString("thread-" + std::to_string(t)));
      }
      ts += RealisticStream::kPeriodNs;
      for (int t = 0; t < RealisticStream::kThreads; ++t) {
        // One sampler pass stamps all its threads with the pass's time (as the recorder does).
        b.AddStackSample(ts, threads[t], cache.Intern(b, st, stacks[t]),
                         t == 0 ? kSampleHoldsGil : 0);
        ++*samples;
      }
    }
    *raw_bytes += static_cast<double>(b.raw_size());
    std::string sealed;
    if (!b.Seal(codec, out.size(), &sealed).ok()) return {};
    out.push_back(std::move(sealed));
  }
  return out;
}

void BM_BytesPerStackSample(benchmark::State& state) {
  Codec codec = static_cast<Codec>(state.range(0));
  uint64_t samples = 0;
  double raw = 0, stored = 0;
  for (auto _ : state) {
    auto segs = SealStream(codec, 30, &samples, &raw);
    stored = 0;
    for (const auto& s : segs) stored += static_cast<double>(s.size());
    benchmark::DoNotOptimize(segs);
  }
  state.SetItemsProcessed(static_cast<int64_t>(samples) * state.iterations());
  state.counters["bytes_per_sample"] = stored / static_cast<double>(samples);
  state.counters["raw_bytes_per_sample"] = raw / static_cast<double>(samples);
  state.counters["ratio"] = raw / stored;
  state.SetLabel(CodecName(codec));
}
BENCHMARK(BM_BytesPerStackSample)->Arg(0)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond);

void BM_DecodeSegments(benchmark::State& state) {
  Codec codec = static_cast<Codec>(state.range(0));
  uint64_t samples = 0;
  double raw = 0;
  auto segs = SealStream(codec, 10, &samples, &raw);
  uint64_t events = 0;
  for (auto _ : state) {
    for (const auto& s : segs) {
      auto seg = DecodeSegment(s);
      if (!seg.ok()) {
        state.SkipWithError(seg.status().message().c_str());
        return;
      }
      events += seg->info.event_count;
    }
  }
  state.SetItemsProcessed(static_cast<int64_t>(events));
  state.SetBytesProcessed(static_cast<int64_t>(raw) * state.iterations());
  state.SetLabel(CodecName(codec));
}
BENCHMARK(BM_DecodeSegments)->Arg(1)->Arg(2);

// Compression speed and ratio of one sealed second of the realistic stream.
void BM_Compress(benchmark::State& state) {
  Codec codec = static_cast<Codec>(state.range(0));
  uint64_t samples = 0;
  double raw = 0;
  auto segs = SealStream(Codec::kNone, 5, &samples, &raw);
  std::string payload = segs[2].substr(kSegmentHeaderSize);
  std::string out;
  for (auto _ : state) {
    if (!Compress(codec, payload, &out).ok()) state.SkipWithError("compress failed");
    benchmark::DoNotOptimize(out);
  }
  state.SetBytesProcessed(static_cast<int64_t>(payload.size()) * state.iterations());
  state.counters["ratio"] = static_cast<double>(payload.size()) / static_cast<double>(out.size());
  state.SetLabel(CodecName(codec));
}
BENCHMARK(BM_Compress)->Arg(1)->Arg(2);

}  // namespace
}  // namespace probing::bench

BENCHMARK_MAIN();
