// Files read and written defensively. Inputs may be planted by someone else (a ring directory
// of another user, read by root): a reader opens only regular files, never blocks on a FIFO and,
// when told, never follows a symlink. Outputs are written whole or not at all: under a
// temporary name beside the destination, renamed once complete, removed on any failure; and an
// output that is one of the inputs is refused before anything is written.
//
//   PROBING_ASSIGN_OR_RETURN(UniqueFd fd, OpenRegular(path, Follow::kNo));
//   PROBING_ASSIGN_OR_RETURN(std::string meta, ReadSmallFile(dir + "/process.json", 1 << 20));
//   PROBING_RETURN_IF_ERROR(CheckNotAnInput("out.db", {"run.ptrace"}));
//   PROBING_ASSIGN_OR_RETURN(auto out, OutputFile::Open("flame.svg"));
//   out->stream() << svg;
//   PROBING_RETURN_IF_ERROR(out->Commit());   // not committed: nothing is left
#pragma once

#include <sys/types.h>

#include <memory>
#include <ostream>
#include <streambuf>
#include <string>
#include <vector>

#include "probing/base/status.h"
#include "probing/base/unique_fd.h"

namespace probing {

enum class Follow { kYes, kNo };

// A regular file opened for reading (O_CLOEXEC), without blocking on a FIFO or a device and,
// with Follow::kNo, without following a symlink in its last component. Errors name the path
// and say what it is instead ("is a FIFO, not a regular file", "is a symbolic link (not
// followed)", "permission denied", "no such file").
Result<UniqueFd> OpenRegular(const std::string& path, Follow follow);

// The whole of a small regular file (OpenRegular), at most `max_bytes`.
Result<std::string> ReadSmallFile(const std::string& path, size_t max_bytes,
                                  Follow follow = Follow::kNo);

// What `st_mode` is, in words: "a directory", "a FIFO", "a symbolic link", ...
std::string FileKind(mode_t mode);

// Whether two paths name the same file (device and inode, through symlinks); false when
// either does not exist.
bool SameFile(const std::string& a, const std::string& b);

// Fails when `output` names one of `inputs`, or a file directly inside an input that is a
// directory (a ring directory), through symlinks and hard links: writing it would destroy what
// is being read.
Status CheckNotAnInput(const std::string& output, const std::vector<std::string>& inputs);

// An output written whole or not at all. "-" is standard output. A path naming an existing
// file that is not a regular file (/dev/null, a FIFO, a terminal) is written in place, as a
// stream; anything else goes to a temporary file beside it, renamed over `path` by Commit.
// Destroyed without Commit (an error on the way), it removes what it wrote.
class OutputFile {
 public:
  static Result<std::unique_ptr<OutputFile>> Open(const std::string& path);
  ~OutputFile();
  OutputFile(const OutputFile&) = delete;
  OutputFile& operator=(const OutputFile&) = delete;

  std::ostream& stream();
  // Flushes, checks every write succeeded (a full disk fails here) and renames into place.
  Status Commit();
  // "standard output" or the path, for messages.
  std::string where() const { return path_ == "-" ? "standard output" : path_; }

 private:
  // Buffered writes to a descriptor that remember the first error (errno), which a failed
  // std::ofstream forgets.
  class FdBuf : public std::streambuf {
   public:
    explicit FdBuf(int fd);
    bool Flush();  // false once any write failed
    int error() const { return error_; }

   protected:
    int_type overflow(int_type c) override;
    int sync() override { return Flush() ? 0 : -1; }

   private:
    int fd_;
    int error_ = 0;
    char buf_[1 << 16];
  };

  OutputFile() = default;
  std::string path_;
  std::string tmp_;  // empty: written in place (or standard output)
  UniqueFd fd_;
  std::unique_ptr<FdBuf> buf_;
  std::unique_ptr<std::ostream> out_;
  bool committed_ = false;
};

}  // namespace probing
