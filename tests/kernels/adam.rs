use cpc::cpu;
use cpc::gpu::Tensor;
use cpc::ops::adam::{Adam, AdamConfig};

use crate::common::*;

#[test]
fn adam_step_matches_reference() {
    on_both_reductions(|| {
        // 70001 elements: more than the norm's 65536-element stride and not a multiple of 256.
        // A gradient scale of 1/3 (three micro-batches summed) scales the norm and the clip.
        let cases = [
            (1usize, 0.0, 0.0, 1.0),
            (1000, 0.0, 0.01, 1.0 / 3.0),
            (70001, 5.0, 0.1, 1.0),
            (70001, 5.0, 0.0, 1.0 / 3.0),
        ];
        for (seed, (n, max_norm, wd, grad_scale)) in cases.into_iter().enumerate() {
            let mut r = rng(seed as u64);
            let cfg = AdamConfig {
                max_norm,
                weight_decay: wd,
                grad_scale,
                ..Default::default()
            };
            let (mut p, mut m, mut v) = (random(&mut r, n), vec![0.0; n], vec![0.0; n]);
            let (tp, tg, tm, tv) = (
                upload(&[n], &p),
                upload(&[n], &vec![0.0; n]),
                upload(&[n], &m),
                upload(&[n], &v),
            );
            let adam = Adam::new(gpu(), cfg, &tp, &tg, &tm, &tv).unwrap();
            // Three steps with fresh gradients, so the moments and bias corrections matter.
            for t in 1..=3u64 {
                let g: Vec<f32> = random(&mut r, n).iter().map(|x| x * 0.3).collect();
                tg.write(gpu(), &g).unwrap();
                adam.set_step(gpu(), t, 1e-2);
                gpu().run(&adam.launches()).unwrap();
                cpu::adam::step(&cfg, t, 1e-2, &mut p, &g, &mut m, &mut v);
                assert_eq!(read(&adam.norm)[1], 0.0, "finite update, flag clear");
                // The norm is a sum of 70001 squares in f32: relative 1e-5.
                assert_close(
                    "norm",
                    &read(&adam.norm)[..1],
                    &[cpu::adam::grad_norm(&g) * grad_scale],
                    0.0,
                    1e-4,
                );
            }
            // Adam's update divides by sqrt(v): near-zero gradients amplify rounding, so 1e-5 absolute
            // on parameters moved by ~3e-2.
            assert_close(&format!("param n={n}"), &read(&tp), &p, 2e-5, 1e-4);
            assert_close(&format!("m n={n}"), &read(&tm), &m, 1e-6, 1e-4);
            assert_close(&format!("v n={n}"), &read(&tv), &v, 1e-7, 1e-4);
        }
    });
}

#[test]
fn adam_cut_into_chunks_matches_reference() {
    on_both_reductions(|| {
        // Buffers over the binding limit are cut into chunks; 2500 elements in chunks of 1000
        // (960 after rounding to 64) give three chunks, the last one short, and the clipping
        // norm must still be over all of them.
        let n = 2500;
        let mut r = rng(77);
        let cfg = AdamConfig {
            max_norm: 2.0,
            weight_decay: 0.05,
            ..Default::default()
        };
        let (mut p, mut m, mut v) = (random(&mut r, n), vec![0.0; n], vec![0.0; n]);
        let g = random(&mut r, n);
        let (tp, tg, tm, tv) = (
            upload(&[n], &p),
            upload(&[n], &g),
            upload(&[n], &m),
            upload(&[n], &v),
        );
        let adam = Adam::chunked(gpu(), cfg, &tp, &tg, &tm, &tv, 1000).unwrap();
        assert_eq!(adam.step_launches.len(), 3);
        adam.set_step(gpu(), 1, 1e-2);
        gpu().run(&adam.launches()).unwrap();
        cpu::adam::step(&cfg, 1, 1e-2, &mut p, &g, &mut m, &mut v);
        assert_close(
            "norm",
            &read(&adam.norm)[..1],
            &[cpu::adam::grad_norm(&g)],
            0.0,
            1e-5,
        );
        assert_close("param", &read(&tp), &p, 2e-5, 1e-4);
        gpu()
            .run(&adam.zero_launches.iter().collect::<Vec<_>>())
            .unwrap();
        assert_close("zeroed grad", &read(&tg), &vec![0.0; n], 0.0, 0.0);
    });
}

#[test]
fn adam_clips_by_global_norm() {
    on_both_reductions(|| {
        // With a tiny max_norm the first step of plain Adam is unchanged (sign-like), but the
        // moments see the clipped gradient: m = (1 - beta1) * g * max_norm / |g|.
        let g = [3.0f32, 4.0];
        let cfg = AdamConfig {
            max_norm: 1.0,
            ..Default::default()
        };
        let (tp, tg, tm, tv) = (
            upload(&[2], &[0.0, 0.0]),
            upload(&[2], &g),
            upload(&[2], &[0.0, 0.0]),
            upload(&[2], &[0.0, 0.0]),
        );
        let adam = Adam::new(gpu(), cfg, &tp, &tg, &tm, &tv).unwrap();
        adam.set_step(gpu(), 1, 0.1);
        gpu().run(&adam.launches()).unwrap();
        assert_close("norm", &read(&adam.norm)[..1], &[5.0], 1e-6, 0.0);
        assert_close("m", &read(&tm), &[0.1 * 0.6, 0.1 * 0.8], 1e-7, 1e-6);
    });
}

#[test]
fn adam_zeroes_gradients() {
    let n = 1000;
    let tg = nan_tensor(&[n]);
    let (tp, tm, tv) = (
        Tensor::zeros(gpu(), "p", &[n]).unwrap(),
        Tensor::zeros(gpu(), "m", &[n]).unwrap(),
        Tensor::zeros(gpu(), "v", &[n]).unwrap(),
    );
    let adam = Adam::new(gpu(), AdamConfig::default(), &tp, &tg, &tm, &tv).unwrap();
    gpu()
        .run(&adam.zero_launches.iter().collect::<Vec<_>>())
        .unwrap();
    assert_close("grad", &read(&tg), &vec![0.0; n], 0.0, 0.0);
}

#[test]
fn adam_rejects_mismatched_shapes() {
    let (a, b) = (upload(&[4], &[0.0; 4]), upload(&[5], &[0.0; 5]));
    let msg = Adam::new(gpu(), AdamConfig::default(), &a, &a, &b, &a)
        .err()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("adam") && msg.contains("[5]") && msg.contains("[4]"),
        "{msg}"
    );
}

#[test]
fn adam_flags_an_update_that_leaves_a_value_not_finite() {
    on_both_reductions(|| {
        // Three chunks (2500 elements in chunks of 960); the bad values sit in the first and the
        // last chunk: the flag finish_norm cleared must be raised by any chunk's step and left
        // raised by the others. Flag = norm[1].
        let n = 2500;
        let run = |p: &[f32], g: &[f32], lr: f32| -> f32 {
            let (tp, tg, tm, tv) = (
                upload(&[n], p),
                upload(&[n], g),
                upload(&[n], &vec![0.0; n]),
                upload(&[n], &vec![0.0; n]),
            );
            let adam =
                Adam::chunked(gpu(), AdamConfig::default(), &tp, &tg, &tm, &tv, 1000).unwrap();
            // The flag buffer starts as NaN: finish_norm must write it.
            adam.norm.write(gpu(), &[f32::NAN, f32::NAN]).unwrap();
            adam.set_step(gpu(), 1, lr);
            gpu().run(&adam.launches()).unwrap();
            read(&adam.norm)[1]
        };
        let mut r = rng(5);
        let (p, g) = (random(&mut r, n), random(&mut r, n));
        assert_eq!(run(&p, &g, 1e-3), 0.0, "a finite update");
        let mut nan_param = p.clone();
        nan_param[2400] = f32::NAN;
        assert_eq!(run(&nan_param, &g, 1e-3), 1.0, "a NaN parameter stays NaN");
        // In the first chunk: the later chunks' updates must not clear it.
        let mut nan_first = p.clone();
        nan_first[10] = f32::NAN;
        assert_eq!(run(&nan_first, &g, 1e-3), 1.0, "a NaN in chunk 0");
        let mut inf_grad = g.clone();
        inf_grad[2499] = f32::INFINITY;
        assert_eq!(
            run(&p, &inf_grad, 1e-3),
            1.0,
            "an infinite gradient: v overflows"
        );
        let mut big = p.clone();
        big[2000] = 3e38;
        let mut push = g.clone();
        push[2000] = -1.0;
        assert_eq!(
            run(&big, &push, 1e38),
            1.0,
            "the update overflows the parameter"
        );
    });
}
