// x86-64 half of guarded_copy.h: the handler's side of the routine in guarded_copy_x86_64.S.
#include <ucontext.h>

#include <cstdint>

#include "guarded_copy.h"

extern "C" char probing_guarded_copy_fixup[];

namespace probing::recorder {

bool GuardedCopySupported() { return true; }

bool RedirectGuardedFault(void* ucontext) {
  auto* uc = static_cast<ucontext_t*>(ucontext);
  const auto ip = static_cast<uintptr_t>(uc->uc_mcontext.gregs[REG_RIP]);
  const auto begin = reinterpret_cast<uintptr_t>(&probing_guarded_copy);
  const auto fixup = reinterpret_cast<uintptr_t>(&probing_guarded_copy_fixup);
  if (ip < begin || ip >= fixup) return false;
  uc->uc_mcontext.gregs[REG_RIP] = static_cast<greg_t>(fixup);
  return true;
}

}  // namespace probing::recorder
