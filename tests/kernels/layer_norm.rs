use cpc::cpu;
use cpc::ops::layer_norm::{self, LayerNorm};

use crate::common::*;

// [n, channels, inner]: vectors (inner 1), feature maps, and a sample longer than 256 threads.
const SHAPES: &[[usize; 3]] = &[[1, 1, 1], [3, 5, 1], [2, 3, 7], [3, 7, 49], [2, 300, 1]];

fn ln(d: [usize; 3]) -> LayerNorm {
    LayerNorm {
        n: d[0],
        channels: d[1],
        inner: d[2],
        eps: 1e-5,
    }
}

#[test]
fn layer_norm_forward_matches_reference() {
    on_both_reductions(|| {
        for (seed, &d) in SHAPES.iter().enumerate() {
            let l = ln(d);
            let mut r = rng(seed as u64);
            let m = d.iter().product();
            // An offset in x makes the mean large against the spread: the two-pass variance matters.
            let x: Vec<f32> = random(&mut r, m).iter().map(|v| v * 2.0 + 3.0).collect();
            let (g, b) = (random(&mut r, d[1]), random(&mut r, d[1]));
            let (ty, ts) = (nan_tensor(&[m]), nan_tensor(&[d[0], 2]));
            run(&[layer_norm::forward(
                gpu(),
                &l,
                &upload(&[m], &x),
                &upload(&[d[1]], &g),
                &upload(&[d[1]], &b),
                &ty,
                &ts,
            )
            .unwrap()]);
            let mut want = vec![0.0; m];
            let stats = cpu::layer_norm::forward(&l, &x, &g, &b, &mut want);
            // Normalised values are O(1): f32 rounding of the mean and variance gives ~1e-6 relative.
            assert_close(&format!("y {d:?}"), &read(&ty), &want, 2e-5, 1e-4);
            assert_close(&format!("stats {d:?}"), &read(&ts), &stats, 2e-5, 1e-4);
        }
    });
}

#[test]
fn layer_norm_backward_reference_matches_finite_differences() {
    let l = ln([2, 3, 4]);
    let mut r = rng(7);
    let (x, g, b, w) = (
        random(&mut r, 24),
        random(&mut r, 3),
        random(&mut r, 3),
        random(&mut r, 24),
    );
    let loss = |x: &[f32], g: &[f32], b: &[f32]| {
        let mut y = vec![0.0; 24];
        cpu::layer_norm::forward(&l, x, g, b, &mut y);
        test_loss(&y, &w)
    };
    let mut y = vec![0.0; 24];
    cpu::layer_norm::forward(&l, &x, &g, &b, &mut y);
    let dy = test_loss_grad(&y, &w);
    let (mut dx, mut dg, mut db) = (vec![0.0; 24], vec![0.0; 3], vec![0.0; 3]);
    cpu::layer_norm::backward(&l, &x, &g, &dy, &mut dx, &mut dg, &mut db, false);
    assert_grad(
        "dx",
        &dx,
        &finite_differences(&x, |v| loss(v, &g, &b)),
        2e-3,
    );
    assert_grad(
        "dgamma",
        &dg,
        &finite_differences(&g, |v| loss(&x, v, &b)),
        2e-3,
    );
    assert_grad(
        "dbeta",
        &db,
        &finite_differences(&b, |v| loss(&x, &g, v)),
        2e-3,
    );
}

#[test]
fn layer_norm_backward_matches_reference() {
    on_both_reductions(|| {
        for (seed, &d) in SHAPES.iter().enumerate() {
            for accumulate in [false, true] {
                let l = ln(d);
                let mut r = rng(100 + seed as u64);
                let m = d.iter().product();
                let (x, g, b, dy) = (
                    random(&mut r, m),
                    random(&mut r, d[1]),
                    random(&mut r, d[1]),
                    random(&mut r, m),
                );
                let (dx0, dg0, db0) = (
                    random(&mut r, m),
                    random(&mut r, d[1]),
                    random(&mut r, d[1]),
                );
                let (tx, tg, tb) = (upload(&[m], &x), upload(&[d[1]], &g), upload(&[d[1]], &b));
                let (ty, ts) = (nan_tensor(&[m]), nan_tensor(&[d[0], 2]));
                let tdx = if accumulate {
                    upload(&[m], &dx0)
                } else {
                    nan_tensor(&[m])
                };
                // Parameter gradients always accumulate: start them from random values.
                let (tdg, tdb) = (upload(&[d[1]], &dg0), upload(&[d[1]], &db0));
                let mut launches =
                    vec![layer_norm::forward(gpu(), &l, &tx, &tg, &tb, &ty, &ts).unwrap()];
                launches.extend(
                    layer_norm::backward(
                        gpu(),
                        &l,
                        &tx,
                        &tg,
                        &ts,
                        &upload(&[m], &dy),
                        &tdx,
                        &tdg,
                        &tdb,
                        accumulate,
                    )
                    .unwrap(),
                );
                run(&launches);
                let (mut dx, mut dg, mut db) = (dx0.clone(), dg0.clone(), db0.clone());
                cpu::layer_norm::backward(&l, &x, &g, &dy, &mut dx, &mut dg, &mut db, accumulate);
                // dx subtracts two means from g: cancellation costs a few ulps of |g|.
                assert_close(&format!("dx {d:?}"), &read(&tdx), &dx, 1e-4, 1e-4);
                assert_close(&format!("dgamma {d:?}"), &read(&tdg), &dg, 1e-4, 1e-4);
                assert_close(&format!("dbeta {d:?}"), &read(&tdb), &db, 1e-4, 1e-4);
            }
        }
    });
}

#[test]
fn layer_norm_rejects_mismatched_shapes() {
    let l = ln([2, 3, 4]);
    let t24 = upload(&[24], &[0.0; 24]);
    let t4 = upload(&[4], &[0.0; 4]);
    let msg = layer_norm::forward(gpu(), &l, &t24, &t4, &t4, &t24, &t4)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("layer_norm")
            && msg.contains("gamma")
            && msg.contains("[4]")
            && msg.contains("[2, 3, 4]"),
        "{msg}"
    );
}
