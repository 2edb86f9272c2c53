// guarded_copy.h for architectures without a guarded copy routine: the guard is never used and
// the recorder reads interpreter memory with process_vm_readv.
#include "guarded_copy.h"

extern "C" int probing_guarded_copy(void*, const void*, size_t) { return -1; }

namespace probing::recorder {

bool GuardedCopySupported() { return false; }
bool RedirectGuardedFault(void*) { return false; }

}  // namespace probing::recorder
