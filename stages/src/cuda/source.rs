//! The CUDA C source of the element-wise kernels (`kernels/ops.cu`), the table of their
//! signatures, and the launch shape they expect.
//!
//! Invariants: [`KERNELS`] lists exactly the `extern "C" __global__` kernels of [`OPS_CU`], each
//! with its parameter types in order (a test parses the source to hold this), so a launcher
//! that builds its arguments from the table passes what the kernel reads. Every kernel returns
//! early for an index past its range, so a [`launch_1d`] grid may overshoot by up to one block.
//! The source is compiled with [`NVRTC_OPTIONS`], which make every float operation one IEEE
//! rounding, as on the CPU.

/// The kernel source, compiled at run time by NVRTC.
pub(crate) const OPS_CU: &str = include_str!("../../kernels/ops.cu");

/// NVRTC options that keep the kernels bit-identical to the CPU code: no fused multiply-add,
/// IEEE division and square root, subnormals kept.
pub(crate) const NVRTC_OPTIONS: &[&str] = &["--fmad=false", "--prec-div=true", "--prec-sqrt=true", "--ftz=false"];

/// Threads per block of every launch.
pub(crate) const BLOCK: u32 = 256;

/// The type of one kernel parameter, as the launcher must pass it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Arg {
    /// `const float*`
    PtrF32,
    /// `float*`
    PtrF32Mut,
    /// `const unsigned short*` (bf16 or f16 bits)
    PtrU16,
    /// `unsigned short*`
    PtrU16Mut,
    /// `unsigned int`
    U32,
    /// `unsigned long long`
    U64,
    /// `float`
    F32,
}

use Arg::*;

/// Every kernel of [`OPS_CU`] with its parameter types, in order.
pub(crate) const KERNELS: &[(&str, &[Arg])] = &[
    ("k_add_assign", &[PtrF32Mut, PtrF32, U32]),
    ("k_add_bias", &[PtrF32Mut, PtrF32, U32, U32]),
    ("k_column_sums", &[PtrF32, PtrF32Mut, U32, U32]),
    ("k_sub", &[PtrF32, PtrF32, PtrF32Mut, U32]),
    ("k_sum_squares", &[PtrF32, PtrF32Mut, U32]),
    ("k_mean", &[PtrF32, PtrF32Mut, U32]),
    ("k_divide", &[PtrF32Mut, U32, F32]),
    ("k_scale", &[PtrF32Mut, U32, F32]),
    ("k_gelu_forward", &[PtrF32, PtrF32Mut, U32]),
    ("k_gelu_backward", &[PtrF32, PtrF32Mut, U32]),
    ("k_dropout", &[PtrF32Mut, U32, U64, F32, F32]),
    ("k_layer_norm_forward", &[PtrF32, PtrF32, PtrF32, PtrF32Mut, PtrF32Mut, PtrF32Mut, U32, U32, F32]),
    ("k_layer_norm_backward_input", &[PtrF32, PtrF32, PtrF32, PtrF32, PtrF32Mut, U32, U32]),
    ("k_layer_norm_gamma_grad", &[PtrF32, PtrF32, PtrF32Mut, U32, U32]),
    ("k_causal_softmax", &[PtrF32Mut, U32, U32, U32, F32]),
    ("k_causal_softmax_backward", &[PtrF32, PtrF32Mut, U32, U32, F32]),
    ("k_causal_dropout", &[PtrF32Mut, U32, U32, U32, U64, F32, F32]),
    ("k_embedding", &[PtrF32, PtrF32, PtrF32, PtrF32Mut, U32, U32, U32, U32]),
    ("k_embedding_token_grad", &[PtrF32, PtrF32, PtrF32Mut, U32, U32, U32]),
    ("k_embedding_position_grad", &[PtrF32, PtrF32Mut, U32, U32, U32]),
    ("k_cross_entropy_forward", &[PtrF32, PtrF32, PtrF32Mut, PtrF32Mut, U32, U32]),
    ("k_cross_entropy_backward", &[PtrF32Mut, PtrF32, U32, U32, F32]),
    ("k_sgd_step", &[PtrF32Mut, PtrF32, PtrF32Mut, U32, F32, F32]),
    ("k_adam_step", &[PtrF32Mut, PtrF32, PtrF32Mut, PtrF32Mut, U32, F32, F32, F32, F32, F32, F32]),
    ("k_to_bf16", &[PtrF32, PtrU16Mut, U32]),
    ("k_from_bf16", &[PtrU16, PtrF32Mut, U32]),
    ("k_to_f16", &[PtrF32, PtrU16Mut, U32]),
    ("k_from_f16", &[PtrU16, PtrF32Mut, U32]),
];

/// `(grid, block)` for one thread per item over `n` items: blocks of [`BLOCK`] threads, enough
/// of them to cover `n`, and at least one (a launch cannot have an empty grid).
pub(crate) fn launch_1d(n: u32) -> (u32, u32) {
    (n.div_ceil(BLOCK).max(1), BLOCK)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `(name, parameter types)` of every `extern "C" __global__` kernel in `src`, in order.
    fn parse_kernels(src: &str) -> Vec<(String, Vec<Arg>)> {
        const HEAD: &str = "extern \"C\" __global__ void ";
        let mut out = Vec::new();
        let mut rest = src;
        while let Some(at) = rest.find(HEAD) {
            rest = &rest[at + HEAD.len()..];
            let open = rest.find('(').expect("kernel name is followed by its parameters");
            let close = rest.find(')').expect("parameter list closes");
            let name = rest[..open].trim().to_string();
            let params = rest[open + 1..close].split(',').map(|p| parse_param(&name, p)).collect();
            out.push((name, params));
        }
        out
    }

    /// The type of one parameter such as `const float* x`: everything before its name.
    fn parse_param(kernel: &str, param: &str) -> Arg {
        let words: Vec<&str> = param.split_whitespace().collect();
        let ty = words[..words.len() - 1].join(" ").replace(" *", "*");
        let ty = if let Some(name) = words.last().and_then(|w| w.strip_prefix('*')) {
            assert!(!name.is_empty(), "{kernel}: parameter `{param}` has no name");
            format!("{ty}*")
        } else {
            ty
        };
        match ty.as_str() {
            "const float*" => PtrF32,
            "float*" => PtrF32Mut,
            "const unsigned short*" => PtrU16,
            "unsigned short*" => PtrU16Mut,
            "unsigned int" => U32,
            "unsigned long long" => U64,
            "float" => F32,
            other => panic!("{kernel}: parameter `{param}` has type `{other}`, which has no Arg"),
        }
    }

    #[test]
    fn the_table_matches_the_source() {
        let parsed = parse_kernels(OPS_CU);
        let table: Vec<(String, Vec<Arg>)> = KERNELS.iter().map(|(n, a)| (n.to_string(), a.to_vec())).collect();
        for (name, args) in &parsed {
            let row = table.iter().find(|(n, _)| n == name);
            assert_eq!(row.map(|(_, a)| a), Some(args), "{name}: in ops.cu with {args:?}, KERNELS disagrees");
        }
        for (name, _) in &table {
            assert!(parsed.iter().any(|(n, _)| n == name), "{name} is in KERNELS but not in ops.cu");
        }
        assert_eq!(parsed.len(), table.len(), "a kernel is defined twice");
    }

    #[test]
    fn the_parser_reads_both_pointer_spellings() {
        let src = "extern \"C\" __global__ void k(const float *a, unsigned short* b, unsigned long long c) {}";
        assert_eq!(parse_kernels(src), vec![("k".to_string(), vec![PtrF32, PtrU16Mut, U64])]);
    }

    #[test]
    fn the_source_uses_only_what_nvrtc_and_the_emulation_support() {
        for banned in ["#include", "__syncthreads", "atomic", "__shfl", "__shared__"] {
            assert!(!OPS_CU.contains(banned), "ops.cu must not use `{banned}`");
        }
        let guard = "unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;";
        let row_guard = |v: &str| format!("unsigned int {v} = blockIdx.x * blockDim.x + threadIdx.x;");
        for body in OPS_CU.split("extern \"C\" __global__ void ").skip(1) {
            let name = &body[..body.find('(').unwrap()];
            assert!(
                body.contains(guard) || body.contains(&row_guard("r")) || body.contains(&row_guard("c")),
                "{name} must take its index from the 1-D grid"
            );
        }
    }

    #[test]
    fn nvrtc_options_keep_ieee_arithmetic() {
        for opt in ["--fmad=false", "--prec-div=true", "--prec-sqrt=true", "--ftz=false"] {
            assert!(NVRTC_OPTIONS.contains(&opt), "{opt}");
        }
    }

    #[test]
    fn launch_1d_covers_n_with_less_than_a_block_to_spare() {
        for n in [0u32, 1, 255, 256, 257, 1 << 20] {
            let (grid, block) = launch_1d(n);
            assert_eq!(block, BLOCK);
            let threads = grid as u64 * block as u64;
            assert!(threads >= n as u64, "n = {n}: {grid} x {block} threads");
            if n == 0 {
                assert_eq!(grid, 1, "an empty launch still needs one block");
            } else {
                assert!(threads - (n as u64) < BLOCK as u64, "n = {n}: {} spare threads", threads - n as u64);
            }
        }
    }
}
