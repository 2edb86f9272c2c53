#include "safe_point.h"

#include <libunwind.h>
#include <sys/ptrace.h>
#include <sys/uio.h>
#include <sys/user.h>

#include <array>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <unordered_map>

#include "probing/procfs/unwind_accessors.h"

// libunwind's search of a binary-search .eh_frame_hdr table, exported but not declared.
extern "C" int _Ux86_64_dwarf_search_unwind_table(unw_addr_space_t as, unw_word_t ip,
                                                  unw_dyn_info_t* di, unw_proc_info_t* pi,
                                                  int need_unwind_info, void* arg);

namespace probing::injector {
namespace {

constexpr int kMaxFrames = 256;

bool StartsWith(const std::string& s, const char* prefix) {
  return s.compare(0, std::char_traits<char>::length(prefix), prefix) == 0;
}

bool IsLoader(const std::string& file_base) {
  return StartsWith(file_base, "ld-linux") || StartsWith(file_base, "ld-2.") ||
         StartsWith(file_base, "ld64.so");
}

// The files whose function names the rule reads (only these: naming a frame of libtorch would
// load its symbol table, tens of milliseconds with the thread stopped).
bool IsLibc(const std::string& file_base) {
  return StartsWith(file_base, "libc.so") || StartsWith(file_base, "libc-2.") ||
         StartsWith(file_base, "libpthread") || StartsWith(file_base, "libdl");
}

}  // namespace

bool FrameHoldsLock(const std::string& file_base, const std::string& symbol) {
  // The loader runs with its lock held (dlopen, dlclose, lazy binding, constructors).
  if (IsLoader(file_base)) return true;
  if (!IsLibc(file_base)) return false;
  // Unnamed libc frames are static helpers; those of malloc and the loader are always called
  // from a named entry point below them, which the rule sees.
  static const std::array<const char*, 16> kLocking = {
      "malloc", "free", "calloc", "realloc", "memalign", "valloc", "_int_",  "arena",
      "tcache", "dl",   "fork",   "_IO_",    "printf",   "exit",   "setenv", "pthread_create"};
  for (const char* word : kLocking)
    if (symbol.find(word) != std::string::npos) return true;
  return symbol.find("putenv") != std::string::npos || symbol.find("atfork") != std::string::npos;
}

namespace {

// What libunwind reads through our accessors while judging one stopped thread: its registers,
// its memory (a page at a time with process_vm_readv, kept for the one unwind: the thread is
// stopped, and stacks and unwind tables do not change under us), and each module's
// .eh_frame_hdr, located from the ELF file once and searched by libunwind in the target's memory.
struct UnwindContext {
  pid_t tid;
  ProcessImage* image;
  user_regs_struct regs;
  std::unordered_map<uintptr_t, std::array<uint8_t, 4096>> pages;
};

bool ReadWord(UnwindContext& c, uintptr_t addr, unw_word_t* out) {
  uint8_t bytes[sizeof(unw_word_t)];
  for (size_t i = 0; i < sizeof bytes;) {
    const uintptr_t page = (addr + i) & ~uintptr_t{4095};
    auto it = c.pages.find(page);
    if (it == c.pages.end()) {
      std::array<uint8_t, 4096> buf;
      iovec local{buf.data(), buf.size()};
      iovec remote{reinterpret_cast<void*>(page), buf.size()};
      if (process_vm_readv(c.tid, &local, 1, &remote, 1, 0) != static_cast<ssize_t>(buf.size())) {
        // Not readable as a whole page (or process_vm_readv is forbidden): one word by ptrace.
        errno = 0;
        long w = ptrace(PTRACE_PEEKDATA, c.tid, reinterpret_cast<void*>(addr), nullptr);
        if (errno != 0) return false;
        std::memcpy(out, &w, sizeof *out);
        return true;
      }
      it = c.pages.emplace(page, buf).first;
    }
    const size_t at = (addr + i) - page;
    const size_t n = std::min(sizeof bytes - i, it->second.size() - at);
    std::memcpy(bytes + i, it->second.data() + at, n);
    i += n;
  }
  std::memcpy(out, bytes, sizeof bytes);
  return true;
}

int AccessMem(unw_addr_space_t, unw_word_t addr, unw_word_t* val, int write, void* arg) {
  if (write != 0) return -UNW_EINVAL;
  return ReadWord(*static_cast<UnwindContext*>(arg), addr, val) ? 0 : -UNW_EINVAL;
}

int AccessReg(unw_addr_space_t, unw_regnum_t reg, unw_word_t* val, int write, void* arg) {
  if (write != 0) return -UNW_EBADREG;
  const user_regs_struct& r = static_cast<UnwindContext*>(arg)->regs;
  switch (reg) {
    case UNW_X86_64_RAX: *val = r.rax; break;
    case UNW_X86_64_RDX: *val = r.rdx; break;
    case UNW_X86_64_RCX: *val = r.rcx; break;
    case UNW_X86_64_RBX: *val = r.rbx; break;
    case UNW_X86_64_RSI: *val = r.rsi; break;
    case UNW_X86_64_RDI: *val = r.rdi; break;
    case UNW_X86_64_RBP: *val = r.rbp; break;
    case UNW_X86_64_RSP: *val = r.rsp; break;
    case UNW_X86_64_R8: *val = r.r8; break;
    case UNW_X86_64_R9: *val = r.r9; break;
    case UNW_X86_64_R10: *val = r.r10; break;
    case UNW_X86_64_R11: *val = r.r11; break;
    case UNW_X86_64_R12: *val = r.r12; break;
    case UNW_X86_64_R13: *val = r.r13; break;
    case UNW_X86_64_R14: *val = r.r14; break;
    case UNW_X86_64_R15: *val = r.r15; break;
    case UNW_X86_64_RIP: *val = r.rip; break;
    default: return -UNW_EBADREG;
  }
  return 0;
}

void PutUnwindInfo(unw_addr_space_t, unw_proc_info_t* pi, void*) {
  std::free(pi->unwind_info);
  pi->unwind_info = nullptr;
}

int FindProcInfo(unw_addr_space_t as, unw_word_t ip, unw_proc_info_t* pi, int need_unwind_info,
                 void* arg) {
  auto& c = *static_cast<UnwindContext*>(arg);
  const Mapping* m = c.image->At(ip);
  if (m == nullptr || m->path.empty() || !m->exec) return -UNW_ENOINFO;
  auto hdr_vaddr = c.image->EhFrameHdr(m->path);
  if (!hdr_vaddr) return -UNW_ENOINFO;
  auto hdr = c.image->AddressOfVaddr(m->path, *hdr_vaddr);
  unw_word_t head = 0, count = 0;
  if (!hdr || !ReadWord(c, *hdr, &head) || !ReadWord(c, *hdr + 8, &count)) return -UNW_ENOINFO;
  // version 1; eh_frame_ptr 4 bytes (pcrel/datarel sdata4/udata4); fde_count udata4; the
  // table datarel|sdata4, the only layout libunwind searches.
  const uint8_t version = head & 0xff, ptr_enc = (head >> 8) & 0xff,
                count_enc = (head >> 16) & 0xff, table_enc = (head >> 24) & 0xff;
  if (version != 1 || (ptr_enc & 0x0f) != 0x0b || count_enc != 0x03 || table_enc != 0x3b)
    return -UNW_ENOINFO;
  const uint32_t fde_count = static_cast<uint32_t>(count & 0xffffffff);
  unw_dyn_info_t di{};
  di.start_ip = m->start;
  di.end_ip = m->end;
  di.format = UNW_INFO_FORMAT_REMOTE_TABLE;
  di.u.rti.segbase = *hdr;
  di.u.rti.table_len = fde_count * 8 / sizeof(unw_word_t);
  di.u.rti.table_data = *hdr + 12;
  return _Ux86_64_dwarf_search_unwind_table(as, ip, &di, pi, need_unwind_info, arg);
}

}  // namespace

SafePoint CheckSafePoint(pid_t tid, ProcessImage& image) {
  SafePoint out;
  UnwindContext ctx{tid, &image, {}, {}};
  if (ptrace(PTRACE_GETREGS, tid, nullptr, &ctx.regs) != 0) {
    out.why = "its registers could not be read";
    return out;
  }
  static unw_accessors_t accessors =
      procfs::UnwindAccessors(FindProcInfo, PutUnwindInfo, AccessMem, AccessReg);
  unw_addr_space_t as = unw_create_addr_space(&accessors, 0);
  unw_cursor_t cursor;
  if (as == nullptr || unw_init_remote(&cursor, as, &ctx) != 0) {
    if (as != nullptr) unw_destroy_addr_space(as);
    out.why = "its stack could not be unwound";
    return out;
  }
  unw_set_caching_policy(as, UNW_CACHE_NONE);
  out.safe = true;
  for (int n = 0; n < kMaxFrames; ++n) {
    unw_word_t ip = 0;
    if (unw_get_reg(&cursor, UNW_REG_IP, &ip) != 0 || ip == 0) break;
    ++out.frames;
    // A return address may lie just past its function (a call to a noreturn function).
    const uintptr_t pc = n == 0 ? ip : ip - 1;
    if (const Mapping* m = image.At(pc); m != nullptr && !m->path.empty()) {
      const std::string base = m->path.substr(m->path.rfind('/') + 1);
      const std::string symbol = IsLibc(base) ? image.SymbolAt(pc) : "";
      if (FrameHoldsLock(base, symbol)) {
        out.safe = false;
        out.why = "in " + (symbol.empty() ? "code" : symbol) + " (" + base + ")";
        break;
      }
    }
    if (unw_step(&cursor) <= 0) break;
  }
  unw_destroy_addr_space(as);
  return out;
}

}  // namespace probing::injector
