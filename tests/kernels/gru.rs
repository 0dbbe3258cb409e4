use cpc::cpu::gru::GruWeights as CpuWeights;
use cpc::gpu::Tensor;
use cpc::ops::gru::{self, Gru, GruWeights};
use cpc::ops::sequences::Sequences;
use cpc::{cpu, Error};

use crate::common::*;

/// (B, T, W, D, H): a tiny grid, a 4-step grid, a single step, H = 70 so S*H = 280 threads
/// is not a multiple of the 64-thread workgroup and 3H = 210 is not a multiple of the matmul
/// tile; audio's one sequence per clip (W = 1, 9 frames) and steps unlike the width.
const SHAPES: &[(usize, usize, usize, usize, usize)] = &[
    (2, 3, 3, 5, 7),
    (2, 4, 4, 5, 7),
    (1, 1, 1, 3, 2),
    (1, 4, 4, 9, 70),
    (3, 9, 1, 4, 6),
    (2, 5, 3, 4, 5),
];

fn gru_of(&(blocks, steps, width, input, hidden): &(usize, usize, usize, usize, usize)) -> Gru {
    Gru {
        seq: Sequences {
            blocks,
            steps,
            width,
        },
        input,
        hidden,
    }
}

/// Random parameters at about PyTorch's scale (pre-activations of order 1, gates rarely
/// saturated, so every path carries gradient).
fn random_weights(gru: &Gru, seed: u64) -> CpuWeights {
    let mut r = rng(seed);
    let h3 = 3 * gru.hidden;
    let mut scaled = |n: usize, fan_in: usize| -> Vec<f32> {
        let s = 2.0 / (fan_in as f32).sqrt();
        random(&mut r, n).into_iter().map(|v| v * s).collect()
    };
    CpuWeights {
        weight_ih: scaled(h3 * gru.input, gru.input),
        weight_hh: scaled(h3 * gru.hidden, gru.hidden),
        bias_ih: scaled(h3, 4),
        bias_hh: scaled(h3, 4),
    }
}

/// The four parameters as views into one flat buffer, starting `PAD` elements in, as the
/// model lays them out; the buffer's first and last PAD elements are not theirs.
const PAD: usize = 3;

fn upload_weights(w: &CpuWeights) -> (Tensor, GruWeights) {
    let parts = [&w.weight_ih, &w.weight_hh, &w.bias_ih, &w.bias_hh];
    let mut flat = vec![f32::NAN; PAD];
    for p in parts {
        flat.extend_from_slice(p);
    }
    flat.extend_from_slice(&[f32::NAN; PAD]);
    let buf = upload(&[flat.len()], &flat);
    let h3 = w.bias_ih.len();
    let (d, h) = (w.weight_ih.len() / h3, w.weight_hh.len() / h3);
    let mut at = PAD;
    let mut view = |shape: &[usize]| {
        let t = buf.view(at, shape);
        at += t.len();
        t
    };
    let views = GruWeights {
        weight_ih: view(&[h3, d]),
        weight_hh: view(&[h3, h]),
        bias_ih: view(&[h3]),
        bias_hh: view(&[h3]),
    };
    (buf, views)
}

fn read_weights(w: &GruWeights) -> CpuWeights {
    CpuWeights {
        weight_ih: read(&w.weight_ih),
        weight_hh: read(&w.weight_hh),
        bias_ih: read(&w.bias_ih),
        bias_hh: read(&w.bias_hh),
    }
}

#[test]
fn gru_forward_matches_reference() {
    for (seed, shape) in SHAPES.iter().enumerate() {
        let gru = gru_of(shape);
        let (n, d, h) = (gru.rows(), gru.input, gru.hidden);
        let mut r = rng(seed as u64);
        let z = random(&mut r, n * d);
        let w = random_weights(&gru, 100 + seed as u64);
        let (_wbuf, tw) = upload_weights(&w);
        let tz = upload(&[n, d], &z);
        // C as a view inside a NaN-filled buffer: the kernel must write exactly its rows.
        let cbuf = nan_tensor(&[n * h + 2 * PAD]);
        let tc = cbuf.view(PAD, &[n, h]);
        let fwd = gru::forward(gpu(), &gru, &tz, &tw, &tc).unwrap();
        // The op's own buffers start as NaN too: nothing may be read before it is written.
        for t in [&fwd.gi, &fwd.gh, &fwd.gates, &fwd.hprev] {
            t.fill(gpu(), f32::NAN).unwrap();
        }
        run(&fwd.launches);
        let mut want = vec![0.0; n * h];
        cpu::gru::forward(&gru, &z, &w, &mut want);
        let got = read(&cbuf);
        assert!(got[..PAD]
            .iter()
            .chain(&got[PAD + n * h..])
            .all(|v| v.is_nan()));
        // f32 dot products of up to 70 terms of order 1 per gate, carried through G steps of
        // contracting updates (|dh'/dh| < 1 in practice): a few 1e-6 per step.
        assert_close(
            &format!("{gru:?}"),
            &got[PAD..PAD + n * h],
            &want,
            2e-5,
            1e-4,
        );
    }
}

/// One of the four parameters (or gradients), to perturb in turn.
type Field = fn(&mut CpuWeights) -> &mut Vec<f32>;

#[test]
fn gru_backward_reference_matches_finite_differences() {
    let gru = gru_of(&(2, 3, 3, 3, 4));
    let (n, d, h) = (gru.rows(), gru.input, gru.hidden);
    let mut r = rng(7);
    let z = random(&mut r, n * d);
    let target = random(&mut r, n * h);
    let w = random_weights(&gru, 8);
    let loss = |z: &[f32], w: &CpuWeights| {
        let mut c = vec![0.0; n * h];
        cpu::gru::forward(&gru, z, w, &mut c);
        test_loss(&c, &target)
    };
    let mut c = vec![0.0; n * h];
    cpu::gru::forward(&gru, &z, &w, &mut c);
    let dc = test_loss_grad(&c, &target);
    let mut dw = CpuWeights::zeros(&gru);
    let mut dz = vec![f32::NAN; n * d];
    cpu::gru::backward(&gru, &z, &w, &dc, &mut dw, &mut dz, false);

    assert_grad("dz", &dz, &finite_differences(&z, |x| loss(x, &w)), 1e-3);
    let with = |f: Field, x: &[f32]| {
        let mut w2 = w.clone();
        *f(&mut w2) = x.to_vec();
        loss(&z, &w2)
    };
    let fields: [(&str, Field); 4] = [
        ("dweight_ih", |w| &mut w.weight_ih),
        ("dweight_hh", |w| &mut w.weight_hh),
        ("dbias_ih", |w| &mut w.bias_ih),
        ("dbias_hh", |w| &mut w.bias_hh),
    ];
    for (name, f) in fields {
        let x = f(&mut w.clone()).clone();
        let analytic = f(&mut dw).clone();
        assert_grad(
            name,
            &analytic,
            &finite_differences(&x, |x| with(f, x)),
            1e-3,
        );
    }
}

#[test]
fn gru_backward_matches_reference() {
    for (seed, shape) in SHAPES.iter().enumerate() {
        for accumulate_dz in [false, true] {
            let gru = gru_of(shape);
            let (n, d, h) = (gru.rows(), gru.input, gru.hidden);
            let mut r = rng(50 + seed as u64);
            let (z, dc) = (random(&mut r, n * d), random(&mut r, n * h));
            let dz0 = random(&mut r, n * d);
            let w = random_weights(&gru, 200 + seed as u64);
            // Parameter gradients accumulate: start them from random values.
            let dw0 = random_weights(&gru, 300 + seed as u64);
            let (_wbuf, tw) = upload_weights(&w);
            let (_dwbuf, tdw) = upload_weights(&dw0);
            let (tz, tdc, tc) = (
                upload(&[n, d], &z),
                upload(&[n, h], &dc),
                nan_tensor(&[n, h]),
            );
            let tdz = if accumulate_dz {
                upload(&[n, d], &dz0)
            } else {
                nan_tensor(&[n, d])
            };
            let fwd = gru::forward(gpu(), &gru, &tz, &tw, &tc).unwrap();
            let bwd =
                gru::backward(gpu(), &fwd, &tz, &tw, &tdc, &tdw, &tdz, accumulate_dz).unwrap();
            for t in [&bwd.dgi, &bwd.dgh, &bwd.carry] {
                t.fill(gpu(), f32::NAN).unwrap();
            }
            run(&fwd.launches);
            run(&bwd.launches);

            let (mut dw, mut dzw) = (dw0.clone(), dz0.clone());
            cpu::gru::backward(&gru, &z, &w, &dc, &mut dw, &mut dzw, accumulate_dz);
            let got = read_weights(&tdw);
            let what = format!("{gru:?} accumulate_dz={accumulate_dz}");
            // dz: 3H-term sums of per-step gradients of order 1. Weight gradients: sums over
            // all B*G*G rows (up to 36 here) of such products, in a different order.
            assert_close(&format!("dz {what}"), &read(&tdz), &dzw, 5e-5, 1e-4);
            assert_close(
                &format!("dweight_ih {what}"),
                &got.weight_ih,
                &dw.weight_ih,
                1e-4,
                1e-4,
            );
            assert_close(
                &format!("dweight_hh {what}"),
                &got.weight_hh,
                &dw.weight_hh,
                1e-4,
                1e-4,
            );
            assert_close(
                &format!("dbias_ih {what}"),
                &got.bias_ih,
                &dw.bias_ih,
                1e-4,
                1e-4,
            );
            assert_close(
                &format!("dbias_hh {what}"),
                &got.bias_hh,
                &dw.bias_hh,
                1e-4,
                1e-4,
            );
        }
    }
}

#[test]
fn gru_rejects_mismatched_shapes() {
    let gru = gru_of(&(2, 3, 3, 5, 7));
    let (_wbuf, tw) = upload_weights(&random_weights(&gru, 1));
    let z = upload(&[18, 4], &[0.0; 72]);
    let c = upload(&[18, 7], &[0.0; 126]);
    let err = gru::forward(gpu(), &gru, &z, &tw, &c).err().unwrap();
    let msg = err.to_string();
    assert!(matches!(err, Error::Shape { kernel: "gru", .. }), "{msg}");
    assert!(msg.contains("[18, 4]") && msg.contains("[18, 5]"), "{msg}");
}
