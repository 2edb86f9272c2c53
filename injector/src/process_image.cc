#include "process_image.h"

#include <elf.h>

#include <cerrno>
#include <cstring>
#include <fstream>

namespace probing::injector {

Result<ProcessImage> ProcessImage::Read(pid_t pid) {
  const std::string file = "/proc/" + std::to_string(pid) + "/maps";
  errno = 0;
  ProcessImage image(pid);
  image.maps_ = procfs::ReadProcMaps(file);
  if (image.maps_.empty()) {
    if (errno == ENOENT) return NotFound("no such process " + std::to_string(pid));
    if (errno == EACCES || errno == EPERM)
      return Unavailable("cannot read " + file + ": " + std::strerror(errno));
    // a zombie, or a kernel thread
    return NotFound("process " + std::to_string(pid) + " has no memory mapped (exited?)");
  }
  return image;
}

const Mapping* ProcessImage::At(uintptr_t addr) const {
  for (const Mapping& m : maps_)
    if (addr >= m.start && addr < m.end) return &m;
  return nullptr;
}

std::string ProcessImage::FindFile(const std::string& prefix) const {
  for (const Mapping& m : maps_) {
    const std::string base = m.path.substr(m.path.rfind('/') + 1);
    if (!m.path.empty() && base.compare(0, prefix.size(), prefix) == 0) return m.path;
  }
  return "";
}

std::string ProcessImage::HostPath(const std::string& path) const {
  return "/proc/" + std::to_string(pid_) + "/root" + path;
}

std::optional<uintptr_t> ProcessImage::Address(const std::string& path, const std::string& name) {
  const procfs::ElfSymbols::Module* mod = symbols_.Load(HostPath(path));
  if (mod == nullptr) return std::nullopt;
  auto vaddr = mod->Find(name);
  if (!vaddr) return std::nullopt;
  return AddressOfVaddr(path, *vaddr);
}

std::optional<uint64_t> ProcessImage::EhFrameHdr(const std::string& path) {
  if (auto it = eh_frame_hdr_.find(path); it != eh_frame_hdr_.end()) return it->second;
  std::optional<uint64_t> found;
  std::ifstream in(HostPath(path), std::ios::binary);
  Elf64_Ehdr eh{};
  if (in.read(reinterpret_cast<char*>(&eh), sizeof eh) &&
      std::memcmp(eh.e_ident, ELFMAG, SELFMAG) == 0 && eh.e_ident[EI_CLASS] == ELFCLASS64 &&
      eh.e_phentsize == sizeof(Elf64_Phdr) && eh.e_phnum < 256) {
    std::vector<Elf64_Phdr> ph(eh.e_phnum);
    in.seekg(static_cast<std::streamoff>(eh.e_phoff));
    if (in.read(reinterpret_cast<char*>(ph.data()),
                static_cast<std::streamsize>(ph.size() * sizeof(Elf64_Phdr))))
      for (const Elf64_Phdr& p : ph)
        if (p.p_type == PT_GNU_EH_FRAME) found = p.p_vaddr;
  }
  eh_frame_hdr_[path] = found;
  return found;
}

std::optional<uintptr_t> ProcessImage::AddressOfVaddr(const std::string& path, uint64_t vaddr) {
  const procfs::ElfSymbols::Module* mod = symbols_.Load(HostPath(path));
  if (mod == nullptr) return std::nullopt;
  auto file_offset = mod->FileOffsetOfVaddr(vaddr);
  if (!file_offset) return std::nullopt;
  for (const Mapping& m : maps_)
    if (m.path == path && *file_offset >= m.offset && *file_offset < m.offset + (m.end - m.start))
      return m.start + (*file_offset - m.offset);
  return std::nullopt;
}

std::string ProcessImage::SymbolAt(uintptr_t addr) {
  const Mapping* m = At(addr);
  if (m == nullptr || m->path.empty()) return "";
  const procfs::ElfSymbols::Module* mod = symbols_.Load(HostPath(m->path));
  if (mod == nullptr) return "";
  auto vaddr = mod->VaddrOfFileOffset(addr - m->start + m->offset);
  if (!vaddr) return "";
  auto hit = mod->Lookup(*vaddr);
  return hit ? hit->name : "";
}

}  // namespace probing::injector
