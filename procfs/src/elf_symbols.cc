#include "probing/procfs/elf_symbols.h"

#include <elf.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

namespace probing::procfs {
namespace {

// A bounds-checked view of a mapped file.
struct Image {
  const uint8_t* data;
  size_t size;

  template <typename T>
  const T* At(uint64_t offset, uint64_t count = 1) const {
    if (offset > size || count > (size - offset) / sizeof(T)) return nullptr;
    return reinterpret_cast<const T*>(data + offset);
  }
};

std::string Hex(const uint8_t* p, size_t n) {
  static const char* kDigits = "0123456789abcdef";
  std::string s;
  for (size_t i = 0; i < n; ++i) {
    s += kDigits[p[i] >> 4];
    s += kDigits[p[i] & 15];
  }
  return s;
}

std::string BuildId(const Image& img, const Elf64_Phdr* ph, int count) {
  for (int i = 0; i < count; ++i) {
    if (ph[i].p_type != PT_NOTE) continue;
    uint64_t off = ph[i].p_offset, end = off + ph[i].p_filesz;
    while (off + sizeof(Elf64_Nhdr) <= end) {
      const auto* n = img.At<Elf64_Nhdr>(off);
      if (n == nullptr) break;
      uint64_t name_at = off + sizeof(Elf64_Nhdr);
      uint64_t desc_at = name_at + ((n->n_namesz + 3) & ~3u);
      const auto* name = img.At<char>(name_at, n->n_namesz);
      const auto* desc = img.At<uint8_t>(desc_at, n->n_descsz);
      if (name == nullptr || desc == nullptr) break;
      if (n->n_type == NT_GNU_BUILD_ID && n->n_namesz == 4 && std::memcmp(name, "GNU", 4) == 0)
        return Hex(desc, n->n_descsz);
      off = desc_at + ((n->n_descsz + 3) & ~3u);
    }
  }
  return "";
}

}  // namespace

ElfSymbols::Module::~Module() {
  for (auto& [p, n] : maps_) munmap(p, n);
}

bool ElfSymbols::Module::AddImage(const std::string& path, bool segments) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  struct stat st {};
  void* p = MAP_FAILED;
  if (fstat(fd, &st) == 0 && st.st_size > static_cast<off_t>(sizeof(Elf64_Ehdr)))
    p = mmap(nullptr, static_cast<size_t>(st.st_size), PROT_READ, MAP_PRIVATE, fd, 0);
  close(fd);
  if (p == MAP_FAILED) return false;
  maps_.emplace_back(p, static_cast<size_t>(st.st_size));
  Image img{static_cast<const uint8_t*>(p), static_cast<size_t>(st.st_size)};
  const auto* eh = img.At<Elf64_Ehdr>(0);
  if (eh == nullptr || std::memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0 ||
      eh->e_ident[EI_CLASS] != ELFCLASS64)
    return false;

  if (segments) {
    if (const auto* ph = img.At<Elf64_Phdr>(eh->e_phoff, eh->e_phnum)) {
      for (int i = 0; i < eh->e_phnum; ++i)
        if (ph[i].p_type == PT_LOAD)
          segments_.push_back({ph[i].p_offset, ph[i].p_vaddr, ph[i].p_filesz});
      build_id_ = BuildId(img, ph, eh->e_phnum);
    }
  }

  const auto* sh = img.At<Elf64_Shdr>(eh->e_shoff, eh->e_shnum);
  if (sh == nullptr) return true;
  // The full table when there is one (it includes the dynamic symbols), else the dynamic one.
  int table = -1;
  for (int i = 0; i < eh->e_shnum; ++i) {
    if (sh[i].sh_type == SHT_SYMTAB) table = i;
    if (sh[i].sh_type == SHT_DYNSYM && table < 0) table = i;
  }
  if (table < 0 || sh[table].sh_link >= eh->e_shnum) return true;
  const Elf64_Shdr& strs = sh[sh[table].sh_link];
  const char* names = img.At<char>(strs.sh_offset, strs.sh_size);
  if (names == nullptr || strs.sh_size == 0 || names[strs.sh_size - 1] != '\0') return true;
  const uint64_t count = sh[table].sh_size / sizeof(Elf64_Sym);
  const auto* sym = img.At<Elf64_Sym>(sh[table].sh_offset, count);
  if (sym == nullptr) return true;
  for (uint64_t i = 0; i < count; ++i) {
    const int type = ELF64_ST_TYPE(sym[i].st_info);
    if ((type != STT_FUNC && type != STT_GNU_IFUNC) || sym[i].st_shndx == SHN_UNDEF ||
        sym[i].st_value == 0 || sym[i].st_name >= strs.sh_size)
      continue;
    syms_.push_back({sym[i].st_value, sym[i].st_size, names + sym[i].st_name});
  }
  return true;
}

std::optional<ElfSymbols::Hit> ElfSymbols::Module::Lookup(uint64_t vaddr) const {
  auto it = std::upper_bound(syms_.begin(), syms_.end(), vaddr,
                             [](uint64_t v, const Sym& s) { return v < s.value; });
  // Aliases share a start; a few steps back also finds a symbol that encloses a smaller one.
  for (int back = 0; back < 8 && it != syms_.begin(); ++back) {
    --it;
    if (vaddr < it->value + std::max<uint64_t>(it->size, 1))
      return Hit{it->name, vaddr - it->value};
  }
  return std::nullopt;
}

std::optional<uint64_t> ElfSymbols::Module::VaddrOfFileOffset(uint64_t file_offset) const {
  for (const Segment& s : segments_)
    if (file_offset >= s.offset && file_offset < s.offset + s.filesz)
      return file_offset - s.offset + s.vaddr;
  return std::nullopt;
}

std::optional<uint64_t> ElfSymbols::Module::FileOffsetOfVaddr(uint64_t vaddr) const {
  for (const Segment& s : segments_)
    if (vaddr >= s.vaddr && vaddr < s.vaddr + s.filesz) return vaddr - s.vaddr + s.offset;
  return std::nullopt;
}

std::optional<uint64_t> ElfSymbols::Module::Find(const std::string& name) const {
  for (const Sym& s : syms_)
    if (std::strncmp(s.name, name.c_str(), name.size()) == 0 &&
        (s.name[name.size()] == '\0' || s.name[name.size()] == '@'))
      return s.value;
  return std::nullopt;
}

const ElfSymbols::Module* ElfSymbols::Load(const std::string& path) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) return nullptr;
  std::string key = path + '\0' + std::to_string(st.st_size) + '\0' + std::to_string(st.st_mtime);
  if (auto it = modules_.find(key); it != modules_.end()) return it->second.get();
  auto m = std::make_unique<Module>();
  if (!m->AddImage(path, true)) {
    modules_[key] = nullptr;  // not ELF: remembered, not retried
    return nullptr;
  }
  // Debian keeps full symbol tables in -dbg/-dbgsym packages, found by build id.
  if (!m->build_id_.empty() && m->build_id_.size() > 2) {
    std::string debug = "/usr/lib/debug/.build-id/" + m->build_id_.substr(0, 2) + "/" +
                        m->build_id_.substr(2) + ".debug";
    if (access(debug.c_str(), R_OK) == 0) m->AddImage(debug, false);
  }
  std::sort(m->syms_.begin(), m->syms_.end(), [](const Module::Sym& a, const Module::Sym& b) {
    return a.value < b.value || (a.value == b.value && a.size > b.size);
  });
  return (modules_[key] = std::move(m)).get();
}

}  // namespace probing::procfs
