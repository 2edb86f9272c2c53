// The recorder inside the target: start-up, rings, the sampler thread (stacks at
// probing.sampler.hz, memory once a second), exit and fork handling. Nothing here takes the
// GIL; PythonWorker does the little that needs it, on its own thread.
#include "probing/recorder/recorder.h"

#include <Python.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>
#include <unordered_map>
#include <utility>

#include "collectives.h"
#include "config.h"
#include "control_server.h"
#include "gil_executor.h"
#include "gpu_sampler.h"
#include "log.h"
#include "probing/base/clock.h"
#include "probing/format/ring.h"
#include "probing/format/segment.h"
#include "probing/live/recorders.h"
#include "probing/procfs/proc_stat.h"
#include "py_module.h"
#include "py_offsets.h"
#include "python_stats.h"
#include "safe_read.h"
#include "stack_sampler.h"

namespace probing::recorder {
namespace {

using format::Codec;
using format::RingWriter;
using format::SegmentBuilder;
using format::Stream;

constexpr int64_t kSealIntervalNs = 1'000'000'000;  // readers see data at most ~1 s old
constexpr int64_t kTouchIntervalNs = 60'000'000'000;  // the data directory's time, refreshed
constexpr int64_t kMinForcedSealIntervalNs = 200'000'000;
// In the recorder's first seconds segments are sealed ten times as often, so a short-lived
// process (a forked worker that leaves by os._exit or is killed, running no exit hook) loses at
// most its last 100 ms. Costs a few more ring slots, once.
constexpr int64_t kEarlySealIntervalNs = 100'000'000;
constexpr int64_t kEarlyPeriodNs = 3'000'000'000;
// A new thread's samples wait (in memory) until its name is known, so that one thread id has one
// name in a recording: until the interpreter has been asked after the thread was first seen
// (its threading name, if it has one, is there), waiting at least kNameGraceNs for a thread
// still registering itself with threading, at most kNameDeadlineNs when the GIL is not to be
// had; then the fallback name (MainThread, or the OS name) is used.
constexpr int64_t kNameGraceNs = 200'000'000;
constexpr int64_t kNameDeadlineNs = 2'000'000'000;
constexpr size_t kMaxPendingFrames = 1 << 20;  // beyond, waiting samples are written at once
// A thread id not seen for this long is forgotten (the OS may give it to a new thread).
constexpr int64_t kForgetThreadNs = 1'000'000'000;
constexpr uint32_t kStackSlot = 64 << 10;
constexpr uint32_t kMemorySlot = 4 << 10;
constexpr uint32_t kTorchSlot = 16 << 10;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

std::vector<std::string> CommandLine() {
  std::string raw = ReadFile("/proc/self/cmdline");
  std::vector<std::string> args;
  std::string cur;
  for (char c : raw) {
    if (c == '\0') {
      args.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  if (!cur.empty()) args.push_back(cur);
  return args;
}

std::string Join(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : " ") + s;
  return out;
}


// A non-negative integer from the environment, or -1.
int32_t EnvInt(std::initializer_list<const char*> names) {
  for (const char* name : names) {
    const char* v = std::getenv(name);  // NOLINT(concurrency-mt-unsafe): read at start only
    if (v == nullptr || *v == '\0') continue;
    char* end = nullptr;
    long n = std::strtol(v, &end, 10);
    if (end != v && *end == '\0' && n >= 0 && n < (1L << 30)) return static_cast<int32_t>(n);
  }
  return -1;
}

std::string EnvText(std::initializer_list<const char*> names) {
  for (const char* name : names) {
    const char* v = std::getenv(name);  // NOLINT(concurrency-mt-unsafe): read at start only
    if (v != nullptr && *v != '\0') return v;
  }
  return "";
}

// torchrun / python -m torch.distributed.run (or .launch): the agent that starts the ranks.
bool IsLauncher(const std::vector<std::string>& args) {
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    const std::string base = a.substr(a.rfind('/') + 1);
    if (i <= 1 && (base == "torchrun" || a.find("torch/distributed/run.py") != std::string::npos ||
                   a.find("torch/distributed/launch.py") != std::string::npos))
      return true;
    if (a == "-m" && i + 1 < args.size() &&
        (args[i + 1] == "torch.distributed.run" || args[i + 1] == "torch.distributed.launch"))
      return true;
  }
  return false;
}

// Set by probing_after_fork_child before it starts the child's own recorder (PROBING=2).
bool& StartedInForkChild() {
  static bool child = false;
  return child;
}

// A directory we own with mode 0700 (created if missing, with its missing parents as mkdir -p
// makes them). Refuses one that is not ours.
bool EnsurePrivateDir(std::string path, std::string* why) {
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  if (mkdir(path.c_str(), 0700) != 0 && errno == ENOENT) {
    const std::filesystem::path parent = std::filesystem::path(path).parent_path();
    std::error_code ec;
    if (!parent.empty() && !std::filesystem::create_directories(parent, ec) && ec) {
      *why = "cannot create " + parent.string() + ": " + ec.message();
      return false;
    }
  }
  if (mkdir(path.c_str(), 0700) != 0 && errno != EEXIST) {
    *why = "cannot create " + path + ": " + std::strerror(errno);
    return false;
  }
  struct stat st;
  if (lstat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    *why = path + " is not a directory";
    return false;
  }
  if (st.st_uid != geteuid()) {
    *why = path + " belongs to another user";
    return false;
  }
  if ((st.st_mode & 077) != 0) chmod(path.c_str(), 0700);
  return true;
}

std::string LibraryPath() {
  Dl_info info;
  if (dladdr(reinterpret_cast<void*>(&probing_start), &info) != 0 && info.dli_fname != nullptr)
    return info.dli_fname;
  return "";
}

int MemoryThreads() {
  std::string stat = ReadFile("/proc/self/stat");
  size_t p = stat.rfind(')');
  if (p == std::string::npos) return 0;
  std::istringstream in(stat.substr(p + 2));
  std::string field;
  for (int i = 3; in >> field; ++i)
    if (i == 20) return std::atoi(field.c_str());
  return 0;
}

// The best name for a thread: its threading name, else MainThread for the main thread, else
// the OS name.
std::string ThreadName(const std::map<uint64_t, std::string>& names, pid_t pid,
                       uint64_t native_id) {
  auto n = names.find(native_id);
  if (n != names.end()) return n->second;
  if (native_id == static_cast<uint64_t>(pid)) return "MainThread";  // threading imported or not
  if (native_id == 0) return "";
  std::string name = ReadFile("/proc/self/task/" + std::to_string(native_id) + "/comm");
  while (!name.empty() && name.back() == '\n') name.pop_back();
  return name;
}

// One stream: a builder, its ring, and the sealing policy. Used only under Recorder::mu_.
struct StreamWriter {
  std::unique_ptr<RingWriter> ring;
  std::unique_ptr<SegmentBuilder> builder;
  int64_t opened_ns = 0;
  uint64_t dropped = 0;
  bool failed = false;

  // Whether MaybeSeal would seal now.
  bool Due(int64_t now, bool force, int64_t interval) const {
    if (failed || builder->empty()) return false;
    size_t limit = (ring->max_segment_size() - format::kSegmentHeaderSize) * 3 / 4;
    return force || now - opened_ns >= interval || builder->raw_size() >= limit;
  }

  // True when it sealed a segment.
  bool MaybeSeal(int64_t now, bool force, int64_t interval = kSealIntervalNs) {
    if (!Due(now, force, interval)) return false;
    std::string bytes;
    Status st = builder->Seal(Codec::kLz4, ring->next_seq(), &bytes);
    if (st.ok()) st = ring->Append(bytes);
    if (!st.ok()) {
      if (++dropped == 1) Log("a segment was dropped: " + st.message());
    }
    opened_ns = now;
    return st.ok();
  }
};

class Recorder : public PythonSink {
 public:
  static Recorder*& Instance() {
    static Recorder* r = nullptr;  // leaked: threads may run while statics are destroyed
    return r;
  }

  int Start();
  void Shutdown();
  void MarkForkedChild() { forked_child_ = true; }
  int mode() const { return mode_; }
  pid_t pid() const { return pid_; }

  // PythonSink: rows from the PyTorch tracer, once per traced step. Torch rows are queued and
  // encoded by the sampler thread (the training thread only moves a vector); variable rows,
  // rarer, are encoded at once with the GIL released.
  void TorchRows(uint64_t thread, uint64_t step, std::vector<TorchRow>&& rows) override;
  // Seals every stream's open segment now, for a reader that wants the newest data (the
  // control server's /seal). Never needs the GIL. At most one forced seal per
  // kMinForcedSealIntervalNs, so a client asking in a loop cannot fill the rings with tiny
  // segments; returns how many segments it sealed.
  int64_t SealNow();
  void TorchStep(const TorchStepRow& row) override;
  void VariableRows(uint64_t thread, uint64_t step, const std::vector<VariableRow>& rows) override;
  void CollectiveRows(std::vector<CollectiveRow>&& rows) override;
  Place JobIdentity(int64_t rank, int64_t world_size) override;
  void JobMembers(std::string json) override;

 private:
  void SamplerLoop();
  // Applies probing.retention.* to dead processes' data (once, as sampling starts).
  void CollectOldData();
  void SampleStacks(int64_t now_real, int64_t now);
  void SampleMemory(int64_t now);
  void DrainTorch();  // and the queued collective rows
  // Under mu_: once the rank has made no progress (no step, no collective) for
  // probing.hang.seconds, says so once: a probing.hang metric reading and a line on stderr.
  void WatchForHang(int64_t now_real);
  int64_t SealInterval(int64_t now) const {
    return now - started_ns_ < kEarlyPeriodNs ? kEarlySealIntervalNs : kSealIntervalNs;
  }
  // True when it sealed a segment.
  bool SealStacks(int64_t now, bool force);
  // Thread names (see kNameGraceNs).
  void UpdateNames(int64_t now);
  void SettleNames(int64_t now, bool all);
  std::string NameOf(uint64_t id) const;
  uint32_t ThreadId(uint64_t id);
  void AddWaiting(int64_t ts, uint64_t id, uint8_t flags, const ThreadStack& t);
  // The recorder's own threads that hold a Python thread state (hidden from samples).
  bool IsOurs(uint64_t native_id) const {
    return native_id != 0 && ((worker_ && native_id == worker_->native_id()) ||
                              (gil_ && native_id == gil_->native_id()));
  }
  uint32_t CallSite(const ThreadStack& t);
  protocol::InfoReply::StackSamples SamplerCounts() const {
    protocol::InfoReply::StackSamples c;
    c.stored = stored_.load();
    c.dropped_changed_while_read = dropped_.load();
    c.read_twice = retried_.load();
    c.waiting_for_thread_name = waiting_.load();
    return c;
  }
  bool CreateRings(std::string* why);
  void WriteMetadata();

  pid_t pid_ = 0;
  int mode_ = 1;
  std::string dir_;
  format::ProcessInfo process_;
  std::unique_ptr<SafeReader> reader_;
  std::unique_ptr<StackSampler> sampler_;
  std::unique_ptr<PythonWorker> worker_;
  std::unique_ptr<GpuSampler> gpus_;  // gpu_metrics
  std::unique_ptr<GilExecutor> gil_;
  std::unique_ptr<ControlServer> server_;
  std::mutex mu_;
  StreamWriter stacks_;
  StreamWriter memory_;
  StreamWriter torch_;
  StreamWriter variables_;
  StreamWriter metrics_;
  StreamWriter collectives_;
  std::vector<CollectiveRow> pending_collectives_;  // under pending_mu_
  int64_t hang_reported_ns_ = 0;  // the stall last said (its start), so it is said once
  struct PendingTorch {
    uint64_t thread, step;
    std::vector<TorchRow> rows;
  };
  std::mutex pending_mu_;  // guards the three below; held only to move a batch in or out
  std::vector<PendingTorch> pending_torch_;
  std::vector<TorchStepRow> pending_steps_;
  size_t pending_rows_ = 0;
  uint64_t pending_dropped_ = 0;
  int64_t metrics_taken_ns_ = 0;  // the snapshot whose metric readings were written last
  int64_t forced_seal_ns_ = 0;    // when SealNow last sealed
  std::atomic<bool> stopping_{false};
  std::atomic<bool> forked_child_{false};
  // Segment-local id caches, dropped when the builder's generation changes.
  uint64_t generation_ = ~0ull;
  struct FrameId {
    uint32_t id = 0;
    uintptr_t name_ptr = 0, file_ptr = 0;  // of the code object it was made for
    int first_line = 0;
  };
  std::unordered_map<uintptr_t, FrameId> frame_ids_;  // by code address
  std::unordered_map<uint64_t, uint32_t> thread_ids_;
  std::unordered_map<uint64_t, uint32_t> site_ids_;  // hash of (parent, code, line)
  struct LastSite {
    uint64_t generation = ~0ull;
    uint32_t callsite = 0;
  };
  std::unordered_map<uint64_t, LastSite> last_sites_;  // by thread id: its last sample's
  std::map<uint64_t, std::string> names_;  // the interpreter's last answer
  uint64_t names_version_ = 0;
  int64_t names_asked_ns_ = -1;  // when that answer was gathered (CLOCK_MONOTONIC)
  bool threading_loaded_ = false;
  int64_t started_ns_ = 0;
  struct ThreadEntry {
    std::string name;
    bool settled = false;
    int64_t first_seen_ns = 0;
    int64_t last_seen_ns = 0;
  };
  std::unordered_map<uint64_t, ThreadEntry> threads_;  // by OS thread id (pthread id if unknown)
  // Samples of threads whose name is not settled yet, in order, frames innermost first.
  struct FrameText {
    std::string func, file;
    uint32_t first_line;
    uintptr_t name_ptr, file_ptr;  // what it was made from (CodeInfo), to notice reuse
  };
  struct Waiting {
    int64_t ts;
    uint64_t id;
    uint8_t flags;
    std::vector<std::pair<std::shared_ptr<const FrameText>, uint32_t>> frames;  // (frame, line)
  };
  std::vector<Waiting> waiting_samples_;
  int64_t names_requested_ns_ = 0;  // when SettleNames last asked for names again
  size_t waiting_frames_ = 0;
  std::unordered_map<uintptr_t, std::shared_ptr<const FrameText>> texts_;  // by code address
  // Counters (sampler thread writes, anyone reads); stats_* are what the rings were told.
  std::atomic<uint64_t> stored_{0}, dropped_{0}, retried_{0}, waiting_{0};
  uint64_t stats_dropped_ = 0, stats_retried_ = 0;
};

bool Recorder::CreateRings(std::string* why) {
  std::string base = Config::Get().data_dir();
  if (!EnsurePrivateDir(base, why)) return false;
  dir_ = base + "/" + std::to_string(pid_);
  if (!EnsurePrivateDir(dir_, why)) return false;
  // The rings' files together take at most Config::ring_bytes() (probing.buffer_size, capped by
  // probing.max_memory), their headers included; each ring takes its share of the rest.
  constexpr int kRings = 6;
  const uint64_t total = Config::Get().ring_bytes() - kRings * format::kRingHeaderSize;
  auto make = [&](StreamWriter* w, const char* name, Stream stream, uint32_t slot, double share) {
    uint64_t bytes = static_cast<uint64_t>(static_cast<double>(total) * share);
    uint32_t count = static_cast<uint32_t>(std::max<uint64_t>(2, bytes / slot));
    auto ring =
        RingWriter::Create(dir_ + "/" + name, {stream, slot, count, static_cast<uint32_t>(pid_)});
    if (!ring.ok()) {
      *why = ring.status().message();
      return false;
    }
    w->ring = std::make_unique<RingWriter>(std::move(ring).value());
    w->builder = std::make_unique<SegmentBuilder>(stream, static_cast<uint32_t>(pid_));
    w->builder->SetProcess(process_);
    w->opened_ns = MonotonicNs();
    return true;
  };
  // Shares of `total` (kRings of them).
  return make(&stacks_, "stacks.ring", Stream::kStacks, kStackSlot, 0.65) &&
         make(&memory_, "memory.ring", Stream::kMemory, kMemorySlot, 0.10) &&
         make(&torch_, "torch.ring", Stream::kTorch, kTorchSlot, 0.15) &&
         make(&variables_, "variables.ring", Stream::kVariables, kMemorySlot, 0.05) &&
         make(&metrics_, "metrics.ring", Stream::kMetrics, kMemorySlot, 0.02) &&
         make(&collectives_, "collectives.ring", Stream::kCollectives, kTorchSlot, 0.03);
}

void Recorder::WriteMetadata() {
  nlohmann::json j;
  j["pid"] = pid_;
  j["ppid"] = getppid();
  j["cmdline"] = CommandLine();
  j["python_version"] = process_.python_version;
  j["start_time"] = static_cast<double>(process_.start_ts) / 1e9;
  j["recorder_started"] = static_cast<double>(RealtimeNs()) / 1e9;
  j["socket"] = server_ ? server_->socket_name() : "@" + protocol::SocketName(pid_);
  j["host"] = process_.host;
  j["rank"] = process_.rank;
  j["run_id"] = process_.run_id;
  j["world_size"] = process_.world_size;
  j["local_rank"] = process_.local_rank;
  j["node"] = process_.node;
  j["role"] = process_.role;
  j["tcp_port"] = server_ ? server_->tcp_port() : 0;
  j["recorder_version"] = "0.1.0";
  j["library"] = LibraryPath();
  j["rings"] = {"stacks.ring",    "memory.ring",  "torch.ring",
                "variables.ring", "metrics.ring", "collectives.ring"};
  std::string tmp = dir_ + "/process.json.tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
  }
  chmod(tmp.c_str(), 0600);
  rename(tmp.c_str(), (dir_ + "/process.json").c_str());
}

int Recorder::Start() {
  pid_ = getpid();
  started_ns_ = MonotonicNs();
  const char* mode = std::getenv("PROBING");
  mode_ = (mode != nullptr && std::strcmp(mode, "2") == 0) ? 2 : 1;
  for (const std::string& e : Config::Get().LoadEnvironment()) Log(e);

  std::string version = Py_GetVersion();
  process_.pid = static_cast<uint32_t>(pid_);
  process_.start_ts = procfs::ProcessStartNs().value_or(RealtimeNs());
  process_.python_version = version.substr(0, version.find(' '));
  process_.cmdline = Join(CommandLine());
  char host[256] = {0};
  gethostname(host, sizeof host - 1);
  process_.host = host;
  // Its place in a job, from torchrun's or SLURM's environment (torch.distributed may tell
  // later: JobIdentity).
  process_.rank = EnvInt({"RANK", "SLURM_PROCID"});
  process_.world_size = EnvInt({"WORLD_SIZE", "SLURM_NTASKS"});
  process_.local_rank = EnvInt({"LOCAL_RANK", "SLURM_LOCALID"});
  // torchrun's run id, unless it is its default "none" (then every job on a host would share
  // it): the job's store address names it then (cluster.cc's LocalRanks does the same).
  process_.run_id = EnvText({"TORCHELASTIC_RUN_ID", "SLURM_JOB_ID"});
  if (process_.run_id == "none") process_.run_id.clear();
  if (process_.run_id.empty() && process_.rank >= 0) {
    const std::string addr = EnvText({"MASTER_ADDR"}), port = EnvText({"MASTER_PORT"});
    if (!addr.empty() && !port.empty()) process_.run_id = addr + ":" + port;
  }
  process_.role = IsLauncher(CommandLine()) ? "launcher"
                  : StartedInForkChild()    ? "child"
                  : process_.rank >= 0      ? "rank"
                                            : "process";
  if (!process_.run_id.empty()) process_.node = EnvText({"SLURMD_NODENAME"});
  if (!process_.run_id.empty() && process_.node.empty()) process_.node = process_.host;

  std::string why;
  if (!CreateRings(&why)) {
    Log("recorder not started: " + why);
    return -1;
  }
  WriteMetadata();

  reader_ = std::make_unique<SafeReader>();
  if (!reader_->Available()) Log("stack sampling is off: " + reader_->why_unavailable());

  // Our threads must not receive the process's signals (SIGINT belongs to Python's main thread).
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old);
  // A thread the system cannot give turns that part off, with a line on stderr; the process
  // goes on either way.
  worker_ = std::make_unique<PythonWorker>(LibraryPath(), this);
  std::string thread_why;
  if (!worker_->Start(&thread_why))
    Log(thread_why + "; thread names, Python memory figures and PyTorch tracing are off");
  gpus_ = std::make_unique<GpuSampler>();
  gpus_->Start();
  gil_ = std::make_unique<GilExecutor>();
  if (!gil_->Start(&thread_why)) Log(thread_why + "; eval, locals and custom tables are off");
  ServerContext ctx;
  ctx.pid = pid_;
  ctx.process = process_;
  ctx.started_ns = MonotonicNs();
  ctx.data_dir = dir_;
  ctx.reader = reader_->Available() ? reader_.get() : nullptr;
  ctx.gil = gil_.get();
  ctx.known_names = [this] { return worker_->Snapshot().thread_names; };
  ctx.fallback_name = [this](uint64_t id) { return ThreadName({}, pid_, id); };
  ctx.is_ours = [this](uint64_t id) { return IsOurs(id); };
  ctx.seal = [this] { return SealNow(); };
  ctx.ours_busy = [this] { return worker_->busy(); };
  ctx.sampler_counts = [this] { return SamplerCounts(); };
  ctx.notes = [this] {
    std::vector<std::string> notes;
    if (std::string gpu = gpus_->note(); !gpu.empty()) notes.push_back("gpu_metrics: " + gpu);
    if (std::string a = worker_->AllocationsNote(); !a.empty()) notes.push_back(a);
    return notes;
  };
  server_ = std::make_unique<ControlServer>(std::move(ctx));
  std::string server_why;
  const bool serving = server_->Start(&server_why);
  if (!serving) Log("control server off: " + server_why);
  {
    std::lock_guard<std::mutex> lock(mu_);
    WriteMetadata();  // again, with the TCP port it listens on
  }
  try {
    std::thread([this] { SamplerLoop(); }).detach();
  } catch (const std::exception& e) {
    Log(std::string("no thread for the sampler (") + e.what() + "): nothing is recorded" +
        (serving ? "; the control server still answers" : ""));
  }
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  if (Config::Get().banner())
    Log("enabled for process " + std::to_string(pid_) + " (probing -t " + std::to_string(pid_) +
        " backtrace, query, ...; PROBING_BANNER=off hides this line)");
  if (Config::Get().banner() && server_->tcp_port() != 0) {
    const std::string port = std::to_string(server_->tcp_port());
    Log("server listening on 0.0.0.0:" + port +
        (server_->token_file().empty()
             ? std::string(" (clients give its PROBING_AUTH_TOKEN)")
             : "; its token, made now, is in " + server_->token_file() +
                   " (readable by this user only): probing on this host finds it by itself "
                   "(probing -t 127.0.0.1:" + port +
                   " ...), other users and hosts give it with --token or "
                   "PROBING_AUTH_TOKEN"));
  }
  return 0;
}

void Recorder::Shutdown() {
  if (forked_child_.load() || getpid() != pid_) return;  // a child never writes our rings
  if (worker_) worker_->Stop(1000);
  if (gpus_) gpus_->Stop();
  if (gil_) gil_->Stop();
  std::lock_guard<std::mutex> lock(mu_);
  if (stopping_.exchange(true)) return;
  // The token dies with the process: nobody may learn it from the rings it leaves.
  if (server_ && !server_->token_file().empty()) unlink(server_->token_file().c_str());
  DrainTorch();
  int64_t now = MonotonicNs();
  if (stacks_.builder) SettleNames(now, true);  // what waited for a name is written as it is
  SealStacks(now, true);
  memory_.MaybeSeal(now, true);
  torch_.MaybeSeal(now, true);
  variables_.MaybeSeal(now, true);
  metrics_.MaybeSeal(now, true);
  collectives_.MaybeSeal(now, true);
}

PythonSink::Place Recorder::JobIdentity(int64_t rank, int64_t world_size) {
  std::lock_guard<std::mutex> lock(mu_);
  format::ProcessInfo p = process_;
  p.rank = static_cast<int32_t>(rank);
  p.world_size = static_cast<int32_t>(world_size);
  if (p.role == "process") p.role = "rank";
  if (p.run_id.empty()) {  // init_process_group without torchrun: the store names the job
    const std::string addr = EnvText({"MASTER_ADDR"}), port = EnvText({"MASTER_PORT"});
    if (!addr.empty() && !port.empty()) p.run_id = addr + ":" + port;
  }
  if (p.node.empty()) p.node = p.host;
  if (p.rank != process_.rank || p.world_size != process_.world_size ||
      p.run_id != process_.run_id || p.role != process_.role) {
    process_ = p;
    // Segments sealed from now on say who wrote them; the open ones start again with it.
    for (StreamWriter* w : {&stacks_, &memory_, &torch_, &variables_, &metrics_, &collectives_})
      if (w->builder) w->builder->SetProcess(process_);
    if (server_) server_->SetProcess(process_);
    WriteMetadata();
  }
  Place out;
  out.run_id = process_.run_id;
  out.node = process_.node;
  out.host = process_.host;
  out.local_rank = process_.local_rank;
  out.pid = pid_;
  out.tcp_port = server_ ? server_->tcp_port() : 0;
  return out;
}

void Recorder::JobMembers(std::string json) {
  if (server_) server_->SetMembers(std::move(json));
}

int64_t Recorder::SealNow() {
  std::lock_guard<std::mutex> lock(mu_);
  if (stopping_.load() || forked_child_.load()) return 0;
  const int64_t now = MonotonicNs();
  if (forced_seal_ns_ != 0 && now - forced_seal_ns_ < kMinForcedSealIntervalNs) return 0;
  forced_seal_ns_ = now;
  DrainTorch();
  int64_t sealed = SealStacks(now, true) ? 1 : 0;
  for (StreamWriter* w : {&memory_, &torch_, &variables_, &metrics_, &collectives_})
    sealed += w->MaybeSeal(now, true) ? 1 : 0;
  return sealed;
}

std::string Recorder::NameOf(uint64_t id) const {
  auto it = threads_.find(id);
  if (it != threads_.end() && it->second.settled) return it->second.name;
  return ThreadName(names_, pid_, id);
}

// At most this many torch rows wait for the sampler thread; more (it is stalled) are dropped.
constexpr size_t kMaxPendingTorchRows = 1 << 20;

void Recorder::TorchRows(uint64_t thread, uint64_t step, std::vector<TorchRow>&& rows) {
  if (stopping_.load() || forked_child_.load()) return;
  std::lock_guard<std::mutex> lock(pending_mu_);
  if (pending_rows_ + rows.size() > kMaxPendingTorchRows) {
    if (++pending_dropped_ == 1) Log("torch_trace rows dropped: the recorder thread is behind");
    return;
  }
  pending_rows_ += rows.size();
  pending_torch_.push_back({thread, step, std::move(rows)});
}

void Recorder::TorchStep(const TorchStepRow& row) {
  if (stopping_.load() || forked_child_.load()) return;
  std::lock_guard<std::mutex> lock(pending_mu_);
  if (pending_steps_.size() >= kMaxPendingTorchRows) {
    if (++pending_dropped_ == 1) Log("torch_steps rows dropped: the recorder thread is behind");
    return;
  }
  pending_steps_.push_back(row);
}

void Recorder::CollectiveRows(std::vector<CollectiveRow>&& rows) {
  if (stopping_.load() || forked_child_.load()) return;
  std::lock_guard<std::mutex> lock(pending_mu_);
  if (pending_collectives_.size() + rows.size() > kMaxPendingTorchRows) {
    if (++pending_dropped_ == 1) Log("collective rows dropped: the recorder thread is behind");
    return;
  }
  if (pending_collectives_.empty()) {
    pending_collectives_ = std::move(rows);
  } else {
    for (auto& r : rows) pending_collectives_.push_back(std::move(r));
  }
}

void Recorder::WatchForHang(int64_t now_real) {
  const Progress p = GetProgress();
  int64_t last = p.step_changed_ns;
  for (const auto& [name, g] : p.groups) last = std::max(last, g.changed_ns);
  if (last == 0 || metrics_.failed) return;  // no training seen: nothing to hang
  const int64_t stalled = now_real - last;
  if (stalled < int64_t{Config::Get().hang_seconds()} * 1'000'000'000 || hang_reported_ns_ == last)
    return;
  hang_reported_ns_ = last;
  SegmentBuilder& b = *metrics_.builder;
  b.AddMetric(now_real, b.InternString("probing.hang"), static_cast<double>(stalled) / 1e9);
  std::string where = "step " + std::to_string(p.step);
  if (p.current)
    where += ", in " + p.current->op + " #" + std::to_string(p.current->seq) + " of group " +
             p.current->group;
  Log("no progress for " + std::to_string(stalled / 1'000'000'000) + " s (" + where +
      "): this rank looks stuck; probing cluster -t " + std::to_string(pid_) + " hang says why");
}

// Encodes the queued torch and collective rows. Under mu_.
void Recorder::DrainTorch() {
  std::vector<PendingTorch> batches;
  std::vector<CollectiveRow> collectives;
  std::vector<TorchStepRow> steps;
  {
    std::lock_guard<std::mutex> lock(pending_mu_);
    batches.swap(pending_torch_);
    collectives.swap(pending_collectives_);
    steps.swap(pending_steps_);
    pending_rows_ = 0;
  }
  if (!collectives_.failed && !collectives.empty()) {
    for (const CollectiveRow& r : collectives) {
      SegmentBuilder& cb = *collectives_.builder;  // a new one after each seal
      format::CollectiveEvent e;
      e.ts = r.ts_ns;
      e.end_ts = r.end_ns;
      e.thread =
          r.thread != 0 ? cb.InternThread(r.thread, cb.InternString(NameOf(r.thread))) : 0;
      e.group = cb.InternString(r.group);
      e.seq = r.seq;
      e.op = r.op.empty() ? 0 : cb.InternString(r.op);
      e.bytes = r.bytes;
      e.dtype = r.dtype.empty() ? 0 : cb.InternString(r.dtype);
      e.numel = r.numel;
      e.peer = r.peer;
      e.step = r.step;
      e.async_op = r.async_op;
      e.counted = r.counted;
      collectives_.builder->AddCollective(e);
      collectives_.MaybeSeal(MonotonicNs(), false);  // full: seals before the slot overflows
    }
  }
  if (torch_.failed) return;
  for (const TorchStepRow& r : steps) {
    SegmentBuilder& sb = *torch_.builder;  // a new one after each seal
    format::TorchStepEvent e;
    e.ts_ns = r.start_ns;
    e.duration_ns = r.duration_ns;
    e.thread = sb.InternThread(r.thread, sb.InternString(NameOf(r.thread)));
    e.step = r.step;
    e.decision = r.decision;
    e.cost_ns = r.cost_ns;
    e.budget_ppm = r.budget_ppm;
    sb.AddTorchStep(e);
    torch_.MaybeSeal(MonotonicNs(), false);  // full: seals before the slot overflows
  }
  SegmentBuilder& b = *torch_.builder;
  for (const PendingTorch& p : batches) {
    const uint32_t tid = b.InternThread(p.thread, b.InternString(NameOf(p.thread)));
    for (const TorchRow& r : p.rows) {
      format::TorchEvent e;
      e.ts = r.start_ns;
      e.thread = tid;
      e.step = p.step;
      e.seq = r.seq;
      e.module = b.InternString(r.module);
      e.stage = static_cast<format::TorchStage>(r.stage);
      e.duration_ns = r.duration_ns;
      e.allocated = r.allocated;
      e.max_allocated = r.max_allocated;
      e.cached = r.cached;
      b.AddTorch(e);
    }
    torch_.MaybeSeal(MonotonicNs(), false);  // full: seals (a new builder generation)
  }
}

void Recorder::VariableRows(uint64_t thread, uint64_t step, const std::vector<VariableRow>& rows) {
  std::lock_guard<std::mutex> lock(mu_);
  if (stopping_.load() || forked_child_.load() || variables_.failed) return;
  SegmentBuilder& b = *variables_.builder;
  const uint32_t tid = b.InternThread(thread, b.InternString(NameOf(thread)));
  for (const VariableRow& r : rows)
    b.AddVariable(r.ts_ns, tid, step, b.InternString(r.func), b.InternString(r.name), r.value);
  variables_.MaybeSeal(MonotonicNs(), false);
}

uint32_t Recorder::ThreadId(uint64_t id) {
  auto it = thread_ids_.find(id);
  if (it != thread_ids_.end()) return it->second;
  SegmentBuilder& b = *stacks_.builder;
  uint32_t tid = b.InternThread(id, b.InternString(NameOf(id)));
  thread_ids_.emplace(id, tid);
  return tid;
}

// Keeps a sample of a thread whose name is not settled; its frames by value (code objects may go).
void Recorder::AddWaiting(int64_t ts, uint64_t id, uint8_t flags, const ThreadStack& t) {
  Waiting w{ts, id, flags, {}};
  w.frames.reserve(t.frames.size());
  for (const FrameRef& f : t.frames) {
    std::shared_ptr<const FrameText>& text = texts_[f.code_addr];
    if (!text || text->name_ptr != f.code->name_ptr || text->file_ptr != f.code->file_ptr ||
        text->first_line != static_cast<uint32_t>(std::max(0, f.code->first_line)))
      text = std::make_shared<const FrameText>(
          FrameText{f.code->name, f.code->file, static_cast<uint32_t>(std::max(0, f.code->first_line)),
                    f.code->name_ptr, f.code->file_ptr});
    w.frames.emplace_back(text, static_cast<uint32_t>(std::max(0, f.line)));
  }
  waiting_frames_ += w.frames.size();
  waiting_samples_.push_back(std::move(w));
  ++waiting_;
}

// Takes the interpreter's latest answer about thread names, when there is a new one. A settled
// thread whose threading name changed since (the program renamed it) takes the new name.
void Recorder::UpdateNames(int64_t now) {
  if (worker_->version() == names_version_) return;
  names_version_ = worker_->version();
  PythonStats s = worker_->Snapshot();
  names_ = std::move(s.thread_names);
  names_asked_ns_ = s.started_ns;
  threading_loaded_ = s.threading_loaded;
  for (auto& [id, e] : threads_) {
    auto n = names_.find(id);
    if (e.settled && n != names_.end() && n->second != e.name) {
      e.name = n->second;
      thread_ids_.erase(id);
    }
  }
  (void)now;
}

// Settles the names that can be settled (all of them when `all`: at exit, or too many samples
// waiting), and writes the samples that waited for them.
void Recorder::SettleNames(int64_t now, bool all) {
  bool any = false;
  for (auto& [id, e] : threads_) {
    if (e.settled) continue;
    auto n = names_.find(id);
    const bool asked_since = names_asked_ns_ >= e.first_seen_ns;
    if (asked_since && n != names_.end()) {
      e.name = n->second;
    } else if (all || now - e.first_seen_ns >= kNameDeadlineNs ||
               (asked_since && (!threading_loaded_ || names_asked_ns_ >= e.first_seen_ns + kNameGraceNs))) {
      e.name = ThreadName({}, pid_, id);  // MainThread, or the OS name
    } else {
      // Not named by the last answer (a thread still registering with threading, or a forked
      // child's main thread before threading's own fork hook ran): once the grace has passed,
      // ask again rather than wait for the next full gathering, a second later.
      if (now - e.first_seen_ns >= kNameGraceNs && now - names_requested_ns_ >= kNameGraceNs / 2) {
        names_requested_ns_ = now;
        worker_->RequestSoon();
      }
      continue;
    }
    e.settled = true;
    thread_ids_.erase(id);
    any = true;
  }
  if (!any || waiting_samples_.empty() || stacks_.failed) return;
  SegmentBuilder& b = *stacks_.builder;
  std::vector<Waiting> still;
  for (Waiting& w : waiting_samples_) {
    auto it = threads_.find(w.id);
    if (it != threads_.end() && !it->second.settled) {
      still.push_back(std::move(w));
      continue;
    }
    uint32_t parent = 0;
    for (auto f = w.frames.rbegin(); f != w.frames.rend(); ++f) {
      const FrameText& t = *f->first;
      uint32_t frame = b.InternFrame(b.InternString(t.func), b.InternString(t.file), t.first_line);
      parent = b.InternCallSite(parent, frame, f->second);
    }
    b.AddStackSample(w.ts, ThreadId(w.id), parent, w.flags);
    waiting_frames_ -= w.frames.size();
    ++stored_;
    --waiting_;
  }
  waiting_samples_.swap(still);
  if (waiting_samples_.empty()) texts_.clear();
}

uint32_t Recorder::CallSite(const ThreadStack& t) {
  SegmentBuilder& b = *stacks_.builder;
  uint32_t parent = 0;
  for (auto it = t.frames.rbegin(); it != t.frames.rend(); ++it) {
    // By code address, checked against the code object's fields: a code object freed and
    // another made at its address (within one segment) is a new frame.
    FrameId& f = frame_ids_[it->code_addr];
    if (f.name_ptr != it->code->name_ptr || f.file_ptr != it->code->file_ptr ||
        f.first_line != it->code->first_line || f.id == 0) {
      f = {b.InternFrame(b.InternString(it->code->name), b.InternString(it->code->file),
                         static_cast<uint32_t>(std::max(0, it->code->first_line))),
           it->code->name_ptr, it->code->file_ptr, it->code->first_line};
    }
    const uint32_t frame = f.id;
    uint64_t key = (uint64_t{parent} * 0x9E3779B97F4A7C15ull) ^ (uint64_t{frame} << 24) ^
                   static_cast<uint32_t>(it->line);
    auto s = site_ids_.find(key);
    if (s != site_ids_.end()) {
      parent = s->second;
      continue;
    }
    uint32_t site = b.InternCallSite(parent, frame, static_cast<uint32_t>(std::max(0, it->line)));
    site_ids_.emplace(key, site);
    parent = site;
  }
  return parent;
}

void Recorder::SampleStacks(int64_t now_real, int64_t now) {
  SegmentBuilder& b = *stacks_.builder;
  if (b.generation() != generation_) {
    generation_ = b.generation();
    frame_ids_.clear();
    thread_ids_.clear();
    site_ids_.clear();
  }
  SampleOptions options;
  options.attempts = 2;  // a stack that changed while read is read once more, then dropped
  options.fault_guard = Config::Get().fault_guard();
  bool asked = false;
  sampler_->SampleAll(
      [&](const ThreadStack& t) {
        if (IsOurs(t.native_id)) return;  // the recorder's own Python-state-holding threads
        if (!t.consistent) {
          ++dropped_;  // never stored torn; counted in `info` and in the rings (stats record)
          return;
        }
        if (t.attempts > 1) ++retried_;
        const uint64_t id = t.native_id != 0 ? t.native_id : t.pthread_id;
        auto [it, fresh] = threads_.try_emplace(id);
        if (fresh) {
          it->second.first_seen_ns = now;
          if (!asked) worker_->RequestSoon();  // ask the interpreter for its name now
          asked = true;
        }
        it->second.last_seen_ns = now;
        uint8_t flags = (t.holds_gil ? format::kSampleHoldsGil : 0) |
                        (t.truncated ? format::kSampleTruncated : 0);
        if (!it->second.settled) {
          AddWaiting(now_real, id, flags, t);
          return;
        }
        // A stack read the same as last time has the same call site (in this segment).
        LastSite& last = last_sites_[id];
        if (!t.same_as_last || last.generation != generation_) last = {generation_, CallSite(t)};
        b.AddStackSample(now_real, ThreadId(id), last.callsite, flags);
        ++stored_;
      },
      options);
  SettleNames(now, waiting_frames_ > kMaxPendingFrames);
  for (auto it = threads_.begin(); it != threads_.end();) {
    if (it->second.settled && now - it->second.last_seen_ns > kForgetThreadNs) {
      thread_ids_.erase(it->first);
      last_sites_.erase(it->first);
      it = threads_.erase(it);
    } else {
      ++it;
    }
  }
}

// Seals the stacks ring's segment when due, with a record of what the sampler could not store
// since the last one (format: sampler stats), so that a recording says it too.
bool Recorder::SealStacks(int64_t now, bool force) {
  const uint64_t dropped = dropped_.load(), retried = retried_.load();
  const bool moved = dropped != stats_dropped_ || retried != stats_retried_;
  const int64_t interval = SealInterval(now);
  // Counts that moved are sealed in time even when no sample was stored meanwhile.
  if (!stacks_.Due(now, force, interval) &&
      !(moved && !stacks_.failed && (force || now - stacks_.opened_ns >= interval)))
    return false;
  if (moved) {
    stacks_.builder->AddSamplerStats({dropped - stats_dropped_, retried - stats_retried_});
    stats_dropped_ = dropped;
    stats_retried_ = retried;
  }
  return stacks_.MaybeSeal(now, force, interval);
}

void Recorder::SampleMemory(int64_t now_real) {
  format::MemoryEvent e;
  e.ts = now_real;
  std::istringstream statm(ReadFile("/proc/self/statm"));
  uint64_t size_pages = 0, rss_pages = 0;
  statm >> size_pages >> rss_pages;
  uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  e.vms = size_pages * page;
  e.rss = rss_pages * page;
  e.threads = static_cast<uint64_t>(MemoryThreads());
  PythonStats s = worker_->Snapshot();
  if (s.taken_ns != 0 && MonotonicNs() - s.taken_ns < 3 * kSealIntervalNs) {
    e.has_python_stats = true;
    e.py_blocks = s.py_blocks;
    for (int i = 0; i < 3; ++i) e.gc_count[i] = s.gc_count[i];
    e.gc_collections = s.gc_collections;
    e.cuda_allocated = s.cuda_allocated;
    e.cuda_reserved = s.cuda_reserved;
  }
  memory_.builder->AddMemory(e);
  SegmentBuilder& b = *memory_.builder;
  for (const format::GpuEvent& g : gpus_->Take()) b.AddGpu(g);
  for (const AllocationSite& a : worker_->TakeAllocations()) {
    format::AllocationEvent r;
    r.ts = a.ts;
    r.func = b.InternString(a.function);
    r.file = b.InternString(a.file);
    r.line = a.line;
    r.bytes = a.bytes;
    r.count = a.count;
    b.AddAllocation(r);
  }
  // @probing.metric readings: each snapshot's once (a snapshot may be reused while the GIL is
  // not to be had; its readings are not repeated).
  if (s.taken_ns != 0 && s.taken_ns != metrics_taken_ns_) {
    metrics_taken_ns_ = s.taken_ns;
    for (const MetricReading& m : s.metrics)
      metrics_.builder->AddMetric(m.ts, metrics_.builder->InternString(m.name), m.value);
  }
}

void Recorder::CollectOldData() {
  try {
    std::string base = Config::Get().data_dir();
    live::Collected c = live::ApplyRetention(base, Config::Get().retention(), RealtimeNs());
    if (!c.failed.empty())
      Log("old data not removed (probing.retention.*): " + c.failed.front() +
          (c.failed.size() > 1 ? " (and " + std::to_string(c.failed.size() - 1) + " more)" : ""));
  } catch (const std::exception& e) {
    Log(std::string("old data not removed (probing.retention.*): ") + e.what());
  }
}

void Recorder::SamplerLoop() {
  pthread_setname_np(pthread_self(), "probing-sampler");
  if (reader_->Available())
    sampler_ = std::make_unique<StackSampler>(*ProbingGetPyOffsets(), *reader_);
  CollectOldData();
  int64_t next = MonotonicNs();
  int64_t next_memory = next;
  int64_t next_touch = next;
  while (!stopping_.load() && !forked_child_.load()) {
    int hz = Config::Get().sampler_hz();
    next += 1'000'000'000 / hz;
    int64_t now = MonotonicNs();
    if (next < now) next = now;  // fell behind (suspended, overloaded): skip, never burst
    timespec ts{static_cast<time_t>(next / 1'000'000'000), static_cast<long>(next % 1'000'000'000)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) == EINTR) {
    }
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_.load() || forked_child_.load()) break;
    now = MonotonicNs();
    int64_t real = RealtimeNs();
    UpdateNames(now);  // new thread names from the interpreter
    if (sampler_ && !stacks_.failed && Config::Get().sampler_enabled()) {
      SampleStacks(real, now);
    } else {
      SettleNames(now, false);
    }
    if (now >= next_memory) {
      SampleMemory(real);
      next_memory = now + kSealIntervalNs;
    }
    if (now >= next_touch) {
      // Writes through mmap do not move a file's time: this says when the data last changed,
      // which retention measures a dead process's age by (live/recorders.h).
      utimensat(AT_FDCWD, dir_.c_str(), nullptr, 0);
      next_touch = now + kTouchIntervalNs;
    }
    DrainTorch();
    ObserveStep(GetTorchState().step, real);
    WatchForHang(real);
    const int64_t interval = SealInterval(now);
    SealStacks(now, false);
    memory_.MaybeSeal(now, false, interval);
    torch_.MaybeSeal(now, false, interval);
    variables_.MaybeSeal(now, false, interval);
    metrics_.MaybeSeal(now, false, interval);
    collectives_.MaybeSeal(now, false, interval);
  }
}

void AtForkChild() {
  if (Recorder* r = Recorder::Instance()) r->MarkForkedChild();
}

std::mutex& StartMutex() {
  static auto* m = new std::mutex();
  return *m;
}

}  // namespace
}  // namespace probing::recorder

using probing::recorder::Log;
using probing::recorder::Recorder;

// The entry points the host (the start-up hook, the injector, ctypes, atexit, fork hooks)
// calls: nothing thrown inside ever leaves them (it would end the host process); a failure is
// a line on stderr and an error code.

namespace probing::recorder {
namespace {

template <typename F>
auto Guard(const char* what, decltype(std::declval<F>()()) failed, F&& fn) noexcept {
  try {
    return fn();
  } catch (const std::exception& e) {
    try {
      Log(std::string(what) + " failed: " + e.what());
    } catch (...) {
    }
  } catch (...) {
    try {
      Log(std::string(what) + " failed");
    } catch (...) {
    }
  }
  return failed;
}

int Start() {
  std::lock_guard<std::mutex> lock(StartMutex());
  Recorder*& r = Recorder::Instance();
  if (r != nullptr) {
    Log("recorder already running in process " + std::to_string(getpid()));
    return 1;
  }
  static bool atfork_registered = false;
  if (!atfork_registered) {
    pthread_atfork(nullptr, nullptr, AtForkChild);
    atfork_registered = true;
  }
  // Should Start throw (Guard catches it), its threads may already use it: it is then never
  // freed, and never used again.
  auto* rec = new Recorder();
  const int rc = rec->Start();
  if (rc != 0) {  // nothing started yet (its rings could not be made)
    delete rec;
    return rc;
  }
  r = rec;
  return 0;
}

}  // namespace
}  // namespace probing::recorder

extern "C" __attribute__((visibility("default"))) int probing_start(void) {
  return probing::recorder::Guard("starting the recorder", -1,
                                  [] { return probing::recorder::Start(); });
}

// For the injector: the thread it stopped returns at once, and the recorder starts in a thread
// of its own (rings, threads, control server: about 10 ms), with every signal blocked like the
// recorder's other threads. 1: already running (or starting); 0: starting; -1: no thread.
extern "C" __attribute__((visibility("default"))) int probing_start_detached(void) {
  static std::atomic<bool> starting{false};
  if (Recorder::Instance() != nullptr || starting.exchange(true)) return 1;
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old);
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_t thread;
  int rc = pthread_create(
      &thread, &attr,
      [](void*) -> void* {
        pthread_setname_np(pthread_self(), "probing-start");
        probing_start();
        return nullptr;
      },
      nullptr);
  pthread_attr_destroy(&attr);
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  if (rc != 0) {
    starting = false;
    return -1;
  }
  return 0;
}

extern "C" __attribute__((visibility("default"))) int probing_config_set(const char* key,
                                                                         const char* value,
                                                                         char* error,
                                                                         size_t error_size) {
  if (key == nullptr || value == nullptr) return -1;
  return probing::recorder::Guard("a setting", -1, [&] {
    std::string err = probing::recorder::Config::Get().Set(key, value);
    if (err.empty()) return 0;
    if (error != nullptr && error_size > 0) snprintf(error, error_size, "%s", err.c_str());
    return -1;
  });
}

// With the GIL held (ctypes.PyDLL): the Python side at once, so that `import torch` in the
// program's first lines is traced. The recorder's own Python thread does it otherwise.
extern "C" __attribute__((visibility("default"))) int probing_python_setup(void) {
  return probing::recorder::Guard("setting up the Python side", -1, [] {
    Recorder* r = Recorder::Instance();
    if (r == nullptr || !Py_IsInitialized()) return -1;
    std::string why;
    if (!probing::recorder::InstallPython(r, &why)) {
      Log(why);
      return -1;
    }
    return 0;
  });
}

extern "C" __attribute__((visibility("default"))) void probing_shutdown(void) {
  probing::recorder::Guard("sealing the rings at exit", 0, [] {
    if (Recorder* r = Recorder::Instance()) r->Shutdown();
    return 0;
  });
}

extern "C" __attribute__((visibility("default"))) void probing_after_fork_child(void) {
  probing::recorder::Guard("starting the forked child's recorder", 0, [] {
    Recorder*& r = Recorder::Instance();
    if (r == nullptr || r->pid() == getpid()) return 0;  // no recorder, or this process's
    int mode = r->mode();
    // The parent's recorder object stays behind, unused: its threads did not survive the fork.
    r = nullptr;
    probing::recorder::StartedInForkChild() = true;
    if (mode == 2) probing_start();
    return 0;
  });
}
