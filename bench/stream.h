// A realistic stack-sample stream for the format benchmarks: 20 threads, 30-frame stacks,
// sampled at 100 Hz, changing slowly (the innermost line moves often, the top frames now and
// then, the bottom of the stack almost never), as a training job with data-loader threads looks.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "probing/format/segment.h"

namespace probing::bench {

struct StreamFrame {
  uint32_t func = 0;  // index into Stream::funcs
  uint32_t line = 0;
};

class RealisticStream {
 public:
  static constexpr int kThreads = 20;
  static constexpr int kDepth = 30;
  static constexpr int64_t kPeriodNs = 10'000'000;  // 100 Hz

  explicit RealisticStream(uint64_t seed = 1) : rng_(seed) {
    const char* files[] = {"/usr/lib/python3/dist-packages/torch/nn/modules/module.py",
                           "/usr/lib/python3/dist-packages/torch/nn/modules/conv.py",
                           "/usr/lib/python3/dist-packages/torch/autograd/__init__.py",
                           "/usr/lib/python3/dist-packages/torch/optim/sgd.py",
                           "/usr/lib/python3/dist-packages/torch/utils/data/dataloader.py",
                           "/usr/lib/python3.11/threading.py",
                           "/usr/lib/python3.11/queue.py",
                           "/home/user/project/train.py",
                           "/home/user/project/model.py",
                           "/home/user/project/data.py"};
    for (int i = 0; i < 150; ++i) {
      funcs.push_back({"function_" + std::to_string(i) + (i % 3 ? "_forward" : "_impl"),
                       files[i % 10], static_cast<uint32_t>(10 + i * 7)});
    }
    for (int t = 0; t < kThreads; ++t) {
      std::vector<StreamFrame> s;
      for (int d = 0; d < kDepth; ++d) {
        // Outer 10 frames are shared by all threads; the rest are the thread's own.
        uint32_t f = d < 10 ? static_cast<uint32_t>(d) : static_cast<uint32_t>(rng_() % 150);
        s.push_back({f, funcs[f].first_line + static_cast<uint32_t>(rng_() % 20)});
      }
      stacks_.push_back(s);
    }
  }

  struct Func {
    std::string name;
    std::string file;
    uint32_t first_line;
  };
  std::vector<Func> funcs;

  // Advances one tick; returns the stack (outermost first) of each thread.
  const std::vector<std::vector<StreamFrame>>& Tick() {
    for (auto& s : stacks_) {
      uint64_t r = rng_() % 1000;
      if (r < 100) {  // 10%: the innermost line moves
        s.back().line = funcs[s.back().func].first_line + static_cast<uint32_t>(rng_() % 20);
      } else if (r < 120) {  // 2%: the top 1-5 frames change
        int k = 1 + static_cast<int>(rng_() % 5);
        for (int d = kDepth - k; d < kDepth; ++d) {
          uint32_t f = static_cast<uint32_t>(rng_() % 150);
          s[d] = {f, funcs[f].first_line + static_cast<uint32_t>(rng_() % 20)};
        }
      }
    }
    return stacks_;
  }

 private:
  std::mt19937_64 rng_;
  std::vector<std::vector<StreamFrame>> stacks_;
};

}  // namespace probing::bench
