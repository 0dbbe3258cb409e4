use cpc::gpu::Tensor;
use cpc::ops::softmax_xent::{self, SoftmaxXent, ROW_STATS};
use cpc::{cpu, Error};

use crate::common::*;

/// Rows that are not a multiple of the workgroup of 64, and class counts below and above 5;
/// rows of classes shorter than lavapipe's subgroup of 8 and longer than any subgroup (128).
const SHAPES: &[(usize, usize)] = &[(1, 1), (7, 3), (65, 10), (130, 37), (300, 5), (9, 130)];

fn labels_for(sx: &SoftmaxXent, seed: u64) -> Vec<f32> {
    (0..sx.rows)
        .map(|n| ((n as u64 * 7 + seed) % sx.classes as u64) as f32)
        .collect()
}

/// Run the kernel on views that start `pad` elements into their buffers (so the offsets in
/// the uniforms are exercised), outputs NaN-filled, and compare with the reference.
fn check(sx: SoftmaxXent, scores: &[f32], bias: &[f32], labels: &[f32], pad: usize) {
    let view = |data: &[f32], shape: &[usize]| -> Tensor {
        let mut padded = vec![f32::NAN; pad];
        padded.extend_from_slice(data);
        upload(&[padded.len()], &padded).view(pad, shape)
    };
    let nan_view = |shape: &[usize]| -> Tensor {
        let n: usize = shape.iter().product();
        nan_tensor(&[n + pad]).view(pad, shape)
    };
    let (r, c) = (sx.rows, sx.classes);
    let ts = view(scores, &[r, c]);
    let tb = view(bias, &[c]);
    let tl = view(labels, &[r]);
    let td = nan_view(&[r, c]);
    let tr = nan_view(&[r, ROW_STATS]);
    let scale = 1.0 / r as f32;
    run(&[softmax_xent::forward(gpu(), &sx, &ts, &tb, &tl, &td, &tr, scale).unwrap()]);
    let want = cpu::softmax_xent::forward(&sx, scores, bias, labels, scale);
    let stats = read(&tr);
    let what = format!("{sx:?} pad {pad}");
    let loss: Vec<f32> = stats.chunks(3).map(|s| s[0]).collect();
    let want_loss: Vec<f32> = want.loss.iter().map(|&v| v as f32).collect();
    // log of an f32 sum of up to 37 exps, plus the max: a few ulp of the largest logit.
    let big = scores.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    assert_close(&format!("{what} loss"), &loss, &want_loss, 1e-5 * big, 1e-5);
    // Ranks are exact comparisons of identically rounded f32 sums: equal.
    let flags = |col: usize| -> Vec<f32> { stats.chunks(3).map(|s| s[col]).collect() };
    let as_f32 = |v: &[bool]| -> Vec<f32> { v.iter().map(|&b| b as u32 as f32).collect() };
    assert_close(
        &format!("{what} top1"),
        &flags(1),
        &as_f32(&want.top1),
        0.0,
        0.0,
    );
    assert_close(
        &format!("{what} top5"),
        &flags(2),
        &as_f32(&want.top5),
        0.0,
        0.0,
    );
    let want_d: Vec<f32> = want.dlogits.iter().map(|&v| v as f32).collect();
    // Soft-max entries in f32 (a few ulp of 1), times the scale that bounds every entry;
    // logits rounded to f32 (scores + bias) shift each exp by up to a few ulp of the logit.
    let rtol = 1e-5 + 4.0 * big * f32::EPSILON;
    assert_close(
        &format!("{what} dlogits"),
        &read(&td),
        &want_d,
        1e-6 * scale,
        rtol,
    );
}

#[test]
fn softmax_xent_forward_matches_reference() {
    on_both_reductions(|| {
        for (seed, &(rows, classes)) in SHAPES.iter().enumerate() {
            let sx = SoftmaxXent { rows, classes };
            let mut r = rng(seed as u64);
            let scores: Vec<f32> = random(&mut r, rows * classes)
                .iter()
                .map(|v| 3.0 * v)
                .collect();
            let bias = random(&mut r, classes);
            let labels = labels_for(&sx, seed as u64);
            check(sx, &scores, &bias, &labels, 0);
            check(sx, &scores, &bias, &labels, 5);
        }
    });
}

#[test]
fn softmax_xent_rows_for_any_subgroup_size() {
    // Workgroups that take one row (seven subgroups idle) or two rows per subgroup.
    for max in [128, 4] {
        on_device(gpu_assuming_subgroups_up_to(max), || {
            for (seed, &(rows, classes)) in [(65, 10), (9, 130), (7, 3)].iter().enumerate() {
                let sx = SoftmaxXent { rows, classes };
                let mut r = rng(seed as u64);
                let scores = random(&mut r, rows * classes);
                let labels = labels_for(&sx, seed as u64);
                check(sx, &scores, &random(&mut r, classes), &labels, 0);
            }
        });
    }
}

#[test]
fn softmax_xent_ties_count_for_the_target_and_large_logits_stay_finite() {
    on_both_reductions(|| {
        // Whole-number scores and zero bias: many exact ties, which count as hits on both sides.
        let sx = SoftmaxXent {
            rows: 70,
            classes: 8,
        };
        let mut r = rng(9);
        let scores: Vec<f32> = random(&mut r, 70 * 8)
            .iter()
            .map(|v| (2.0 * v).round())
            .collect();
        let labels = labels_for(&sx, 3);
        check(sx, &scores, &[0.0; 8], &labels, 0);
        // Logits near 1000: exp overflows f32 without the max subtraction.
        let big: Vec<f32> = random(&mut r, 70 * 8)
            .iter()
            .map(|v| 1000.0 + 5.0 * v)
            .collect();
        check(sx, &big, &random(&mut r, 8), &labels, 0);
    });
}

#[test]
fn softmax_xent_backward_reference_matches_finite_differences() {
    // dlogits with scale 1 / rows is the gradient of the mean loss with respect to the
    // scores, and its column sums the gradient with respect to the bias.
    let sx = SoftmaxXent {
        rows: 6,
        classes: 4,
    };
    let mut r = rng(4);
    let scores: Vec<f32> = random(&mut r, 24).iter().map(|v| 2.0 * v).collect();
    let bias = random(&mut r, 4);
    let labels = labels_for(&sx, 1);
    let scale = 1.0 / 6.0;
    let mean_loss =
        |s: &[f32], b: &[f32]| cpu::softmax_xent::forward(&sx, s, b, &labels, scale).means()[0];
    let want = cpu::softmax_xent::forward(&sx, &scores, &bias, &labels, scale);
    let d: Vec<f32> = want.dlogits.iter().map(|&v| v as f32).collect();
    let db: Vec<f32> = (0..4).map(|c| (0..6).map(|n| d[n * 4 + c]).sum()).collect();
    assert_grad(
        "dscores",
        &d,
        &finite_differences(&scores, |s| mean_loss(s, &bias)),
        1e-3,
    );
    assert_grad(
        "dbias",
        &db,
        &finite_differences(&bias, |b| mean_loss(&scores, b)),
        1e-3,
    );
}

#[test]
fn softmax_xent_rejects_mismatched_shapes() {
    let sx = SoftmaxXent {
        rows: 4,
        classes: 3,
    };
    let (s, b, l) = (
        upload(&[4, 3], &[0.0; 12]),
        upload(&[3], &[0.0; 3]),
        upload(&[4], &[0.0; 4]),
    );
    let (d, st) = (nan_tensor(&[4, 3]), nan_tensor(&[4, 2]));
    let err = softmax_xent::forward(gpu(), &sx, &s, &b, &l, &d, &st, 0.25).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            Error::Shape {
                kernel: "softmax_xent",
                ..
            }
        ),
        "{msg}"
    );
    assert!(
        msg.contains("row_stats") && msg.contains("[4, 2]") && msg.contains("[4, 3]"),
        "{msg}"
    );
}
