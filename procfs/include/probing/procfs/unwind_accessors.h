// libunwind accessors for unwinding a thread from copies of its registers and memory, the way
// the native backtrace (this process) and the injector's safe-point check (another process)
// both do: the caller gives how to find unwind tables and read memory and registers; there are
// no floating-point registers to read, no dynamically registered unwind info, and no resuming.
//
//   static unw_accessors_t a = UnwindAccessors(FindProcInfo, PutUnwindInfo, AccessMem, AccessReg);
//   unw_addr_space_t as = unw_create_addr_space(&a, 0);
#pragma once

#include <libunwind.h>

namespace probing::procfs {

inline unw_accessors_t UnwindAccessors(
    int (*find_proc_info)(unw_addr_space_t, unw_word_t, unw_proc_info_t*, int, void*),
    void (*put_unwind_info)(unw_addr_space_t, unw_proc_info_t*, void*),
    int (*access_mem)(unw_addr_space_t, unw_word_t, unw_word_t*, int, void*),
    int (*access_reg)(unw_addr_space_t, unw_regnum_t, unw_word_t*, int, void*)) {
  unw_accessors_t a{};
  a.find_proc_info = find_proc_info;
  a.put_unwind_info = put_unwind_info;
  a.access_mem = access_mem;
  a.access_reg = access_reg;
  a.get_dyn_info_list_addr = [](unw_addr_space_t, unw_word_t*, void*) { return -UNW_ENOINFO; };
  a.access_fpreg = [](unw_addr_space_t, unw_regnum_t, unw_fpreg_t*, int, void*) {
    return -UNW_EBADREG;
  };
  a.resume = [](unw_addr_space_t, unw_cursor_t*, void*) { return -UNW_EINVAL; };
  return a;
}

}  // namespace probing::procfs
