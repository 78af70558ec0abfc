//! The Zero Bubble paper's profiled settings (Qi, Wan, Huang, Lin, ICLR 2024, Table 9: ms per
//! stage, sequence length 1024) and the bubble rates its Table 5 reports for them (arXiv
//! 2401.10241), shared by the comparison test and the `zero_bubble_table5` example.
// Each includer reads some of the fields.
#![allow(dead_code)]

use pipesched_schedules::{CostModel, StageCost, StageCosts};

/// One setting: the model's hidden size `h` and heads `a`, `p` stages, `m` micro-batches, the
/// times `t_F`, `t_B` (our `I`), `t_W`, `T_comm`, and Table 5's bubble rates of ZB-H1, ZB-H2,
/// ZB-1p and ZB-2p.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    pub model: &'static str,
    pub h: u64,
    pub a: u64,
    pub p: usize,
    pub m: usize,
    pub f: f64,
    pub i: f64,
    pub w: f64,
    pub c: f64,
    pub zb_h1: f64,
    pub zb_h2: f64,
    pub zb_1p: f64,
    pub zb_2p: f64,
}

/// Sequence length of every setting.
const S: u64 = 1024;

#[rustfmt::skip]
pub const SETTINGS: [Setting; 12] = [
    Setting { model: "1.5B", h: 2304, a: 24, p: 8, m: 24, f: 18.522, i: 18.086, w: 9.337, c: 0.601, zb_h1: 0.1585, zb_h2: 0.1083, zb_1p: 0.1585, zb_2p: 0.0433 },
    Setting { model: "1.5B", h: 2304, a: 24, p: 8, m: 32, f: 18.513, i: 18.086, w: 9.331, c: 0.626, zb_h1: 0.1242, zb_h2: 0.0837, zb_1p: 0.1242, zb_2p: 0.0039 },
    Setting { model: "1.5B", h: 2304, a: 24, p: 8, m: 64, f: 18.546, i: 18.097, w: 9.321, c: 0.762, zb_h1: 0.0674, zb_h2: 0.0444, zb_1p: 0.0674, zb_2p: 0.0026 },
    Setting { model: "6.2B", h: 4096, a: 32, p: 8, m: 24, f: 29.718, i: 29.444, w: 19.927, c: 0.527, zb_h1: 0.1323, zb_h2: 0.0698, zb_1p: 0.1323, zb_2p: 0.0029 },
    Setting { model: "6.2B", h: 4096, a: 32, p: 8, m: 32, f: 29.802, i: 29.428, w: 19.530, c: 0.577, zb_h1: 0.1045, zb_h2: 0.0559, zb_1p: 0.1045, zb_2p: 0.0022 },
    Setting { model: "6.2B", h: 4096, a: 32, p: 8, m: 64, f: 29.935, i: 29.621, w: 19.388, c: 0.535, zb_h1: 0.0554, zb_h2: 0.0294, zb_1p: 0.0554, zb_2p: 0.0010 },
    Setting { model: "14.6B", h: 5120, a: 40, p: 16, m: 48, f: 11.347, i: 11.248, w: 8.132, c: 0.377, zb_h1: 0.1397, zb_h2: 0.0672, zb_1p: 0.1397, zb_2p: 0.0066 },
    Setting { model: "14.6B", h: 5120, a: 40, p: 16, m: 64, f: 11.307, i: 11.254, w: 8.101, c: 0.379, zb_h1: 0.1088, zb_h2: 0.0516, zb_1p: 0.1088, zb_2p: 0.0054 },
    Setting { model: "14.6B", h: 5120, a: 40, p: 16, m: 128, f: 11.325, i: 11.308, w: 8.109, c: 0.378, zb_h1: 0.0576, zb_h2: 0.0266, zb_1p: 0.0576, zb_2p: 0.0028 },
    Setting { model: "28.3B", h: 6144, a: 48, p: 32, m: 96, f: 10.419, i: 10.207, w: 7.715, c: 0.408, zb_h1: 0.1421, zb_h2: 0.0641, zb_1p: 0.1421, zb_2p: 0.0038 },
    Setting { model: "28.3B", h: 6144, a: 48, p: 32, m: 128, f: 10.408, i: 10.204, w: 7.703, c: 0.408, zb_h1: 0.1106, zb_h2: 0.0490, zb_1p: 0.1106, zb_2p: 0.0029 },
    Setting { model: "28.3B", h: 6144, a: 48, p: 32, m: 256, f: 10.402, i: 10.248, w: 7.698, c: 0.460, zb_h1: 0.0594, zb_h2: 0.0257, zb_1p: 0.0594, zb_2p: 0.0018 },
];

impl Setting {
    /// Bytes `F` keeps per micro-batch, in the paper's unit: `34h + 5as`.
    pub fn act(&self) -> u64 {
        34 * self.h + 5 * self.a * S
    }

    /// The cost model: per-rank times in ms, latency `T_comm`, `34h + 5as` kept by `F` and
    /// `32h` from `I` until `W`.
    pub fn costs(&self) -> CostModel {
        let mut c = CostModel::per_rank(self.f, self.i, self.w).with_latency(self.c);
        c.costs = StageCosts::PerRank(StageCost {
            act_bytes: self.act(),
            w_bytes: 32 * self.h,
            ..StageCost::times(self.f, self.i, self.w)
        });
        c.time_unit = "ms".into();
        c
    }

    /// A limit of `k·p` micro-batches' activations (ZB-1p: k = 1, ZB-2p: k = 2).
    pub fn limit(&self, k: u64) -> u64 {
        k * self.p as u64 * self.act()
    }
}
