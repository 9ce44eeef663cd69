// Work sharing for the C++ XLA:CPU kernels (depthwise_cpu.cc, batchnorm_cpu.cc).

#ifndef MOBILENET_JAX_MODELS_PARALLEL_FOR_H_
#define MOBILENET_JAX_MODELS_PARALLEL_FOR_H_

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>

#include "xla/ffi/api/ffi.h"

namespace mobilenet_jax {

// Runs body(chunk) for chunk in [0, chunks) on the calling thread and XLA's intra-op
// pool, which take chunks from a shared counter. The caller only ever waits for
// chunks already being worked on, so a busy pool can never deadlock it.
template <typename Body>
void ParallelFor(xla::ffi::ThreadPool& pool, int64_t chunks, const Body& body) {
  struct State {
    std::atomic<int64_t> next{0};
    std::atomic<int64_t> done{0};
  };
  auto state = std::make_shared<State>();
  auto work = [state, chunks, &body] {
    for (int64_t i; (i = state->next.fetch_add(1)) < chunks;) {
      body(i);
      state->done.fetch_add(1, std::memory_order_release);
    }
  };
  const int64_t helpers = std::min<int64_t>(pool.num_threads(), chunks - 1);
  // Late helpers find no chunk left and return at once; `body` is only touched
  // while a chunk is in flight, which the caller waits for below.
  for (int64_t t = 0; t < helpers; ++t) pool.Schedule(decltype(work)(work));
  work();
  while (state->done.load(std::memory_order_acquire) < chunks) std::this_thread::yield();
}

}  // namespace mobilenet_jax

#endif  // MOBILENET_JAX_MODELS_PARALLEL_FOR_H_
