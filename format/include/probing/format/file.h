// RAII handles for the OS resources the format uses: a file descriptor and a memory mapping.
//
//   PROBING_ASSIGN_OR_RETURN(MappedFile m, MappedFile::OpenReadOnly("run.ptrace"));
//   std::string_view all = m.view();
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <utility>

#include "probing/format/status.h"

namespace probing::format {

class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept {
    if (this != &o) {
      Reset();
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  ~UniqueFd() { Reset(); }
  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  void Reset();

 private:
  int fd_ = -1;
};

// A whole file mapped into memory, shared (writable mappings write through to the file).
class MappedFile {
 public:
  MappedFile() = default;
  MappedFile(MappedFile&& o) noexcept
      : data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)) {}
  MappedFile& operator=(MappedFile&& o) noexcept {
    if (this != &o) {
      Reset();
      data_ = std::exchange(o.data_, nullptr);
      size_ = std::exchange(o.size_, 0);
    }
    return *this;
  }
  ~MappedFile() { Reset(); }

  static Result<MappedFile> OpenReadOnly(const std::string& path);
  // Maps `size` bytes of an open fd read-write; `populate` pre-faults every page.
  static Result<MappedFile> MapReadWrite(int fd, size_t size, bool populate);

  char* data() const { return data_; }
  size_t size() const { return size_; }
  std::string_view view() const { return {data_, size_}; }
  void Reset();

 private:
  MappedFile(char* d, size_t s) : data_(d), size_(s) {}
  char* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace probing::format
