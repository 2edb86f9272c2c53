#include "probing/format/status.h"

#include <cstring>

namespace probing {

Status ErrnoStatus(const std::string& what, int err) {
  return Internal(what + ": " + std::strerror(err));
}

}  // namespace probing
