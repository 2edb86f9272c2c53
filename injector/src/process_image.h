// What another process has mapped, and where the functions of its ELF files are in its memory.
// Files are read through /proc/<pid>/root, so a process in a container is seen with its own
// files, never ours.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "probing/base/status.h"
#include "probing/procfs/elf_symbols.h"
#include "probing/procfs/proc_maps.h"

namespace probing::injector {

using Mapping = procfs::MapEntry;  // paths as the target names them

class ProcessImage {
 public:
  // Reads /proc/<pid>/maps. Errors name the pid: "no such process", permission.
  static Result<ProcessImage> Read(pid_t pid);

  pid_t pid() const { return pid_; }
  const std::vector<Mapping>& maps() const { return maps_; }
  // The mapping holding `addr`, or null.
  const Mapping* At(uintptr_t addr) const;
  // The first mapped file whose base name starts with `prefix` ("libc.so", "ld-linux"), or "".
  std::string FindFile(const std::string& prefix) const;
  // Where the target's `path` is readable from here.
  std::string HostPath(const std::string& path) const;

  // The address in the target of function `name` of the mapped file `path`.
  std::optional<uintptr_t> Address(const std::string& path, const std::string& name);
  // Where ELF virtual address `vaddr` of the mapped file `path` is in the target.
  std::optional<uintptr_t> AddressOfVaddr(const std::string& path, uint64_t vaddr);
  // The ELF virtual address of `path`'s .eh_frame_hdr (PT_GNU_EH_FRAME), for unwinding.
  std::optional<uint64_t> EhFrameHdr(const std::string& path);
  // The symbol holding `addr` (a mapped file's code), or "" when its files do not name it.
  std::string SymbolAt(uintptr_t addr);

 private:
  explicit ProcessImage(pid_t pid) : pid_(pid) {}

  pid_t pid_;
  std::vector<Mapping> maps_;
  procfs::ElfSymbols symbols_;
  std::map<std::string, std::optional<uint64_t>> eh_frame_hdr_;
};

}  // namespace probing::injector
