#include "safe_read.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace probing::recorder {

SafeReader::SafeReader() : pid_(getpid()) {
  uint64_t probe = 0x1234, copy = 0;
  if (ReadBytes(reinterpret_cast<uintptr_t>(&probe), &copy, sizeof copy) && copy == probe) {
    available_ = true;
    return;
  }
  int err = errno;
  why_ = std::string("process_vm_readv on our own process failed (") + std::strerror(err) +
         (err == EPERM || err == ENOSYS ? "; a seccomp profile may forbid it)" : ")");
}

bool SafeReader::ReadBytes(uintptr_t addr, void* out, size_t size) const noexcept {
  if (addr == 0 || size == 0) return false;
  ++reads_;
  struct iovec local = {out, size};
  struct iovec remote = {reinterpret_cast<void*>(addr), size};
  ssize_t n = process_vm_readv(pid_, &local, 1, &remote, 1, 0);
  return n == static_cast<ssize_t>(size);
}

}  // namespace probing::recorder
