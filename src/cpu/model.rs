//! CPU reference of the whole CPC model's loss (model::cpc), of either modality, composed of
//! the kernels' CPU references walking the same layer list as the GPU's plan
//! (model::layers). Slow and clear: for gradient checks by finite differences and for
//! comparing the GPU forward number for number. The modalities differ only in their items
//! (patches, clips, or embedded sentences) and what follows the encoder (a mean over each
//! patch, each clip's frames and the frame norm, or a mean over each sentence's words); the
//! encoder walk, the GRU and InfoNCE are one code.

use crate::cpu;
use crate::model::audio::FRAME_NORM;
use crate::model::layers::{LayerList, Op, NORM_EPS};
use crate::model::text::EMBEDDING;
use crate::model::{Examples, ParamLayout, Spec};
use crate::ops::elementwise;
use crate::ops::gru::Gru;
use crate::ops::infonce::Infonce;
use crate::ops::layer_norm::LayerNorm;
use crate::ops::matmul::Matmul;
use crate::ops::patches::Patches;

/// Every activation of the encoder's layer `list` over `n` items `x0` [n, C, H, W], walked
/// in list order with the parameters `params` of `layout`; the last is the encoder's output.
fn walk(
    list: &LayerList,
    layout: &ParamLayout,
    params: &[f32],
    x0: Vec<f32>,
    n: usize,
) -> Vec<Vec<f32>> {
    let p = |name: &str| layout.slice(params, name);
    let mut acts: Vec<Vec<f32>> = vec![x0];
    for l in &list.layers {
        let (x, shape) = (&acts[l.x], list.acts[l.y]);
        let mut y = vec![0.0; n * shape.len()];
        match &l.op {
            Op::Conv { param, geom } => cpu::conv2d::forward(
                &geom.conv2d(n, list.acts[l.x]),
                x,
                p(&format!("{param}.weight")),
                p(&format!("{param}.bias")),
                &mut y,
            ),
            Op::Norm { param } => {
                let ln = LayerNorm {
                    n,
                    channels: shape.c,
                    inner: shape.h * shape.w,
                    eps: NORM_EPS,
                };
                let (gamma, beta) = (p(&format!("{param}.weight")), p(&format!("{param}.bias")));
                cpu::layer_norm::forward(&ln, x, gamma, beta, &mut y);
            }
            Op::Relu => cpu::elementwise::launch(elementwise::Op::Relu, x, x, &mut y, 1.0, false),
            Op::Add { other } => {
                cpu::elementwise::launch(elementwise::Op::Add, x, &acts[*other], &mut y, 1.0, false)
            }
        }
        acts.push(y);
    }
    acts
}

/// The f32 values of `inputs`, or the sentences, for the spec's kind.
fn values<'a>(inputs: Examples<'a>) -> &'a [f32] {
    match inputs {
        Examples::Values(x) => x,
        Examples::Sentences(_) => panic!("an image or audio model takes f32 examples"),
    }
}

/// The vectors z [B * positions, D] of a batch of inputs (crops [B, 3, S, S], clips
/// [B, L], or B passages of L sentences), in the layout of `spec.sequences(batch)`: the
/// encoder's layer list walked over every item (an image's patches, cut with the jitter of
/// `seed`; a clip as it is; each sentence's embedded words [E, 1, W], PAD's positions 0),
/// then for vision the mean over each patch's final activation, for audio each clip's
/// [D, T] transposed into its T frames and, with the frame norm, each frame normalised over
/// its D channels, for text the mean over each sentence's words (w < its length).
///
/// # Panics
///
/// When the examples are not of the spec's kind (f32 for vision and audio, sentences for
/// text): a reference for tests, it has no error path.
pub fn encode<'a>(
    spec: impl Into<Spec>,
    params: &[f32],
    inputs: impl Into<Examples<'a>>,
    batch: usize,
    seed: u32,
) -> Vec<f32> {
    let (spec, inputs) = (spec.into(), inputs.into());
    let layout = ParamLayout::new(&spec);
    let n = batch * spec.items();
    let x0 = match &spec {
        Spec::Text(t) => {
            let Examples::Sentences(s) = inputs else {
                panic!("a text model takes sentences");
            };
            assert_eq!(s.sentences(), n, "B passages of L sentences");
            let lookup = t.embedding(n);
            let table = layout.slice(params, &format!("{EMBEDDING}.weight"));
            let mut x0 = vec![0.0; lookup.out_shape().iter().product()];
            cpu::embedding::forward(&lookup, s.ids(), table, &mut x0);
            x0
        }
        Spec::Vision(v) => {
            let geometry = Patches {
                batch,
                grid: v.grid,
                patch: v.patch(),
                jitter: v.jitter,
            };
            cpu::patches::forward(&geometry, values(inputs), seed)
        }
        Spec::Audio(_) => values(inputs).to_vec(),
    };
    let list = spec.layers();
    let out = &walk(&list, &layout, params, x0, n)[list.output()];
    let last = list.output_shape();
    let (d, positions) = (last.c, last.h * last.w);
    let mut z = vec![0.0; spec.sequences(batch).rows() * d];
    match &spec {
        Spec::Vision(_) => cpu::mean_pool::forward(out, [n, d, positions], &mut z),
        Spec::Audio(_) => cpu::transpose::forward(out, [n, d, positions], &mut z),
        Spec::Text(_) => {
            let Examples::Sentences(s) = inputs else {
                unreachable!("checked by the lookup")
            };
            cpu::masked_mean::forward(out, s.lengths(), [n, d, positions], &mut z)
        }
    }
    if let Some(ln) = spec.frame_norm(batch * spec.positions()) {
        let frames = z.clone();
        let gamma = layout.slice(params, &format!("{FRAME_NORM}.weight"));
        let beta = layout.slice(params, &format!("{FRAME_NORM}.bias"));
        cpu::layer_norm::forward(&ln, &frames, gamma, beta, &mut z);
    }
    z
}

/// The GRU's weights in `params`.
fn gru_weights(layout: &ParamLayout, params: &[f32]) -> cpu::gru::GruWeights {
    let w = |name: &str| layout.slice(params, name).to_vec();
    cpu::gru::GruWeights {
        weight_ih: w("gru.weight_ih_l0"),
        weight_hh: w("gru.weight_hh_l0"),
        bias_ih: w("gru.bias_ih_l0"),
        bias_hh: w("gru.bias_hh_l0"),
    }
}

/// The vectors z [rows, D] of a batch ([`encode`]) and the GRU's contexts c [rows, H]
/// along each sequence of `spec.sequences(batch)`.
pub fn context<'a>(
    spec: impl Into<Spec>,
    params: &[f32],
    inputs: impl Into<Examples<'a>>,
    batch: usize,
    seed: u32,
) -> (Vec<f32>, Vec<f32>) {
    let spec = spec.into();
    let layout = ParamLayout::new(&spec);
    let z = encode(&spec, params, inputs, batch, seed);
    let gru = Gru {
        seq: spec.sequences(batch),
        input: spec.dim(),
        hidden: spec.hidden(),
    };
    let mut c = vec![0.0; gru.seq.rows() * gru.hidden];
    cpu::gru::forward(&gru, &z, &gru_weights(&layout, params), &mut c);
    (z, c)
}

/// The loss, per-step losses and accuracies of a batch, as the GPU computes them: each
/// head's predictions from the contexts of its queries, scored against every vector z of
/// the batch.
pub fn loss<'a>(
    spec: impl Into<Spec>,
    params: &[f32],
    inputs: impl Into<Examples<'a>>,
    batch: usize,
    seed: u32,
) -> cpu::infonce::InfonceReference {
    let spec = spec.into();
    let layout = ParamLayout::new(&spec);
    let (d, h) = (spec.dim(), spec.hidden());
    let (z, c) = context(&spec, params, inputs, batch, seed);
    let inf = Infonce::new(spec.sequences(batch), d, spec.offsets().to_vec());
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
