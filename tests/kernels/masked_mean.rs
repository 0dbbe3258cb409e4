use cpc::cpu;
use cpc::ops::masked_mean;

use crate::common::*;

/// ([N, C, W], lengths): every length from 0 (empty) through 1 to W; one channel, one
/// position; N C past a workgroup of 256 and N C W past several.
fn cases() -> Vec<([usize; 3], Vec<u32>)> {
    vec![
        ([6, 7, 5], vec![0, 1, 5, 3, 2, 4]),
        ([3, 1, 1], vec![1, 0, 1]),
        ([40, 9, 6], (0..40).map(|i| (i % 7) as u32).collect()),
    ]
}

/// x with NaN at every position at or past its sentence's length: the mean must not read
/// them, nor let them through a multiplication by 0.
fn masked_input(seed: u64, [n, c, w]: [usize; 3], lengths: &[u32]) -> Vec<f32> {
    let mut x = random(&mut rng(seed), n * c * w);
    for (e, v) in x.iter_mut().enumerate() {
        if e % w >= lengths[e / (c * w)] as usize {
            *v = f32::NAN;
        }
    }
    x
}

fn upload_lengths(lengths: &[u32]) -> cpc::gpu::Tensor {
    let t = nan_tensor(&[lengths.len()]);
    t.write_u32(gpu(), lengths).unwrap();
    t
}

#[test]
fn masked_mean_forward_matches_reference() {
    for (seed, (d, lengths)) in cases().into_iter().enumerate() {
        let x = masked_input(seed as u64, d, &lengths);
        let ty = nan_tensor(&[d[0], d[1]]);
        let tl = upload_lengths(&lengths);
        run(&[masked_mean::forward(gpu(), &upload(&[x.len()], &x), &tl, d, &ty).unwrap()]);
        let mut want = vec![0.0; d[0] * d[1]];
        cpu::masked_mean::forward(&x, &lengths, d, &mut want);
        let got = read(&ty);
        assert_close(&format!("{d:?}"), &got, &want, 1e-6, 1e-5);
        // An empty sentence's vector is exactly 0.
        for (r, &v) in got.iter().enumerate() {
            if lengths[r / d[1]] == 0 {
                assert_eq!(v, 0.0, "{d:?} row {r}");
            }
        }
    }
}

#[test]
fn masked_mean_backward_reference_matches_finite_differences() {
    let (d, lengths) = cases().swap_remove(0);
    let n = d.iter().product();
    let (x, r) = (random(&mut rng(1), n), random(&mut rng(2), d[0] * d[1]));
    let mean = |x: &[f32]| {
        let mut y = vec![0.0; d[0] * d[1]];
        cpu::masked_mean::forward(x, &lengths, d, &mut y);
        y
    };
    let dy = test_loss_grad(&mean(&x), &r);
    let mut dx = vec![f32::NAN; n];
    cpu::masked_mean::backward(&dy, &lengths, d, &mut dx, false);
    assert_grad(
        "dx",
        &dx,
        &finite_differences(&x, |x| test_loss(&mean(x), &r)),
        1e-3,
    );
}

#[test]
fn masked_mean_backward_matches_reference() {
    for (seed, (d, lengths)) in cases().into_iter().enumerate() {
        for accumulate in [false, true] {
            let mut r = rng(50 + seed as u64);
            let n = d.iter().product();
            let (dy, dx0) = (random(&mut r, d[0] * d[1]), random(&mut r, n));
            let tdx = if accumulate {
                upload(&[n], &dx0)
            } else {
                nan_tensor(&[n])
            };
            let tl = upload_lengths(&lengths);
            run(&[masked_mean::backward(
                gpu(),
                &upload(&[dy.len()], &dy),
                &tl,
                d,
                &tdx,
                accumulate,
            )
            .unwrap()]);
            let mut want = dx0.clone();
            cpu::masked_mean::backward(&dy, &lengths, d, &mut want, accumulate);
            let got = read(&tdx);
            assert_close(
                &format!("{d:?} accumulate {accumulate}"),
                &got,
                &want,
                1e-6,
                1e-6,
            );
            // Positions past a sentence's length get exactly nothing.
            for (e, &v) in got.iter().enumerate() {
                if e % d[2] >= lengths[e / (d[1] * d[2])] as usize {
                    let before = if accumulate { dx0[e] } else { 0.0 };
                    assert_eq!(v, before, "{d:?} element {e}");
                }
            }
        }
    }
}

#[test]
fn masked_mean_rejects_mismatched_shapes() {
    let x = upload(&[2, 3, 4], &[0.0; 24]);
    let y = upload(&[6], &[0.0; 6]);
    let msg = masked_mean::forward(gpu(), &x, &upload_lengths(&[1, 2]), [2, 3, 5], &y)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("masked_mean") && msg.contains("[2, 3, 4]") && msg.contains("[2, 3, 5]"),
        "{msg}"
    );
    let msg = masked_mean::forward(gpu(), &x, &upload_lengths(&[1, 2, 3]), [2, 3, 4], &y)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("lengths [3]"), "{msg}");
}
