#include "probing/live/segment_source.h"

#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>

#include "probing/base/files.h"
#include "probing/format/ptrace.h"
#include "probing/format/segment.h"
#include "probing/live/control_client.h"
#include "probing/live/protocol.h"

namespace probing::live {
namespace {

namespace fs = std::filesystem;

bool Wanted(const std::vector<std::string>& rings, const std::string& name) {
  return rings.empty() || std::find(rings.begin(), rings.end(), name) != rings.end();
}

// A regular file, seen without following a symlink (a FIFO would hang a reader; a symlink
// planted in a ring directory could point anywhere).
bool RegularFile(const std::string& path, std::string* why) {
  struct stat st;
  if (lstat(path.c_str(), &st) != 0) {
    *why = ErrnoStatus("stat " + path, errno).message();
    return false;
  }
  if (S_ISLNK(st.st_mode)) {
    *why = "a symbolic link (not followed)";
    return false;
  }
  if (!S_ISREG(st.st_mode)) {
    *why = "not a regular file";
    return false;
  }
  return true;
}

}  // namespace

Status CannotOpen(const std::string& path, int err) {
  if (err == EACCES || err == EPERM)
    return PermissionDenied(path + ": permission denied (run probing as its owner, or as root)");
  if (err == ENOENT || err == ENOTDIR) return NotFound(path + ": no such file or directory");
  return ErrnoStatus(path, err);
}

std::string RingOf(format::Stream stream) { return format::StreamName(stream); }

// ---- ring directories ------------------------------------------------------------------------

Result<std::unique_ptr<RingDirSource>> RingDirSource::Open(const std::string& dir,
                                                           std::function<Status()> seal,
                                                           std::function<bool()> alive) {
  std::error_code ec;
  struct stat st;
  if (stat(dir.c_str(), &st) != 0) return CannotOpen(dir, errno);
  if (!S_ISDIR(st.st_mode)) return InvalidArgument(dir + " is not a directory");
  std::unique_ptr<RingDirSource> s(new RingDirSource(dir, std::move(seal), std::move(alive)));
  s->Discover();
  if (s->rings_.empty() && s->damaged_.empty()) {
    fs::directory_iterator it(dir, ec);
    if (ec) return CannotOpen(dir, ec.value());
    return NotFound(dir + " holds no .ring files");
  }
  return s;
}

void RingDirSource::Discover() {
  std::error_code ec;
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(dir_, ec))
    if (e.path().extension() == ".ring") files.push_back(e.path());
  std::sort(files.begin(), files.end());
  for (const fs::path& f : files) {
    std::string name = f.stem().string();
    if (rings_.count(name) != 0) continue;
    std::string why;
    if (!RegularFile(f.string(), &why)) {
      damaged_[f.string()] = why;
      continue;
    }
    auto reader = format::RingReader::Open(f.string());
    if (!reader.ok()) {
      // A ring being created right now has no header yet; a later call retries it.
      damaged_[f.string()] = reader.status().message();
      continue;
    }
    damaged_.erase(f.string());
    rings_[name] = std::make_unique<format::RingReader>(std::move(reader).value());
  }
  // A ring the recorder says it made (process.json) and that is not there: reported, not
  // silently absent (a start interrupted, a file removed).
  auto meta = ReadSmallFile(dir_ + "/process.json", 1 << 20, Follow::kNo);
  if (!meta.ok()) return;
  auto j = protocol::Json::parse(*meta, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || !j.contains("rings") || !j["rings"].is_array()) return;
  for (const auto& r : j["rings"]) {
    if (!r.is_string()) continue;
    const std::string name = r.get<std::string>();
    if (name.find('/') != std::string::npos) continue;  // only names, inside this directory
    const fs::path file = fs::path(dir_) / name;
    if (file.extension() != ".ring") continue;
    if (rings_.count(file.stem().string()) != 0 || damaged_.count(file.string()) != 0) continue;
    std::error_code ec;
    if (!fs::exists(fs::symlink_status(file, ec)))
      damaged_[file.string()] = "missing (process.json lists it)";
  }
}

Status RingDirSource::Fetch(const std::vector<std::string>& rings, Cursors* cursors,
                            FetchOutcome* out) {
  Discover();
  std::string copy;
  for (const auto& [name, reader] : rings_) {
    if (!Wanted(rings, name)) continue;
    const std::string origin = dir_ + "/" + name + ".ring";
    const uint64_t next = reader->next_seq();
    const uint64_t oldest = reader->oldest_seq();
    out->oldest[origin] = oldest;
    auto at = cursors->find(name);
    uint64_t seq = at == cursors->end() ? oldest : at->second;
    if (seq < oldest) {
      out->lost[name] += oldest - seq;
      out->origin_of[name] = origin;
      seq = oldest;
    }
    for (; seq < next; ++seq) {
      if (!reader->Read(seq, &copy).ok()) {
        ++out->lost[name];
        out->origin_of[name] = origin;
        continue;
      }
      out->segments.push_back({name, origin, seq, std::move(copy)});
      copy.clear();
    }
    (*cursors)[name] = seq;
  }
  return Status::Ok();
}

std::vector<format::SourceStats> RingDirSource::stats() const {
  std::vector<format::SourceStats> out;
  for (const auto& [name, reader] : rings_) {
    format::SourceStats s;
    s.path = dir_ + "/" + name + ".ring";
    s.kind = "ring";
    out.push_back(std::move(s));
  }
  for (const auto& [file, why] : damaged_) {
    format::SourceStats s;
    s.path = file;
    s.kind = "ring";
    s.first_error = "skipped: " + why;
    s.unreadable = true;
    out.push_back(std::move(s));
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.path < b.path; });
  return out;
}

// ---- recordings ------------------------------------------------------------------------------

struct RecordingSource::File {
  std::string path;
  int64_t shift_ns = 0;
  std::optional<format::PtraceReader> ptrace;
  std::unique_ptr<format::RingReader> ring;  // a single ring file given by name
};

Result<std::unique_ptr<RecordingSource>> RecordingSource::Open(
    const std::vector<std::string>& paths, std::vector<int64_t> shifts_ns) {
  std::unique_ptr<RecordingSource> s(new RecordingSource());
  for (size_t i = 0; i < paths.size(); ++i) {
    const std::string& p = paths[i];
    struct stat st;
    if (stat(p.c_str(), &st) != 0) return CannotOpen(p, errno);
    if (!S_ISREG(st.st_mode))
      return InvalidArgument(p + " is " + FileKind(st.st_mode) +
                             ", not a regular file (a recording is a .ptrace file)");
    auto f = std::make_shared<File>();
    f->path = p;
    f->shift_ns = i < shifts_ns.size() ? shifts_ns[i] : 0;
    auto ptrace = format::PtraceReader::Open(p);
    if (ptrace.ok()) {
      f->ptrace = std::move(ptrace).value();
    } else {
      auto ring = format::RingReader::Open(p);
      if (!ring.ok()) return ptrace.status();
      f->ring = std::make_unique<format::RingReader>(std::move(ring).value());
    }
    s->files_.push_back(std::move(f));
  }
  return s;
}

std::string RecordingSource::Describe() const {
  if (files_.size() == 1) return "the recording " + files_[0]->path;
  return std::to_string(files_.size()) + " recordings";
}

Status RecordingSource::Fetch(const std::vector<std::string>& rings, Cursors* cursors,
                              FetchOutcome* out) {
  for (size_t i = 0; i < files_.size(); ++i) {
    const auto& f = files_[i];
    // Per file (a file named twice is read twice): the next segment index.
    uint64_t& cursor = (*cursors)[std::to_string(i) + ":" + f->path];
    if (f->ptrace) {
      const auto& locs = f->ptrace->segments();
      for (; cursor < locs.size(); ++cursor) {
        std::string ring = format::StreamName(locs[cursor].stream);
        if (locs[cursor].stream != format::Stream::kMixed && !Wanted(rings, ring)) continue;
        out->segments.push_back(
            {ring, f->path, cursor, std::string(f->ptrace->SegmentBytes(cursor)), f->shift_ns});
      }
      continue;
    }
    const std::string ring = format::StreamName(f->ring->info().stream);
    if (f->ring->info().stream != format::Stream::kMixed && !Wanted(rings, ring)) continue;
    uint64_t seq = std::max(cursor, f->ring->oldest_seq());
    std::string copy;
    for (const uint64_t next = f->ring->next_seq(); seq < next; ++seq) {
      if (!f->ring->Read(seq, &copy).ok()) {
        ++out->lost[ring];
        out->origin_of[ring] = f->path;
        continue;
      }
      out->segments.push_back({ring, f->path, seq, std::move(copy), f->shift_ns});
      copy.clear();
    }
    cursor = seq;
  }
  return Status::Ok();
}

std::vector<format::SourceStats> RecordingSource::stats() const {
  std::vector<format::SourceStats> out;
  for (const auto& f : files_) {
    format::SourceStats s;
    s.path = f->path;
    if (f->ptrace) {
      s.kind = "ptrace";
      s.used_index = f->ptrace->stats().used_index;
      s.truncated_tail = f->ptrace->stats().truncated_tail;
      s.bytes_skipped = f->ptrace->stats().skipped_bytes;
      s.first_error = f->ptrace->stats().first_error;
    } else {
      s.kind = "ring";
    }
    out.push_back(std::move(s));
  }
  return out;
}

// ---- remote ----------------------------------------------------------------------------------

std::string RemoteSource::Describe() const {
  return "the rings of " + client_->endpoint().Describe();
}

Status RemoteSource::Seal() {
  auto r = client_->Request("POST", std::string(protocol::kSealPath), "{}");
  if (!r.ok()) return Status::Ok();  // unreachable now: Fetch says so, with the reason
  if (r->status == 401 || r->status == 403) return ControlClient::ErrorOf(*r);
  return Status::Ok();
}

Status RemoteSource::Fetch(const std::vector<std::string>& rings, Cursors* cursors,
                           FetchOutcome* out) {
  protocol::SegmentsRequest req;
  req.rings = rings;
  req.from = *cursors;
  PROBING_ASSIGN_OR_RETURN(Response r, client_->Request("GET", req.Target()));
  if (r.status != 200) return ControlClient::ErrorOf(r);
  if (r.content_type != protocol::kSegmentsMediaType)
    return DataLoss(client_->endpoint().Describe() + " answered /segments with " +
                    (r.content_type.empty() ? "no content type" : r.content_type) +
                    ": is it a Probing recorder of this version?");
  PROBING_ASSIGN_OR_RETURN(protocol::SegmentBatch batch, protocol::DecodeSegmentBatch(r.body));
  const std::string where = client_->endpoint().Describe();
  std::set<std::string> seen;
  for (const auto& st : batch.rings) {
    const std::string origin = where + " " + st.name + ".ring";
    out->oldest[origin] = st.oldest;
    if (st.lost > 0) {
      out->lost[st.name] += st.lost;
      out->origin_of[st.name] = origin;
    }
    (*cursors)[st.name] = st.to;
    seen.insert(st.name);
  }
  for (auto& item : batch.segments) {
    const std::string& ring = batch.rings[item.ring].name;
    out->segments.push_back({ring, where + " " + ring + ".ring", item.seq, std::move(item.bytes)});
  }
  stats_.clear();
  for (const auto& name : seen) {
    format::SourceStats s;
    s.path = where + " " + name + ".ring";
    s.kind = "remote ring";
    stats_.push_back(std::move(s));
  }
  // Whatever did not fit comes with the next call: fetch on until the batch is complete, so
  // one Fetch is a whole answer like the local sources'.
  if (batch.more) return Fetch(rings, cursors, out);
  return Status::Ok();
}

// ---- several -------------------------------------------------------------------------------

std::string MultiSource::Describe() const {
  std::string out;
  for (const auto& p : parts_) out += (out.empty() ? "" : ", ") + p->Describe();
  return out;
}

Status MultiSource::Seal() {
  for (const auto& p : parts_) PROBING_RETURN_IF_ERROR(p->Seal());
  return Status::Ok();
}

// The caller's cursors cannot tell two parts' "stacks" apart, so each part keeps its own, and
// the caller's map only marks that a first fetch happened (empty: from the start again).
Status MultiSource::Fetch(const std::vector<std::string>& rings, Cursors* cursors,
                          FetchOutcome* out) {
  if (cursors->empty()) cursors_.assign(parts_.size(), Cursors{});
  for (size_t i = 0; i < parts_.size(); ++i) {
    FetchOutcome part;
    PROBING_RETURN_IF_ERROR(parts_[i]->Fetch(rings, &cursors_[i], &part));
    for (auto& seg : part.segments) out->segments.push_back(std::move(seg));
    for (const auto& [ring, n] : part.lost) {
      const std::string key = part.origin_of[ring];  // unique across parts
      out->lost[key] += n;
      out->origin_of[key] = key;
    }
    for (const auto& [origin, seq] : part.oldest) out->oldest[origin] = seq;
  }
  (*cursors)["*"] = 1;
  return Status::Ok();
}

std::vector<format::SourceStats> MultiSource::stats() const {
  std::vector<format::SourceStats> out;
  for (const auto& p : parts_)
    for (auto& s : p->stats()) out.push_back(std::move(s));
  return out;
}

bool MultiSource::live() const {
  return std::any_of(parts_.begin(), parts_.end(), [](const auto& p) { return p->live(); });
}

Result<std::optional<std::unique_ptr<SegmentSource>>> OpenBundle(const std::string& dir) {
  const std::string path = dir + "/manifest.json";
  std::error_code ec;
  if (!fs::exists(path, ec)) return std::optional<std::unique_ptr<SegmentSource>>();
  std::string why;
  if (!RegularFile(path, &why)) return InvalidArgument(path + ": " + why);
  std::ifstream in(path);
  auto m = protocol::Json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (!m.is_object() || m.value("format", "") != "probing-bundle" || !m.contains("ranks") ||
      !m["ranks"].is_array())
    return DataLoss(path + " is not a Probing bundle's manifest");
  if (m.value("version", 0) > 1)
    return Unimplemented(path + ": bundle version " + std::to_string(m.value("version", 0)) +
                         " is newer than this build (reads up to 1)");
  std::vector<std::string> files;
  std::vector<int64_t> shifts;
  for (const auto& r : m["ranks"]) {
    if (!r.is_object() || !r.contains("file") || !r["file"].is_string()) continue;  // not recorded
    const std::string file = r["file"].get<std::string>();
    if (file.find('/') != std::string::npos || file.empty() || file[0] == '.')
      return DataLoss(path + " names a file outside its directory: " + file);
    files.push_back(dir + "/" + file);
    // A rank whose clock ran `offset` ahead of the recording client's: its times, minus that.
    const double offset = r.contains("clock_offset_s") && r["clock_offset_s"].is_number()
                              ? r["clock_offset_s"].get<double>()
                              : 0;
    shifts.push_back(static_cast<int64_t>(-offset * 1e9));
  }
  if (files.empty()) return NotFound(path + " lists no recorded rank");
  PROBING_ASSIGN_OR_RETURN(auto rec, RecordingSource::Open(files, shifts));
  return std::optional<std::unique_ptr<SegmentSource>>(std::move(rec));
}

Result<std::unique_ptr<SegmentSource>> OpenFiles(const std::vector<std::string>& paths) {
  if (paths.empty()) return InvalidArgument("no recordings given");
  std::vector<std::unique_ptr<SegmentSource>> parts;
  std::vector<std::string> files;
  for (const std::string& p : paths) {
    struct stat st;
    if (stat(p.c_str(), &st) != 0) return CannotOpen(p, errno);
    if (S_ISDIR(st.st_mode)) {
      PROBING_ASSIGN_OR_RETURN(auto bundle, OpenBundle(p));
      if (bundle) {
        parts.push_back(std::move(*bundle));
        continue;
      }
      PROBING_ASSIGN_OR_RETURN(auto dir, RingDirSource::Open(p));
      parts.push_back(std::move(dir));
    } else {
      files.push_back(p);
    }
  }
  if (!files.empty()) {
    PROBING_ASSIGN_OR_RETURN(auto rec, RecordingSource::Open(files));
    parts.push_back(std::move(rec));
  }
  if (parts.size() == 1) return std::move(parts[0]);
  return std::unique_ptr<SegmentSource>(new MultiSource(std::move(parts)));
}

// ---- decoding --------------------------------------------------------------------------------

Result<format::TraceSet> LoadStreams(SegmentSource& source,
                                     const std::vector<format::Stream>& streams) {
  std::vector<std::string> rings;
  for (format::Stream s : streams) rings.push_back(RingOf(s));
  Cursors cursors;
  FetchOutcome got;
  PROBING_RETURN_IF_ERROR(source.Fetch(rings, &cursors, &got));
  format::TraceSet set;
  std::map<std::string, size_t> by_origin;
  for (auto& s : source.stats()) {
    by_origin[s.path] = set.sources.size();
    set.sources.push_back(std::move(s));
  }
  auto stats_of = [&](const std::string& origin) -> format::SourceStats& {
    auto it = by_origin.find(origin);
    if (it != by_origin.end()) return set.sources[it->second];
    by_origin[origin] = set.sources.size();
    format::SourceStats s;
    s.path = origin;
    s.kind = "ring";
    set.sources.push_back(std::move(s));
    return set.sources.back();
  };
  set.segments.reserve(got.segments.size());
  for (const RawSegment& raw : got.segments) {
    format::SourceStats& st = stats_of(raw.origin);
    auto seg = format::DecodeSegment(raw.bytes);
    if (!seg.ok()) {
      ++st.segments_corrupt;
      if (st.first_error.empty()) st.first_error = seg.status().message();
      continue;
    }
    ++st.segments_ok;
    format::ShiftTimes(&*seg, raw.shift_ns);
    set.segments.push_back(std::move(seg).value());
  }
  for (const auto& [ring, n] : got.lost) stats_of(got.origin_of[ring]).segments_lost += n;
  return set;
}

}  // namespace probing::live
