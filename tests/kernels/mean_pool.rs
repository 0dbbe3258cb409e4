use cpc::cpu;
use cpc::ops::mean_pool;

use crate::common::*;

const SHAPES: &[[usize; 3]] = &[[1, 1, 1], [3, 5, 7], [2, 300, 9], [4, 64, 16]];

#[test]
fn mean_pool_forward_matches_reference() {
    for (seed, &d) in SHAPES.iter().enumerate() {
        let x = random(&mut rng(seed as u64), d.iter().product());
        let ty = nan_tensor(&[d[0], d[1]]);
        run(&[mean_pool::forward(gpu(), &upload(&[x.len()], &x), d, &ty).unwrap()]);
        let mut want = vec![0.0; d[0] * d[1]];
        cpu::mean_pool::forward(&x, d, &mut want);
        assert_close(&format!("{d:?}"), &read(&ty), &want, 1e-6, 1e-5);
    }
}

#[test]
fn mean_pool_backward_reference_matches_finite_differences() {
    let d = [2, 3, 5];
    let (x, w) = (random(&mut rng(1), 30), random(&mut rng(2), 6));
    let pool = |x: &[f32]| {
        let mut y = vec![0.0; 6];
        cpu::mean_pool::forward(x, d, &mut y);
        y
    };
    let dy = test_loss_grad(&pool(&x), &w);
    let mut dx = vec![0.0; 30];
    cpu::mean_pool::backward(&dy, d, &mut dx, false);
    assert_grad(
        "dx",
        &dx,
        &finite_differences(&x, |x| test_loss(&pool(x), &w)),
        1e-3,
    );
}

#[test]
fn mean_pool_backward_matches_reference() {
    for (seed, &d) in SHAPES.iter().enumerate() {
        for accumulate in [false, true] {
            let mut r = rng(50 + seed as u64);
            let m = d.iter().product();
            let (dy, dx0) = (random(&mut r, d[0] * d[1]), random(&mut r, m));
            let tdx = if accumulate {
                upload(&[m], &dx0)
            } else {
                nan_tensor(&[m])
            };
            run(&[
                mean_pool::backward(gpu(), &upload(&[dy.len()], &dy), d, &tdx, accumulate).unwrap(),
            ]);
            let mut want = dx0.clone();
            cpu::mean_pool::backward(&dy, d, &mut want, accumulate);
            assert_close(&format!("{d:?}"), &read(&tdx), &want, 1e-6, 1e-6);
        }
    }
}

#[test]
fn mean_pool_rejects_mismatched_shapes() {
    let msg = mean_pool::forward(
        gpu(),
        &upload(&[2, 3, 4], &[0.0; 24]),
        [2, 3, 5],
        &upload(&[6], &[0.0; 6]),
    )
    .unwrap_err()
    .to_string();
    assert!(
        msg.contains("mean_pool") && msg.contains("[2, 3, 4]") && msg.contains("[2, 3, 5]"),
        "{msg}"
    );
}
