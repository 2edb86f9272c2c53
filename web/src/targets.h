// The targets the dashboard shows: local processes by pid (/p/<pid>) and the targets named on
// the command line that are not local pids (/r/<n>: recordings, ring directories, host:port).
// Each is reached only through live::Session. What a target recorded is decoded once and kept
// (Target::Data), and only new segments are fetched and decoded on each refresh; segments its
// rings no longer hold are dropped, so the cache mirrors the rings.
//
//   Targets targets(named, options);
//   PROBING_ASSIGN_OR_RETURN(std::shared_ptr<Target> t, targets.Find("p", "4242"));
//   PROBING_ASSIGN_OR_RETURN(Snapshot snap, t->Data());
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "probing/base/status.h"
#include "probing/cluster/cluster.h"
#include "probing/live/segment_source.h"
#include "probing/live/session.h"
#include "probing/web/api.h"
#include "views.h"

namespace probing::web {

class Target {
 public:
  Target(std::string id, std::string spec, live::SessionOptions options)
      : id_(std::move(id)), spec_(std::move(spec)), options_(std::move(options)) {}

  const std::string& id() const { return id_; }      // "p/4242", "r/0"
  const std::string& spec() const { return spec_; }  // what Session::Open takes
  // A session of its own for one request (control calls, SQL): nothing shared, no lock held
  // while a target is slow to answer.
  Result<std::unique_ptr<live::Session>> Open() const;
  // What the target recorded, decoded. A live target is asked for what is new (sealing its
  // open segments first) when the last look is older than `max_age_s`.
  Result<Snapshot> Data(double max_age_s = 0.25);
  int64_t last_used_ns() const;

 private:
  Status Refresh();

  const std::string id_;
  const std::string spec_;
  const live::SessionOptions options_;
  mutable std::mutex mu_;
  std::unique_ptr<live::Session> session_;  // for its segments only
  live::Cursors cursors_;
  // (origin, seq) -> decoded segment
  std::map<std::pair<std::string, uint64_t>, std::shared_ptr<const format::Segment>> segments_;
  bool loaded_ = false;
  bool live_ = false;
  int64_t fetched_ns_ = 0;
  int64_t used_ns_ = 0;
  uint64_t corrupt_ = 0;
  uint64_t lost_ = 0;
};

class Targets {
 public:
  // `named`: the targets given on the command line, already checked (Check).
  Targets(std::vector<std::string> named, live::SessionOptions options);

  // Opens a target named on the command line far enough to tell whether it is one: a pid with
  // a recorder or rings, a recording that parses, a ring directory with rings, host:port.
  static Status Check(const std::string& spec, const live::SessionOptions& options);

  // kind "p": a local pid (any process with a recorder or rings); kind "r": the n-th named
  // target that is not a local pid.
  Result<std::shared_ptr<Target>> Find(const std::string& kind, const std::string& key);
  TargetsReply List();

  // The job of this run id, found from one of its ranks with a recorder on this host (its
  // members may be elsewhere: cluster::Discover follows the job's store); kept a few seconds.
  Result<cluster::Job> Job(const std::string& run_id);
  cluster::Options ClusterOptions() const;

 private:
  void DropIdle();

  live::SessionOptions options_;
  std::vector<std::string> pids_;   // named local pids
  std::vector<std::string> other_;  // named others, /r/<index>
  std::mutex mu_;
  std::map<std::string, std::shared_ptr<Target>> open_;  // by id
  struct FoundJob {
    cluster::Job job;
    int64_t found_ns = 0;
  };
  std::map<std::string, FoundJob> jobs_;  // by run id, under mu_
};

}  // namespace probing::web
