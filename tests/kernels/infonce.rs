use cpc::gpu::Tensor;
use cpc::ops::copy_rows;
use cpc::ops::infonce::{self, Infonce, InfonceStats};
use cpc::ops::sequences::Sequences;
use cpc::{cpu, Error};

use crate::common::*;

/// A vision geometry: B images of a G x G grid.
fn grid(batch: usize, g: usize, dim: usize, offsets: Vec<usize>) -> Infonce {
    Infonce::new(Sequences::grid(batch, g), dim, offsets)
}

/// Small geometries: grids with candidate rows of 32, 50 and 300 (B*G*G), and queries (a
/// thread or a subgroup each, workgroups of 64) past one workgroup in the last (240 for
/// offset 2); rows of 4 (shorter than lavapipe's subgroup of 8) and 9 candidates, with 2
/// and 6 queries; audio's one sequence per block (3 clips of 23 frames); and steps unlike
/// the width (T 6, W 3).
fn shapes() -> Vec<Infonce> {
    vec![
        grid(1, 2, 5, vec![1]),
        grid(1, 3, 3, vec![1, 2]),
        grid(2, 4, 6, vec![2, 3]),
        grid(2, 5, 37, vec![2, 3]),
        grid(3, 10, 37, vec![2, 3, 4]),
        Infonce::new(Sequences::frames(3, 23), 9, vec![1, 2, 5]),
        Infonce::new(
            Sequences {
                blocks: 2,
                steps: 6,
                width: 3,
            },
            5,
            vec![1, 4],
        ),
    ]
}

fn random_inputs(inf: &Infonce, seed: u64, spread: f32) -> (Vec<Vec<f32>>, Vec<f32>) {
    let mut r = rng(seed);
    let preds = (0..inf.steps())
        .map(|k| {
            random(&mut r, inf.queries(k) * inf.dim)
                .into_iter()
                .map(|v| v * spread)
                .collect()
        })
        .collect();
    let z = random(&mut r, inf.candidates() * inf.dim);
    (preds, z)
}

fn upload_preds(inf: &Infonce, preds: &[Vec<f32>]) -> Vec<Tensor> {
    preds
        .iter()
        .enumerate()
        .map(|(k, p)| upload(&[inf.queries(k), inf.dim], p))
        .collect()
}

fn max_abs(v: &[f32]) -> f32 {
    v.iter().fold(0.0f32, |m, x| m.max(x.abs()))
}

/// Run the forward on the GPU with every output NaN-filled first, and check it against the
/// CPU reference: the scores, the rows kernel on the GPU's own scores, and the stats.
fn check_forward(inf: &Infonce, preds: &[Vec<f32>], z: &[f32]) -> infonce::InfonceForward {
    let (tp, tz) = (
        upload_preds(inf, preds),
        upload(&[inf.candidates(), inf.dim], z),
    );
    let stats = nan_tensor(&[inf.stats_len()]);
    let fwd = infonce::forward(gpu(), inf, &tp, &tz, &stats).unwrap();
    for t in fwd.scores.iter().chain(&fwd.dscores).chain(&fwd.row_stats) {
        t.fill(gpu(), f32::NAN).unwrap();
    }
    run(&fwd.launches);
    let want = cpu::infonce::forward(inf, preds, z);
    let mut correct_k = Vec::new();
    for k in 0..inf.steps() {
        let what = format!("{inf:?} k={k}");
        let scores = read(&fwd.scores[k]);
        let want_scores: Vec<f32> = want.scores[k].iter().map(|&v| v as f32).collect();
        // f32 dot products of D terms: error ~ sqrt(D) * eps * the largest |term| sum.
        let tol = 1e-5 * (inf.dim as f32).sqrt() * max_abs(&want_scores).max(1.0);
        assert_close(&format!("{what} scores"), &scores, &want_scores, tol, 1e-5);
        // The rows kernel against the reference on the GPU's own scores, so near-ties in
        // the accuracy cannot flip on score rounding.
        let s64: Vec<f64> = scores.iter().map(|&v| v as f64).collect();
        let rows = cpu::infonce::rows(inf, k, &s64);
        let row_stats = read(&fwd.row_stats[k]);
        let (loss, correct): (Vec<f32>, Vec<f32>) =
            row_stats.chunks(2).map(|c| (c[0], c[1])).unzip();
        let want_loss: Vec<f32> = rows.loss.iter().map(|&v| v as f32).collect();
        // log of an f32 sum of up to 300 exps and a subtraction: a few ulp of the terms.
        assert_close(&format!("{what} row loss"), &loss, &want_loss, 2e-5, 2e-5);
        let want_correct: Vec<f32> = rows.correct.iter().map(|&c| c as u32 as f32).collect();
        assert_close(
            &format!("{what} correct"),
            &correct,
            &want_correct,
            0.0,
            0.0,
        );
        let want_ds: Vec<f32> = rows.dscores.iter().map(|&v| v as f32).collect();
        // Softmax entries in f32 relative to the scale 1 / (Q K) that bounds every entry.
        let scale = 1.0 / (inf.queries(k) * inf.steps()) as f32;
        assert_close(
            &format!("{what} dS"),
            &read(&fwd.dscores[k]),
            &want_ds,
            1e-5 * scale,
            1e-4,
        );
        correct_k.push(want_correct.iter().sum::<f32>() / inf.queries(k) as f32);
    }
    let got = InfonceStats::from_slice(&read(&stats));
    let want_stats = InfonceStats::from_slice(&want.stats());
    // Losses from f32 scores averaged in f32: the score error above carries over.
    let tol = 2e-4 * want_stats.loss.abs().max(1.0);
    assert_close(
        &format!("{inf:?} loss"),
        &[got.loss],
        &[want_stats.loss],
        tol,
        0.0,
    );
    assert_close(
        &format!("{inf:?} loss_k"),
        &got.loss_k,
        &want_stats.loss_k,
        tol,
        0.0,
    );
    // Accuracy is a count of exact comparisons over the GPU's scores: exact up to division.
    assert_close(
        &format!("{inf:?} accuracy"),
        &got.accuracy_k,
        &correct_k,
        1e-6,
        0.0,
    );
    fwd
}

#[test]
fn infonce_counts_a_tie_as_wrong() {
    on_both_reductions(|| {
        // Flat crops give every query the same score for every candidate: chance loss, and an
        // accuracy of 0, not 1. Then z rows that equal the target's make exact ties too.
        let inf = grid(2, 4, 6, vec![2, 3]);
        let preds: Vec<Vec<f32>> = (0..inf.steps())
            .map(|k| vec![0.0; inf.queries(k) * inf.dim])
            .collect();
        let (_, z) = random_inputs(&inf, 9, 1.0);
        check_forward(&inf, &preds, &z);
        let (tp, tz) = (
            upload_preds(&inf, &preds),
            upload(&[inf.candidates(), inf.dim], &z),
        );
        let stats = nan_tensor(&[inf.stats_len()]);
        run(&infonce::forward(gpu(), &inf, &tp, &tz, &stats)
            .unwrap()
            .launches);
        let got = InfonceStats::from_slice(&read(&stats));
        let chance = (inf.candidates() as f32).ln();
        assert_close("flat loss", &got.loss_k, &[chance, chance], 1e-5, 1e-6);
        assert_eq!(got.accuracy_k, vec![0.0, 0.0], "ties are not right");
        let want = cpu::infonce::forward(&inf, &preds, &z);
        assert_eq!(want.accuracy_k, vec![0.0, 0.0], "the reference agrees");

        // Every z row the same: each prediction ties all candidates whatever its values.
        let z_same: Vec<f32> = (0..inf.candidates())
            .flat_map(|_| z[..inf.dim].to_vec())
            .collect();
        let (preds, _) = random_inputs(&inf, 10, 1.0);
        check_forward(&inf, &preds, &z_same);
        let want = cpu::infonce::forward(&inf, &preds, &z_same);
        assert_eq!(want.accuracy_k, vec![0.0, 0.0]);
    });
}

#[test]
fn infonce_forward_matches_reference() {
    on_both_reductions(|| {
        for (seed, inf) in shapes().iter().enumerate() {
            let (preds, z) = random_inputs(inf, seed as u64, 1.0);
            check_forward(inf, &preds, &z);
        }
    });
}

#[test]
fn infonce_rows_for_any_subgroup_size() {
    // Workgroups that take one row (seven subgroups idle) or two rows per subgroup.
    for max in [128, 4] {
        on_device(gpu_assuming_subgroups_up_to(max), || {
            for (seed, inf) in shapes().iter().enumerate().skip(2).take(2) {
                let (preds, z) = random_inputs(inf, seed as u64, 1.0);
                check_forward(inf, &preds, &z);
            }
        });
    }
}

#[test]
fn infonce_forward_stable_for_large_scores() {
    on_both_reductions(|| {
        // Scores around 80-100: exp(90) overflows f32 (max about exp(88.7)), so only the
        // max-subtracted log-softmax stays finite.
        let inf = grid(2, 5, 37, vec![2, 3]);
        let (mut preds, mut z) = random_inputs(&inf, 7, 1.5);
        for p in &mut preds {
            for row in p.chunks_mut(inf.dim) {
                row[0] = 9.0;
            }
        }
        for (n, row) in z.chunks_mut(inf.dim).enumerate() {
            row[0] = 10.0;
            // The true candidates of some queries get a nudge so not every row is chance.
            if n % 3 == 0 {
                row[1] = 1.0;
            }
        }
        let want = cpu::infonce::forward(&inf, &preds, &z);
        let all: Vec<f64> = want.scores.concat();
        let (lo, hi) = all
            .iter()
            .fold((f64::MAX, f64::MIN), |(a, b), &s| (a.min(s), b.max(s)));
        assert!(
            lo > 70.0 && hi > 89.0 && hi < 110.0,
            "scores span {lo}..{hi}"
        );
        let fwd = check_forward(&inf, &preds, &z);
        for t in fwd.dscores.iter().chain(&fwd.row_stats) {
            assert!(read(t).iter().all(|v| v.is_finite()));
        }
    });
}

/// The loss as a function of the flattened predictions.
fn split(inf: &Infonce, flat: &[f32]) -> Vec<Vec<f32>> {
    let mut out = Vec::new();
    let mut at = 0;
    for k in 0..inf.steps() {
        let n = inf.queries(k) * inf.dim;
        out.push(flat[at..at + n].to_vec());
        at += n;
    }
    out
}

#[test]
fn infonce_backward_reference_matches_finite_differences() {
    let inf = grid(2, 4, 6, vec![2, 3]);
    // Spread 2 makes the softmax peaked enough that the loss is far from linear.
    let (preds, z) = random_inputs(&inf, 21, 2.0);
    let want = cpu::infonce::forward(&inf, &preds, &z);
    let mut dpreds: Vec<Vec<f32>> = preds.iter().map(|p| vec![0.0; p.len()]).collect();
    let mut dz = vec![0.0; z.len()];
    cpu::infonce::backward(&inf, &preds, &z, &want.dscores, &mut dpreds, &mut dz, false);
    let flat = preds.concat();
    let numeric_p = finite_differences(&flat, |p| {
        cpu::infonce::forward(&inf, &split(&inf, p), &z).loss
    });
    assert_grad("dP", &dpreds.concat(), &numeric_p, 1e-3);
    let numeric_z = finite_differences(&z, |z| cpu::infonce::forward(&inf, &preds, z).loss);
    assert_grad("dZ", &dz, &numeric_z, 1e-3);
}

#[test]
fn infonce_backward_matches_reference() {
    for (seed, inf) in shapes().iter().skip(2).take(2).enumerate() {
        for accumulate in [false, true] {
            let (preds, z) = random_inputs(inf, 30 + seed as u64, 1.0);
            let dz0 = random(&mut rng(40 + seed as u64), z.len());
            let (tp, tz) = (
                upload_preds(inf, &preds),
                upload(&[inf.candidates(), inf.dim], &z),
            );
            let stats = nan_tensor(&[inf.stats_len()]);
            let fwd = infonce::forward(gpu(), inf, &tp, &tz, &stats).unwrap();
            let tdp: Vec<Tensor> = (0..inf.steps())
                .map(|k| nan_tensor(&[inf.queries(k), inf.dim]))
                .collect();
            let tdz = if accumulate {
                upload(&[inf.candidates(), inf.dim], &dz0)
            } else {
                nan_tensor(&[inf.candidates(), inf.dim])
            };
            let back = infonce::backward(gpu(), &fwd, &tp, &tz, &tdp, &tdz, accumulate).unwrap();
            run(&fwd.launches);
            run(&back);
            let want = cpu::infonce::forward(inf, &preds, &z);
            let mut dpreds: Vec<Vec<f32>> = preds.iter().map(|p| vec![0.0; p.len()]).collect();
            let mut dz = dz0.clone();
            cpu::infonce::backward(
                inf,
                &preds,
                &z,
                &want.dscores,
                &mut dpreds,
                &mut dz,
                accumulate,
            );
            let what = format!("{inf:?} acc={accumulate}");
            for k in 0..inf.steps() {
                // Sums of B*G*G products of f32 softmax terms: error relative to the largest.
                let tol = 1e-4 * max_abs(&dpreds[k]);
                assert_close(
                    &format!("{what} dP[{k}]"),
                    &read(&tdp[k]),
                    &dpreds[k],
                    tol,
                    1e-4,
                );
            }
            let tol = 1e-4 * max_abs(&dz);
            assert_close(&format!("{what} dZ"), &read(&tdz), &dz, tol, 1e-4);
        }
    }
}

#[test]
fn infonce_context_rows_gather_query_contexts() {
    // A grid, and steps unlike the width (where swapping T and W would go unseen).
    let uneven = Infonce::new(
        Sequences {
            blocks: 2,
            steps: 6,
            width: 3,
        },
        5,
        vec![1, 4],
    );
    for (inf, hidden) in [(grid(2, 5, 7, vec![2, 3]), 9), (uneven, 4)] {
        context_rows_match(&inf, hidden);
    }
}

fn context_rows_match(inf: &Infonce, hidden: usize) {
    let n = inf.candidates();
    let c = random(&mut rng(50), n * hidden);
    let tc = upload(&[n, hidden], &c);
    for k in 0..inf.steps() {
        // The shape's target rule agrees with the reference's (b, t, w) enumeration.
        let targets = cpu::infonce::targets(inf, k);
        assert!((0..inf.queries(k)).all(|q| inf.target(k, q) == targets[q]));
        // Query (b, t, w) reads context row (b * T + t) * W + w.
        let (seq, o) = (inf.seq, inf.offsets[k]);
        let mut want = Vec::new();
        for b in 0..seq.blocks {
            for t in 0..seq.steps - o {
                for w in 0..seq.width {
                    let row = (b * seq.steps + t) * seq.width + w;
                    want.extend_from_slice(&c[row * hidden..(row + 1) * hidden]);
                }
            }
        }
        let out = nan_tensor(&[inf.queries(k), hidden]);
        run(&[copy_rows::gather(gpu(), &inf.context_rows(k, hidden), &tc, &out, false).unwrap()]);
        // A copy is exact.
        assert_close(&format!("contexts k={k}"), &read(&out), &want, 0.0, 0.0);
    }
}

#[test]
fn infonce_rejects_mismatched_shapes() {
    let inf = grid(2, 4, 6, vec![2, 3]);
    let (preds, z) = random_inputs(&inf, 1, 1.0);
    let tp = upload_preds(&inf, &preds);
    let stats = nan_tensor(&[inf.stats_len()]);
    let expect = |err: Error, parts: &[&str]| {
        let msg = err.to_string();
        assert!(
            matches!(
                err,
                Error::Shape {
                    kernel: "infonce",
                    ..
                }
            ),
            "{msg}"
        );
        for p in parts {
            assert!(msg.contains(p), "{msg} lacks {p}");
        }
    };
    let bad_z = upload(&[32, 5], &z[..160]);
    let err = infonce::forward(gpu(), &inf, &tp, &bad_z, &stats)
        .err()
        .unwrap();
    expect(err, &["[32, 5]", "[32, 6]"]);
    let err = infonce::forward(gpu(), &inf, &tp[..1], &upload(&[32, 6], &z), &stats)
        .err()
        .unwrap();
    expect(err, &["1 preds", "offsets=[2, 3]"]);
    let far = grid(2, 4, 6, vec![2, 4]);
    let err = infonce::forward(gpu(), &far, &tp, &upload(&[32, 6], &z), &stats)
        .err()
        .unwrap();
    expect(err, &["offset 4"]);
}
