// Function symbols of ELF files, for naming native frames. Reads the file from disk (never the
// process's memory, never the loader's lists, so no loader lock), prefers its full symbol table,
// then a separate debug file found by build id under /usr/lib/debug, then the dynamic symbols.
// An address is named only when it lies inside a symbol's [value, value + size): a stripped
// static function is reported as unknown, never as its nearest exported neighbour.
//
//   ElfSymbols syms;
//   if (const ElfSymbols::Module* m = syms.Load("/usr/lib/x86_64-linux-gnu/libc.so.6"))
//     if (auto s = m->Lookup(vaddr)) printf("%s+%lu\n", s->name, s->offset);
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace probing::procfs {

class ElfSymbols {
 public:
  struct Hit {
    const char* name;  // mangled, as in the file
    uint64_t offset;   // from the symbol's start
  };

  class Module {
   public:
    ~Module();
    // `vaddr` is an address as the ELF file's program headers number them.
    std::optional<Hit> Lookup(uint64_t vaddr) const;
    // The ELF virtual address of file offset `file_offset` (for turning a mapped address into a
    // vaddr: vaddr = address - map_start + map_offset + (p_vaddr - p_offset) of its segment).
    std::optional<uint64_t> VaddrOfFileOffset(uint64_t file_offset) const;
    // The other way round: the file offset that holds ELF virtual address `vaddr`.
    std::optional<uint64_t> FileOffsetOfVaddr(uint64_t vaddr) const;
    // The ELF virtual address of the function called `name` (a versioned "name@..." matches too).
    std::optional<uint64_t> Find(const std::string& name) const;

   private:
    friend class ElfSymbols;
    struct Sym {
      uint64_t value;
      uint64_t size;
      const char* name;  // inside one of maps_
    };
    struct Segment {
      uint64_t offset, vaddr, filesz;
    };
    // Adds the function symbols of one ELF image (the file itself or its debug file); its
    // PT_LOAD segments too when `segments`. False when it is not a 64-bit ELF file.
    bool AddImage(const std::string& path, bool segments);

    std::vector<Sym> syms_;  // sorted by value
    std::vector<Segment> segments_;
    std::vector<std::pair<void*, size_t>> maps_;  // mmapped files the names point into
    std::string build_id_;                        // hex, empty when the file has none
  };

  // The module for `path`, read on first use and kept (keyed by path, size and mtime). Null when
  // the file is not a readable 64-bit ELF file.
  const Module* Load(const std::string& path);

 private:
  std::map<std::string, std::unique_ptr<Module>> modules_;
};

}  // namespace probing::procfs
