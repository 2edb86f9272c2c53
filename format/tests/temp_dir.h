// Test helper: a directory of this test process's own under the system's temp directory,
// created on first use and removed, with everything in it, when the process ends.
#pragma once

#include <unistd.h>

#include <filesystem>
#include <string>

namespace probing::format::testing {

inline std::filesystem::path TestTempDir() {
  struct Dir {
    std::filesystem::path path;
    ~Dir() {
      std::error_code ec;
      std::filesystem::remove_all(path, ec);
    }
  };
  static const Dir dir{std::filesystem::temp_directory_path() /
                       ("probing-test-" + std::to_string(getpid()))};
  std::filesystem::create_directories(dir.path);
  return dir.path;
}

}  // namespace probing::format::testing
