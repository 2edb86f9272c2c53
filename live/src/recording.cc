#include "probing/live/recording.h"

#include <filesystem>
#include <vector>

#include "probing/format/segment.h"

namespace probing::live {
namespace {

namespace fs = std::filesystem;

}  // namespace

Result<Recording> Recording::Create(const std::string& ring_dir, const std::string& out_path,
                                    int zstd_level) {
  if (zstd_level < 1 || zstd_level > 19) return InvalidArgument("zstd level must be 1 to 19");
  std::error_code ec;
  if (!fs::is_directory(ring_dir, ec)) return NotFound(ring_dir + ": no such ring directory");
  uint32_t pid = 0;
  try {
    pid = static_cast<uint32_t>(std::stoul(fs::path(ring_dir).filename().string()));
  } catch (const std::exception&) {
    pid = 0;  // a directory not named by its pid: the segments still carry theirs
  }
  PROBING_ASSIGN_OR_RETURN(format::PtraceWriter w, format::PtraceWriter::Create(out_path, pid));
  Recording r(ring_dir, std::move(w), zstd_level);
  PROBING_RETURN_IF_ERROR(r.Discover());
  if (r.rings_.empty()) return NotFound(ring_dir + " holds no .ring files");
  return r;
}

Status Recording::Discover() {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir_, ec)) {
    if (e.path().extension() != ".ring") continue;
    std::string name = e.path().filename().string();
    if (rings_.count(name) != 0) continue;
    auto reader = format::RingReader::Open(e.path().string());
    if (!reader.ok()) continue;  // being created right now: the next poll takes it
    Followed f;
    f.reader = std::make_unique<format::RingReader>(std::move(reader).value());
    f.cursor = f.reader->oldest_seq();
    rings_.emplace(std::move(name), std::move(f));
    ++progress_.rings;
  }
  return Status::Ok();
}

Status Recording::Poll() {
  if (finished_) return Internal("the recording is finished");
  PROBING_RETURN_IF_ERROR(Discover());
  for (auto& [name, f] : rings_) {
    std::vector<std::string> copies;
    uint64_t lost = 0;
    f.reader->ReadFrom(&f.cursor, &copies, &lost);
    for (const std::string& c : copies) {
      auto info = format::ParseSegmentHeader(c);
      auto z = info.ok() ? format::RecompressSegment(c, format::Codec::kZstd, level_)
                         : Result<std::string>(info.status());
      if (!z.ok()) {
        ++progress_.corrupt;
        ++lost;
        continue;
      }
      PROBING_RETURN_IF_ERROR(writer_.Append(*z));
      ++progress_.segments;
      progress_.events += info->event_count;
    }
    if (lost > 0) {
      // Said in the file itself, so every reader of the recording sees the gap.
      format::SegmentBuilder b(f.reader->info().stream, f.reader->info().pid);
      b.AddLost(f.reader->info().stream, lost);
      std::string bytes;
      PROBING_RETURN_IF_ERROR(b.Seal(format::Codec::kZstd, 0, &bytes, level_));
      PROBING_RETURN_IF_ERROR(writer_.Append(bytes));
      progress_.lost += lost;
    }
  }
  progress_.bytes = writer_.bytes_written();
  return Status::Ok();
}

Status Recording::Finish() {
  PROBING_RETURN_IF_ERROR(Poll());
  finished_ = true;
  PROBING_RETURN_IF_ERROR(writer_.Close());
  progress_.bytes = writer_.bytes_written();
  return Status::Ok();
}

}  // namespace probing::live
