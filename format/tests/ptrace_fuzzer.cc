// libFuzzer target: any bytes as a .ptrace file. The reader maps files, so the input goes
// through a temporary file; every segment it finds is decoded.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

#include "probing/format/ptrace.h"
#include "probing/format/segment.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace probing::format;
  static const std::string path = "/tmp/probing-ptrace-fuzz-" + std::to_string(getpid());
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) return 0;
  std::fwrite(data, 1, size, f);
  std::fclose(f);
  auto r = PtraceReader::Open(path);
  if (r.ok()) {
    for (size_t i = 0; i < r->segments().size(); ++i) (void)r->ReadSegment(i);
  }
  return 0;
}
