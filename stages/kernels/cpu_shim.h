// Lets `ops.cu` compile as C11 with the host's C compiler, so the CPU tests can run each kernel
// one emulated thread at a time. The tests drop the `extern "C"` linkage prefix (C has only C
// linkage) and compile `cc -std=c11 -include cpu_shim.h -x c`.
//
// Invariant: the CUDA keywords expand to plain C with no effect on arithmetic; the thread index
// is per OS thread (_Thread_local), set by `psim_set_index` before each kernel call, so test
// threads running in parallel never see each other's index. Compile with -ffp-contract=off and
// without -ffast-math, so each float operation is rounded on its own, as on the GPU with
// fmad=false.
#ifndef PIPESCHED_CPU_SHIM_H
#define PIPESCHED_CPU_SHIM_H

#include <math.h>
#include <stdbool.h>
#include <string.h>

#define __global__ __attribute__((visibility("default")))
#define __device__
#define __forceinline__ inline

typedef struct {
    unsigned int x, y, z;
} psim_dim3;

static _Thread_local psim_dim3 blockIdx = {0, 0, 0};
static _Thread_local psim_dim3 blockDim = {1, 1, 1};
static _Thread_local psim_dim3 threadIdx = {0, 0, 0};
static _Thread_local psim_dim3 gridDim = {1, 1, 1};

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
__attribute__((visibility("default"))) void psim_set_index(unsigned int grid, unsigned int block,
                                                           unsigned int block_dim, unsigned int thread) {
    gridDim = (psim_dim3){grid, 1, 1};
    blockIdx = (psim_dim3){block, 0, 0};
    blockDim = (psim_dim3){block_dim, 1, 1};
    threadIdx = (psim_dim3){thread, 0, 0};
}

#endif
