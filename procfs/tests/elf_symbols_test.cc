#include "probing/procfs/elf_symbols.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>

namespace probing::procfs {
namespace {

// Not inlined, not static: the test binary's symbol table names it.
extern "C" __attribute__((noinline, used)) int ProbingElfSymbolsTestTarget(int x) {
  return x * 3 + 1;
}

struct Where {
  std::string path;
  uint64_t file_offset = 0;
};

// The mapped file and file offset of an address in this process.
Where Locate(uintptr_t addr) {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    std::istringstream ls(line);
    std::string range, perms, offset, dev, inode, path;
    ls >> range >> perms >> offset >> dev >> inode >> path;
    uintptr_t start = std::stoull(range, nullptr, 16);
    uintptr_t end = std::stoull(range.substr(range.find('-') + 1), nullptr, 16);
    if (addr >= start && addr < end) return {path, addr - start + std::stoull(offset, nullptr, 16)};
  }
  return {};
}

TEST(ElfSymbols, NamesAFunctionOfThisBinaryWithItsOffset) {
  auto addr = reinterpret_cast<uintptr_t>(&ProbingElfSymbolsTestTarget) + 2;
  Where w = Locate(addr);
  ASSERT_FALSE(w.path.empty());
  ElfSymbols syms;
  const ElfSymbols::Module* m = syms.Load(w.path);
  ASSERT_NE(m, nullptr);
  auto vaddr = m->VaddrOfFileOffset(w.file_offset);
  ASSERT_TRUE(vaddr.has_value());
  auto hit = m->Lookup(*vaddr);
  ASSERT_TRUE(hit.has_value());
  EXPECT_STREQ(hit->name, "ProbingElfSymbolsTestTarget");
  EXPECT_EQ(hit->offset, 2u);
  EXPECT_EQ(syms.Load(w.path), m);  // kept
}

TEST(ElfSymbols, FindsAFunctionByNameAndItsFileOffset) {
  auto addr = reinterpret_cast<uintptr_t>(&ProbingElfSymbolsTestTarget);
  Where w = Locate(addr);
  ElfSymbols syms;
  const ElfSymbols::Module* m = syms.Load(w.path);
  ASSERT_NE(m, nullptr);
  auto vaddr = m->Find("ProbingElfSymbolsTestTarget");
  ASSERT_TRUE(vaddr.has_value());
  EXPECT_EQ(m->VaddrOfFileOffset(w.file_offset), vaddr);
  EXPECT_EQ(m->FileOffsetOfVaddr(*vaddr), w.file_offset);
  EXPECT_FALSE(m->Find("ProbingElfSymbolsTestTarge").has_value());  // whole names only
  EXPECT_FALSE(m->Find("no_such_function_here").has_value());
}

TEST(ElfSymbols, AnAddressOutsideEverySymbolIsUnnamed) {
  Where w = Locate(reinterpret_cast<uintptr_t>(&ProbingElfSymbolsTestTarget));
  ElfSymbols syms;
  const ElfSymbols::Module* m = syms.Load(w.path);
  ASSERT_NE(m, nullptr);
  EXPECT_FALSE(m->Lookup(1).has_value());  // below every symbol
  EXPECT_FALSE(m->Lookup(UINT64_MAX / 2).has_value());
}

TEST(ElfSymbols, FilesThatAreNotElfAreRefused) {
  ElfSymbols syms;
  EXPECT_EQ(syms.Load("/proc/self/status"), nullptr);
  EXPECT_EQ(syms.Load("/no/such/file"), nullptr);
  const std::string text = ::testing::TempDir() + "/not_elf.txt";
  std::ofstream(text) << std::string(200, 'x');
  EXPECT_EQ(syms.Load(text), nullptr);
}

TEST(ElfSymbols, TruncatedOrDamagedFilesNeverReadOutOfBounds) {
  Where w = Locate(reinterpret_cast<uintptr_t>(&ProbingElfSymbolsTestTarget));
  std::ifstream in(w.path, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ASSERT_GT(bytes.size(), 4096u);
  const std::string path = ::testing::TempDir() + "/damaged.so";
  for (size_t cut : {size_t{65}, size_t{200}, size_t{4096}, bytes.size() / 2, bytes.size() - 1}) {
    std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes.substr(0, cut);
    ElfSymbols syms;
    if (const ElfSymbols::Module* m = syms.Load(path)) m->Lookup(0x1000);
  }
  std::string flipped = bytes;  // section and program header offsets far past the end
  for (size_t at : {size_t{0x20}, size_t{0x28}})
    for (size_t i = 0; i < 8; ++i) flipped[at + i] = '\x7f';
  std::ofstream(path, std::ios::binary | std::ios::trunc) << flipped;
  ElfSymbols syms;
  const ElfSymbols::Module* m = syms.Load(path);
  ASSERT_NE(m, nullptr);
  EXPECT_FALSE(m->Lookup(0x1000).has_value());
}

}  // namespace
}  // namespace probing::procfs
