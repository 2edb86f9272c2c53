// Whether a thread stopped by ptrace may be made to call dlopen: its stack, unwound with
// libunwind from the target's ELF files, must hold no frame of the dynamic loader and none of
// the libc functions that hold a lock dlopen or thread creation takes (malloc's family, dl*,
// fork, stdio, atexit/exit, setenv, pthread_create). The unwind stops at 256 frames or where
// libunwind can go no further; the frames it reached are the ones judged.
#pragma once

#include <sys/types.h>

#include <string>

#include "process_image.h"

namespace probing::injector {

struct SafePoint {
  bool safe = false;
  std::string why;  // when not safe: the frame that holds a lock, e.g. "in malloc (libc.so.6)"
  int frames = 0;   // how many were unwound
};

// `tid` must be ptrace-stopped by us.
SafePoint CheckSafePoint(pid_t tid, ProcessImage& image);

// The rule alone, for one frame: its file's base name and symbol ("" when unnamed).
bool FrameHoldsLock(const std::string& file_base, const std::string& symbol);

}  // namespace probing::injector
