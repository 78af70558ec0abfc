// Lets `ops.cu` compile as ordinary C++ (g++ -include cpu_shim.h -x c++ ops.cu), so the CPU tests
// can run each kernel one emulated thread at a time.
//
// Invariant: the CUDA keywords expand to plain C++ with no effect on arithmetic; the thread index
// is per OS thread (thread_local), set by `psim_set_index` before each kernel call, so test
// threads running in parallel never see each other's index. Compile with -ffp-contract=off and
// without -ffast-math, so each float operation is rounded on its own, as on the GPU with
// fmad=false.
#ifndef PIPESCHED_CPU_SHIM_H
#define PIPESCHED_CPU_SHIM_H

#include <math.h>
#include <string.h>

#define __global__ __attribute__((visibility("default")))
#define __device__
#define __forceinline__ inline

struct psim_dim3 {
    unsigned int x, y, z;
};

static thread_local psim_dim3 blockIdx = {0, 0, 0};
static thread_local psim_dim3 blockDim = {1, 1, 1};
static thread_local psim_dim3 threadIdx = {0, 0, 0};
static thread_local psim_dim3 gridDim = {1, 1, 1};

static inline unsigned int __float_as_uint(float f) {
    unsigned int u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float __uint_as_float(unsigned int u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

// Makes the calling thread thread `thread` of block `block` in a one-dimensional grid of `grid`
// blocks of `block_dim` threads.
extern "C" __attribute__((visibility("default"))) void psim_set_index(unsigned int grid, unsigned int block,
                                                                    unsigned int block_dim, unsigned int thread) {
    gridDim = {grid, 1, 1};
    blockIdx = {block, 0, 0};
    blockDim = {block_dim, 1, 1};
    threadIdx = {thread, 0, 0};
}

#endif
