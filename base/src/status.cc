#include "probing/base/status.h"

#include <cstring>

namespace probing {

Status ErrnoStatus(const std::string& what, int err) {
  char buf[256];
  // GNU strerror_r: thread-safe, returns a pointer to the message (maybe not into buf).
  return Internal(what + ": " + strerror_r(err, buf, sizeof buf));
}

}  // namespace probing
