#!/usr/bin/env bash
# The GPU check in one command.
#
#   scripts/gpu-check.sh build        on any machine (no CUDA toolkit needed): builds, in release
#                                     mode, the GPU test binary (tests/gpu.rs), `pipesched` and
#                                     `pipesched-bench` into <target dir>/gpu-check/
#   scripts/gpu-check.sh run [DIR]    on a machine with an NVIDIA GPU (driver, cuBLAS and NVRTC
#                                     on the loader path): runs them from <target dir>/gpu-check/
#                                     (the GPU tests with --ignored: they are ignored elsewhere)
#                                     and writes every output into DIR (default gpu-check-results/)
#   scripts/gpu-check.sh [DIR]        both, on the GPU machine
#
# <target dir> is cargo's: $CARGO_TARGET_DIR, or target/. `run` needs no Rust toolchain, so the
# binaries can be built where there is no GPU and copied.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${CARGO_TARGET_DIR:-target}/gpu-check

build() {
    mkdir -p "$bin"
    cargo build --locked --release -p pipesched -p pipesched-bench --bins
    # Where cargo puts what it builds, whatever sets it (CARGO_TARGET_DIR, a config file).
    local target
    target=$(cargo metadata --locked --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
    local log
    log=$(cargo test --locked --release -p pipesched --test gpu --no-run 2>&1) || { echo "$log"; exit 1; }
    local test_bin
    test_bin=$(echo "$log" | sed -n 's/.*Executable tests\/gpu\.rs (\(.*\))$/\1/p' | tail -n 1)
    if [ -z "$test_bin" ] || [ -z "$target" ]; then
        echo "gpu-check: could not find the GPU test binary or the target folder in cargo's output:" >&2
        echo "$log" >&2
        exit 1
    fi
    cp "$test_bin" "$bin/gpu-tests"
    cp "$target/release/pipesched" "$target/release/pipesched-bench" "$bin/"
    # Without debug info the three fit in a few tens of MiB, small enough to copy to a GPU host.
    if command -v strip > /dev/null; then
        strip "$bin/gpu-tests" "$bin/pipesched" "$bin/pipesched-bench"
    fi
    echo "gpu-check: built $(ls "$bin" | tr '\n' ' ')in $bin"
}

run() {
    local out=${1:-gpu-check-results}
    for f in gpu-tests pipesched pipesched-bench; do
        if [ ! -x "$bin/$f" ]; then
            echo "gpu-check: $bin/$f is missing; run 'scripts/gpu-check.sh build' first" >&2
            exit 1
        fi
    done
    mkdir -p "$out"
    (nvidia-smi || echo "nvidia-smi not found") > "$out/nvidia-smi.txt" 2>&1
    "$bin/pipesched" devices | tee "$out/devices.txt"
    if ! "$bin/pipesched" run --model tiny --schedule 1f1b -p 2 -m 4 --steps 1 --devices cuda:0,cuda:0 \
        --no-compare > "$out/probe.txt" 2>&1; then
        echo "gpu-check: stages cannot run on cuda:0 here:" >&2
        cat "$out/probe.txt" >&2
        exit 1
    fi
    local status=0
    "$bin/gpu-tests" --ignored --nocapture --test-threads=1 2>&1 | tee "$out/gpu-tests.txt" || status=1
    for model in gpt-small small medium; do
        "$bin/pipesched-bench" --model "$model" --devices cuda:0,cuda:0 --out "$out/bench-$model" 2>&1 \
            | tee "$out/bench-$model.txt" || status=1
    done
    "$bin/pipesched-bench" --model small --devices cuda:0,cuda:0 --precision bf16 --out "$out/bench-small-bf16" 2>&1 \
        | tee "$out/bench-small-bf16.txt" || status=1
    "$bin/pipesched" run --model small --schedule 1f1b -p 2 -m 8 --steps 5 --devices cuda:0,cuda:0 --verify \
        --plot --trace --out "$out/run-1f1b" 2>&1 | tee "$out/run-1f1b.txt" || status=1
    "$bin/pipesched" run --model gpt-small --schedule 1f1b -p 2 -m 8 --steps 5 --devices cuda:0,cuda:0 --verify \
        --recompute selective --out "$out/run-gpt-small" 2>&1 | tee "$out/run-gpt-small.txt" || status=1
    echo "gpu-check: results in $out (status $status)"
    exit $status
}

case "${1:-}" in
    build) build ;;
    run) run "${2:-}" ;;
    *) build && run "${1:-}" ;;
esac
