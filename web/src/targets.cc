#include "targets.h"

#include <algorithm>
#include <set>

#include "probing/base/clock.h"
#include "probing/format/segment.h"
#include "probing/live/control_client.h"
#include "probing/live/recorders.h"

namespace probing::web {
namespace {

bool AllDigits(const std::string& s) {
  return !s.empty() && s.size() <= 9 && s.find_first_not_of("0123456789") == std::string::npos;
}

// A target the dashboard has not been asked about for this long is closed (its decoded
// segments freed); the next request opens it again.
constexpr int64_t kIdleNs = 120'000'000'000;
// How long a job's members, once found, are used before they are looked for again.
constexpr int64_t kJobNs = 5'000'000'000;

}  // namespace

// ---- Target ------------------------------------------------------------------------------

Result<std::unique_ptr<live::Session>> Target::Open() const {
  return live::Session::Open(spec_, options_);
}

int64_t Target::last_used_ns() const {
  std::lock_guard<std::mutex> lock(mu_);
  return used_ns_;
}

Status Target::Refresh() {
  if (!session_) {
    PROBING_ASSIGN_OR_RETURN(session_, Open());
  }
  PROBING_ASSIGN_OR_RETURN(live::SegmentSource * source, session_->Segments());
  // Whether more may come, asked before fetching: a target that died since the last look
  // gets one more fetch, which finds all it left.
  const bool live = source->live();
  if (loaded_ && !live_) return Status::Ok();
  if (live) PROBING_RETURN_IF_ERROR(source->Seal());
  live::FetchOutcome got;
  PROBING_RETURN_IF_ERROR(source->Fetch({}, &cursors_, &got));
  for (live::RawSegment& raw : got.segments) {
    auto seg = format::DecodeSegment(raw.bytes);
    if (!seg.ok()) {
      ++corrupt_;
      continue;
    }
    segments_[{raw.origin, raw.seq}] =
        std::make_shared<const format::Segment>(std::move(seg).value());
  }
  for (const auto& [ring, n] : got.lost) lost_ += n;
  // Drop what the rings no longer hold: the dashboard shows what a query would see.
  for (const auto& [origin, oldest] : got.oldest) {
    auto from = segments_.lower_bound({origin, 0});
    auto to = segments_.lower_bound({origin, oldest});
    segments_.erase(from, to);
  }
  loaded_ = true;
  live_ = live;
  return Status::Ok();
}

Result<Snapshot> Target::Data(double max_age_s) {
  std::lock_guard<std::mutex> lock(mu_);
  const int64_t now = MonotonicNs();
  used_ns_ = now;
  if (!loaded_ || (live_ && now - fetched_ns_ > static_cast<int64_t>(max_age_s * 1e9))) {
    Status st = Refresh();
    if (!st.ok()) {
      // A session that failed (a target gone, a token refused) is opened again next time.
      session_.reset();
      cursors_.clear();
      segments_.clear();
      loaded_ = false;
      return st;
    }
    fetched_ns_ = MonotonicNs();
  }
  Snapshot snap;
  snap.live = live_;
  snap.corrupt = corrupt_;
  snap.lost = lost_;
  snap.keep.reserve(segments_.size());
  snap.segments.reserve(segments_.size());
  for (const auto& [key, seg] : segments_) {
    snap.keep.push_back(seg);
    snap.segments.push_back(seg.get());
  }
  return snap;
}

// ---- Targets -----------------------------------------------------------------------------

Targets::Targets(std::vector<std::string> named, live::SessionOptions options)
    : options_(std::move(options)) {
  if (options_.data_dir.empty()) options_.data_dir = live::DefaultDataDir();
  for (auto& spec : named) (AllDigits(spec) ? pids_ : other_).push_back(std::move(spec));
}

Status Targets::Check(const std::string& spec, const live::SessionOptions& options) {
  PROBING_ASSIGN_OR_RETURN(auto session, live::Session::Open(spec, options));
  switch (session->kind()) {
    case live::TargetKind::kRecording:
    case live::TargetKind::kRingDirectory: {
      // Opening the data says at once whether it is a trace at all.
      PROBING_ASSIGN_OR_RETURN(live::SegmentSource * source, session->Segments());
      (void)source;
      return Status::Ok();
    }
    case live::TargetKind::kProcess:
    case live::TargetKind::kRemote:
      // Rings, or a recorder that answers: one of them is enough to show something.
      if (session->Segments().ok()) return Status::Ok();
      return session->Info().status();
  }
  return Status::Ok();
}

void Targets::DropIdle() {
  const int64_t now = MonotonicNs();
  for (auto it = open_.begin(); it != open_.end();) {
    if (it->second.use_count() == 1 && now - it->second->last_used_ns() > kIdleNs)
      it = open_.erase(it);
    else
      ++it;
  }
}

Result<std::shared_ptr<Target>> Targets::Find(const std::string& kind, const std::string& key) {
  std::string spec;
  if (kind == "p") {
    if (!AllDigits(key) || key[0] == '0') return InvalidArgument("'" + key + "' is not a pid");
    spec = key;
  } else if (kind == "r") {
    if (!AllDigits(key) || std::stoul(key) >= other_.size())
      return NotFound("no target /r/" + key + ": this dashboard was started with " +
                      std::to_string(other_.size()) + " recording(s) or other named target(s)");
    spec = other_[std::stoul(key)];
  } else {
    return NotFound("no such target kind '" + kind + "'");
  }
  const std::string id = kind + "/" + key;
  std::lock_guard<std::mutex> lock(mu_);
  DropIdle();
  auto it = open_.find(id);
  if (it != open_.end()) return it->second;
  if (kind == "p") {
    // Only a process that is one (alive or with rings): Session::Open says why not.
    PROBING_ASSIGN_OR_RETURN(auto session, live::Session::Open(spec, options_));
    (void)session;
  }
  auto t = std::make_shared<Target>(id, spec, options_);
  open_[id] = t;
  return t;
}

TargetsReply Targets::List() {
  TargetsReply out;
  out.data_dir = options_.data_dir;
  std::set<int64_t> listed;
  std::map<std::string, std::vector<std::pair<int64_t, int64_t>>> jobs;  // job -> (rank, pid)
  std::map<int64_t, int> ranks_under;                                    // ppid -> ranked children
  std::set<std::string> with_run_id;
  const auto recorders = live::ListRecorders(options_.data_dir);
  for (const auto& r : recorders)
    if (r.rank && r.ppid) ++ranks_under[*r.ppid];
  for (const auto& r : recorders) {
    ProcessEntry e;
    e.pid = r.pid;
    e.alive = r.alive;
    e.state = r.alive ? "running" : "dead";
    if (!r.has_metadata) e.state = r.alive ? "starting" : "dead (start interrupted)";
    e.command = r.command;
    e.python_version = r.python_version;
    e.rank = r.rank;
    e.data_bytes = r.bytes;
    e.url = "/p/" + std::to_string(r.pid);
    // A job: the run id the recorder wrote, or else ranks that share a launcher (torchrun).
    if (!r.run_id.empty() && r.rank)
      e.job = r.run_id;
    else if (r.rank && r.ppid && ranks_under[*r.ppid] > 1)
      e.job = "ranks under process " + std::to_string(*r.ppid);
    if (e.job) jobs[*e.job].emplace_back(r.rank.value_or(-1), r.pid);
    if (!r.run_id.empty() && r.rank) with_run_id.insert(r.run_id);
    listed.insert(r.pid);
    out.processes.push_back(std::move(e));
  }
  for (const std::string& p : pids_) {  // named pids whose rings are elsewhere
    const int64_t pid = std::stol(p);
    if (listed.count(pid) != 0) continue;
    ProcessEntry e;
    e.pid = pid;
    const auto state = live::StateOf(static_cast<pid_t>(pid));
    e.alive = state != live::ProcessState::kGone;
    e.state = state == live::ProcessState::kGone      ? "dead"
              : state == live::ProcessState::kStopped ? "stopped"
                                                      : "running";
    e.url = "/p/" + p;
    out.processes.push_back(std::move(e));
  }
  for (auto& [job, members] : jobs) {
    std::sort(members.begin(), members.end());
    JobEntry j;
    j.job = job;
    if (with_run_id.count(job) != 0) j.url = "/cluster/" + protocol::UrlEncode(job);
    for (const auto& [rank, pid] : members) j.pids.push_back(pid);
    out.jobs.push_back(std::move(j));
  }
  for (size_t i = 0; i < other_.size(); ++i) {
    NamedTarget n;
    n.id = static_cast<int64_t>(i);
    n.target = other_[i];
    n.url = "/r/" + std::to_string(i);
    auto session = live::Session::Open(other_[i], options_);
    if (session.ok()) {
      n.kind = live::TargetKindName((*session)->kind());
      n.description = (*session)->Describe();
    } else {
      n.error = session.status().message();
    }
    out.named.push_back(std::move(n));
  }
  if (pids_.size() + other_.size() == 1) out.open = pids_.empty() ? "/r/0" : "/p/" + pids_[0];
  return out;
}

cluster::Options Targets::ClusterOptions() const {
  cluster::Options o;
  o.session = options_;
  return o;
}

Result<cluster::Job> Targets::Job(const std::string& run_id) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = jobs_.find(run_id);
    if (it != jobs_.end() && MonotonicNs() - it->second.found_ns < kJobNs) return it->second.job;
  }
  // A rank of it on this host, alive first: the job is found from there.
  std::vector<const live::RecorderEntry*> ranks;
  const auto recorders = live::ListRecorders(options_.data_dir);
  for (const auto& r : recorders)
    if (r.run_id == run_id && r.rank) ranks.push_back(&r);
  std::stable_sort(ranks.begin(), ranks.end(),
                   [](const auto* a, const auto* b) { return a->alive && !b->alive; });
  if (ranks.empty())
    return NotFound("no rank of job " + run_id + " has a recorder on this host (in " +
                    options_.data_dir + ")");
  Status last = Status::Ok();
  for (const auto* r : ranks) {
    auto job = cluster::Discover(std::to_string(r->pid), ClusterOptions());
    if (!job.ok()) {
      last = job.status();
      continue;
    }
    std::lock_guard<std::mutex> lock(mu_);
    jobs_[run_id] = {*job, MonotonicNs()};
    return std::move(job).value();
  }
  return last;
}

}  // namespace probing::web
