#include "probing/base/files.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>

namespace probing {
namespace {

std::string Why(int err) {
  char buf[256];
  return strerror_r(err, buf, sizeof buf);  // GNU: a pointer to the message
}

Status OpenError(const std::string& path, int err) {
  switch (err) {
    case ENOENT: return NotFound(path + ": no such file");
    case EACCES:
    case EPERM: return PermissionDenied(path + ": permission denied");
    default: return ErrnoStatus(path, err);
  }
}

// The process's umask, without changing it (umask(2) would, for a moment, for every thread).
mode_t CurrentUmask() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("Umask:", 0) == 0) return static_cast<mode_t>(std::strtoul(line.c_str() + 6, nullptr, 8));
  return 022;
}

}  // namespace

std::string FileKind(mode_t mode) {
  if (S_ISREG(mode)) return "a regular file";
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISLNK(mode)) return "a symbolic link";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  return "not a regular file";
}

Result<UniqueFd> OpenRegular(const std::string& path, Follow follow) {
  // O_NONBLOCK: opening a FIFO without a writer would wait for one; the mode is checked below
  // before anything is read, and cleared again for a regular file.
  int flags = O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY;
  if (follow == Follow::kNo) flags |= O_NOFOLLOW;
  UniqueFd fd(::open(path.c_str(), flags));
  if (!fd.valid()) {
    const int err = errno;
    if (err == ELOOP && follow == Follow::kNo)
      return InvalidArgument(path + " is a symbolic link (not followed)");
    return OpenError(path, err);
  }
  struct stat st;
  if (fstat(fd.get(), &st) != 0) return ErrnoStatus("stat " + path, errno);
  if (!S_ISREG(st.st_mode))
    return InvalidArgument(path + " is " + FileKind(st.st_mode) + ", not a regular file");
  fcntl(fd.get(), F_SETFL, fcntl(fd.get(), F_GETFL) & ~O_NONBLOCK);
  return fd;
}

Result<std::string> ReadSmallFile(const std::string& path, size_t max_bytes, Follow follow) {
  PROBING_ASSIGN_OR_RETURN(UniqueFd fd, OpenRegular(path, follow));
  std::string out;
  char buf[8192];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoStatus("read " + path, errno);
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
    if (out.size() > max_bytes)
      return OutOfRange(path + " is larger than " + std::to_string(max_bytes) + " bytes");
  }
  return out;
}

bool SameFile(const std::string& a, const std::string& b) {
  struct stat sa, sb;
  return ::stat(a.c_str(), &sa) == 0 && ::stat(b.c_str(), &sb) == 0 && sa.st_dev == sb.st_dev &&
         sa.st_ino == sb.st_ino;
}

Status CheckNotAnInput(const std::string& output, const std::vector<std::string>& inputs) {
  struct stat out;
  if (output == "-" || ::stat(output.c_str(), &out) != 0) return Status::Ok();  // nothing there
  if (!S_ISREG(out.st_mode)) return Status::Ok();  // /dev/null, a FIFO: written as a stream
  auto same = [&out](const struct stat& s) {
    return s.st_dev == out.st_dev && s.st_ino == out.st_ino;
  };
  for (const std::string& in : inputs) {
    struct stat st;
    if (::stat(in.c_str(), &st) != 0) continue;
    if (same(st))
      return InvalidArgument("the output " + output + " is the input " + in +
                             ": writing it would destroy what is read; choose another file");
    if (!S_ISDIR(st.st_mode)) continue;
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(in, ec)) {
      struct stat inner;
      if (::stat(e.path().c_str(), &inner) == 0 && same(inner))
        return InvalidArgument("the output " + output + " is " + e.path().string() +
                               ", read from " + in +
                               ": writing it would destroy what is read; choose another file");
    }
  }
  return Status::Ok();
}

OutputFile::FdBuf::FdBuf(int fd) : fd_(fd) { setp(buf_, buf_ + sizeof buf_); }

bool OutputFile::FdBuf::Flush() {
  const char* p = pbase();
  while (error_ == 0 && p < pptr()) {
    ssize_t n = ::write(fd_, p, static_cast<size_t>(pptr() - p));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) error_ = errno;
    if (n > 0) p += n;
  }
  setp(buf_, buf_ + sizeof buf_);
  return error_ == 0;
}

OutputFile::FdBuf::int_type OutputFile::FdBuf::overflow(int_type c) {
  if (!Flush()) return traits_type::eof();
  if (!traits_type::eq_int_type(c, traits_type::eof())) {
    *pptr() = traits_type::to_char_type(c);
    pbump(1);
  }
  return traits_type::not_eof(c);
}

Result<std::unique_ptr<OutputFile>> OutputFile::Open(const std::string& path) {
  std::unique_ptr<OutputFile> f(new OutputFile());
  f->path_ = path;
  if (path == "-") return f;
  struct stat st;
  if (::stat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) {
    if (S_ISDIR(st.st_mode)) return InvalidArgument("cannot write " + path + ": a directory");
    // A device or a FIFO (someone reads it): a stream, written in place.
    f->fd_ = UniqueFd(::open(path.c_str(), O_WRONLY | O_CLOEXEC | O_NOCTTY));
    if (!f->fd_.valid()) return InvalidArgument("cannot write " + path + ": " + Why(errno));
  } else {
    const size_t slash = path.rfind('/');
    const std::string dir = slash == std::string::npos ? "" : path.substr(0, slash + 1);
    std::string tmp = dir + "." + path.substr(slash == std::string::npos ? 0 : slash + 1) +
                      ".XXXXXX";
    f->fd_ = UniqueFd(mkostemp(tmp.data(), O_CLOEXEC));
    if (!f->fd_.valid())
      return InvalidArgument("cannot write " + path + ": " + Why(errno) +
                             " (creating a temporary file beside it)");
    fchmod(f->fd_.get(), 0666 & ~CurrentUmask());  // as a plain create would have made it
    f->tmp_ = tmp;
  }
  f->buf_ = std::make_unique<FdBuf>(f->fd_.get());
  f->out_ = std::make_unique<std::ostream>(f->buf_.get());
  return f;
}

OutputFile::~OutputFile() {
  if (committed_ || tmp_.empty()) return;
  fd_.Reset();
  std::remove(tmp_.c_str());
}

std::ostream& OutputFile::stream() { return path_ == "-" ? std::cout : *out_; }

Status OutputFile::Commit() {
  committed_ = true;  // from here on, this function cleans up after itself
  if (path_ == "-") {
    std::cout.flush();
    if (!std::cout) return Unavailable("writing to standard output failed");
    return Status::Ok();
  }
  bool ok = buf_->Flush() && out_->good();
  int err = buf_->error();
  if (ok && !tmp_.empty() && ::fsync(fd_.get()) != 0) {  // a full disk may tell only now
    ok = false;
    err = errno;
  }
  fd_.Reset();
  if (!ok) {
    if (!tmp_.empty()) std::remove(tmp_.c_str());
    return Unavailable("writing " + path_ + " failed: " + Why(err != 0 ? err : EIO) +
                       (tmp_.empty() ? "" : "; nothing was left behind"));
  }
  if (!tmp_.empty() && std::rename(tmp_.c_str(), path_.c_str()) != 0) {
    err = errno;
    std::remove(tmp_.c_str());
    return Unavailable("cannot write " + path_ + ": " + Why(err));
  }
  return Status::Ok();
}

}  // namespace probing
