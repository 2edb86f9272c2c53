// RAII for a memory mapping of a whole file (descriptors: probing/base/unique_fd.h).
//
//   PROBING_ASSIGN_OR_RETURN(MappedFile m, MappedFile::OpenReadOnly("run.ptrace"));
//   std::string_view all = m.view();
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <utility>

#include "probing/base/status.h"
#include "probing/base/unique_fd.h"

namespace probing::format {

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
