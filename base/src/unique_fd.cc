#include "probing/base/unique_fd.h"

#include <unistd.h>

namespace probing {

void UniqueFd::Reset() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

}  // namespace probing
