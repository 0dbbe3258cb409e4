//! CPU reference of the whole CPC model's loss (model::cpc), composed of the kernels' CPU
//! references in the same order as the GPU's flat list. Slow and clear: for gradient checks
//! by finite differences and for comparing the GPU forward number for number.

use crate::cpu;
use crate::model::{ModelSpec, ParamLayout};
use crate::ops::conv2d::Conv2d;
use crate::ops::elementwise::Op;
use crate::ops::gru::Gru;
use crate::ops::infonce::Infonce;
use crate::ops::layer_norm::LayerNorm;
use crate::ops::matmul::Matmul;
use crate::ops::patches::Patches;

/// An activation [n, c, side, side].
struct Act {
    data: Vec<f32>,
    c: usize,
    side: usize,
}

struct Encoder<'a> {
    spec: &'a ModelSpec,
    layout: &'a ParamLayout,
    params: &'a [f32],
    n: usize,
}

impl Encoder<'_> {
    fn p(&self, name: &str) -> &[f32] {
        self.layout.slice(self.params, name)
    }

    fn conv(&self, name: &str, x: &Act, cout: usize, k: usize, stride: usize, norm: &str) -> Act {
        let conv = Conv2d::square(self.n, x.c, x.side, cout, k, stride);
        let side = conv.out_hw().0;
        let mut y = vec![0.0; self.n * cout * side * side];
        cpu::conv2d::forward(
            &conv,
            &x.data,
            self.p(&format!("{name}.weight")),
            self.p(&format!("{name}.bias")),
            &mut y,
        );
        let mut out = Act {
            data: y,
            c: cout,
            side,
        };
        if self.spec.layer_norm {
            let ln = LayerNorm {
                n: self.n,
                channels: cout,
                inner: side * side,
                eps: 1e-5,
            };
            let mut y = vec![0.0; out.data.len()];
            cpu::layer_norm::forward(
                &ln,
                &out.data,
                self.p(&format!("{norm}.weight")),
                self.p(&format!("{norm}.bias")),
                &mut y,
            );
            out.data = y;
        }
        out
    }
}

fn relu(x: &Act) -> Act {
    let mut y = vec![0.0; x.data.len()];
    cpu::elementwise::launch(Op::Relu, &x.data, &x.data, &mut y, 1.0, false);
    Act {
        data: y,
        c: x.c,
        side: x.side,
    }
}

/// The patch vectors z [N, D] of a batch of crops [B, 3, S, S].
pub fn encode(
    spec: &ModelSpec,
    params: &[f32],
    crops: &[f32],
    batch: usize,
    seed: u32,
) -> Vec<f32> {
    let layout = ParamLayout::new(spec);
    let (g, p) = (spec.grid, spec.patch());
    let n = batch * g * g;
    let e = Encoder {
        spec,
        layout: &layout,
        params,
        n,
    };
    let geometry = Patches {
        batch,
        grid: g,
        patch: p,
        jitter: spec.jitter,
    };
    let x0 = Act {
        data: cpu::patches::forward(&geometry, crops, seed),
        c: 3,
        side: p,
    };
    let mut a = relu(&e.conv(
        "encoder.stem",
        &x0,
        spec.stem.out,
        spec.stem.kernel,
        spec.stem.stride,
        "encoder.stem_norm",
    ));
    for (i, st) in spec.stages.iter().enumerate() {
        let name = format!("encoder.stages.{i}");
        a = relu(&e.conv(
            &format!("{name}.down"),
            &a,
            st.down.out,
            st.down.kernel,
            st.down.stride,
            &format!("{name}.down_norm"),
        ));
        for j in 0..st.blocks {
            let mut t = relu(&a);
            for l in 0..st.convs_per_block {
                let b = format!("{name}.blocks.{j}");
                t = e.conv(
                    &format!("{b}.convs.{l}"),
                    &t,
                    st.down.out,
                    3,
                    1,
                    &format!("{b}.norms.{l}"),
                );
                if l + 1 < st.convs_per_block {
                    t = relu(&t);
                }
            }
            let mut sum = vec![0.0; a.data.len()];
            cpu::elementwise::launch(Op::Add, &a.data, &t.data, &mut sum, 1.0, false);
            a = Act {
                data: sum,
                c: a.c,
                side: a.side,
            };
        }
    }
    let last = relu(&a);
    let mut z = vec![0.0; n * last.c];
    cpu::mean_pool::forward(&last.data, [n, last.c, last.side * last.side], &mut z);
    z
}

/// The loss, per-step losses and accuracies of a batch, as the GPU computes them.
pub fn loss(
    spec: &ModelSpec,
    params: &[f32],
    crops: &[f32],
    batch: usize,
    seed: u32,
) -> cpu::infonce::InfonceReference {
    let layout = ParamLayout::new(spec);
    let (g, d, h) = (spec.grid, spec.dim(), spec.hidden);
    let n = batch * g * g;
    let z = encode(spec, params, crops, batch, seed);
    let gru = Gru {
        batch,
        grid: g,
        input: d,
        hidden: h,
    };
    let w = cpu::gru::GruWeights {
        weight_ih: layout.slice(params, "gru.weight_ih_l0").to_vec(),
        weight_hh: layout.slice(params, "gru.weight_hh_l0").to_vec(),
        bias_ih: layout.slice(params, "gru.bias_ih_l0").to_vec(),
        bias_hh: layout.slice(params, "gru.bias_hh_l0").to_vec(),
    };
    let mut c = vec![0.0; n * h];
    cpu::gru::forward(&gru, &z, &w, &mut c);
    let inf = Infonce::new(batch, g, d, spec.offsets.clone());
    let preds: Vec<Vec<f32>> = (0..inf.steps())
        .map(|k| {
            let q = inf.queries(k);
            let mut cq = vec![0.0; q * h];
            cpu::copy_rows::gather(&inf.context_rows(k, h), &c, &mut cq, false);
            let mut p = vec![0.0; q * d];
            let wk = layout.slice(params, &format!("heads.{k}.weight"));
            cpu::matmul::forward(&Matmul::new(1, q, d, h).trans_b(true), &cq, wk, &mut p);
            p
        })
        .collect();
    cpu::infonce::forward(&inf, &preds, &z)
}
