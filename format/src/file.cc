#include "probing/format/file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "probing/base/files.h"

namespace probing::format {

void MappedFile::Reset() {
  if (data_ != nullptr && size_ > 0) ::munmap(data_, size_);
  data_ = nullptr;
  size_ = 0;
}

Result<MappedFile> MappedFile::OpenReadOnly(const std::string& path) {
  // A FIFO or a device is refused before anything waits on it.
  PROBING_ASSIGN_OR_RETURN(UniqueFd fd, OpenRegular(path, Follow::kYes));
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return ErrnoStatus("stat " + path, errno);
  if (st.st_size == 0) return MappedFile();
  void* p = ::mmap(nullptr, static_cast<size_t>(st.st_size), PROT_READ, MAP_SHARED, fd.get(), 0);
  if (p == MAP_FAILED) return ErrnoStatus("mmap " + path, errno);
  return MappedFile(static_cast<char*>(p), static_cast<size_t>(st.st_size));
}

Result<MappedFile> MappedFile::MapReadWrite(int fd, size_t size, bool populate) {
  int flags = MAP_SHARED | (populate ? MAP_POPULATE : 0);
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, flags, fd, 0);
  if (p == MAP_FAILED) return ErrnoStatus("mmap", errno);
  return MappedFile(static_cast<char*>(p), size);
}

}  // namespace probing::format
