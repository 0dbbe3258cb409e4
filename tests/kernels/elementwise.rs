use cpc::cpu;
use cpc::ops::elementwise::{self, Op};

use crate::common::*;

#[test]
fn elementwise_matches_reference() {
    // 1000 and 70001 are not multiples of 256; 70001 / 256 > 255 exercises many workgroups.
    // 1000 takes the vec4 entry point, 1 and 70001 the one-element one.
    for (seed, n) in [1usize, 1000, 70001].into_iter().enumerate() {
        let mut r = rng(seed as u64);
        let (a, b, o0) = (random(&mut r, n), random(&mut r, n), random(&mut r, n));
        for op in [Op::Relu, Op::ReluBackward, Op::Add, Op::Scale, Op::Mul] {
            for accumulate in [false, true] {
                let (ta, tb) = (upload(&[n], &a), upload(&[n], &b));
                let to = if accumulate {
                    upload(&[n], &o0)
                } else {
                    nan_tensor(&[n])
                };
                run(&[
                    elementwise::launch(gpu(), op, &ta, Some(&tb), &to, -0.75, accumulate).unwrap(),
                ]);
                let mut want = o0.clone();
                cpu::elementwise::launch(op, &a, &b, &mut want, -0.75, accumulate);
                assert_close(
                    &format!("{op:?} n={n} acc={accumulate}"),
                    &read(&to),
                    &want,
                    1e-6,
                    1e-6,
                );
            }
        }
    }
}

#[test]
fn elementwise_on_views_at_any_offset() {
    // Views into one buffer: offsets 0 and 8 allow vec4 loads, 3 and 5 do not; either way
    // only the view's elements change.
    let n = 64;
    let mut r = rng(7);
    let (a, b, o0) = (
        random(&mut r, n + 8),
        random(&mut r, n + 8),
        random(&mut r, n + 8),
    );
    for (oa, ob, oo) in [(0, 8, 0), (3, 8, 0), (0, 0, 5), (8, 8, 8)] {
        let (ta, tb, to) = (
            upload(&[n + 8], &a),
            upload(&[n + 8], &b),
            upload(&[n + 8], &o0),
        );
        let (va, vb, vo) = (ta.view(oa, &[n]), tb.view(ob, &[n]), to.view(oo, &[n]));
        run(&[elementwise::launch(gpu(), Op::Add, &va, Some(&vb), &vo, 0.5, true).unwrap()]);
        let mut want = o0.clone();
        for i in 0..n {
            want[oo + i] += 0.5 * (a[oa + i] + b[ob + i]);
        }
        assert_close(
            &format!("offsets {oa} {ob} {oo}"),
            &read(&to),
            &want,
            1e-6,
            1e-6,
        );
    }
}

#[test]
fn relu_backward_reference_matches_finite_differences() {
    // Keep inputs away from the kink at 0, where the derivative does not exist.
    let x: Vec<f32> = random(&mut rng(9), 50)
        .into_iter()
        .map(|v| if v.abs() < 0.05 { 0.3 } else { v })
        .collect();
    let w = random(&mut rng(10), 50);
    let relu = |x: &[f32]| {
        let mut y = vec![0.0; x.len()];
        cpu::elementwise::launch(Op::Relu, x, x, &mut y, 1.0, false);
        y
    };
    let y = relu(&x);
    let dy = test_loss_grad(&y, &w);
    let mut dx = vec![0.0; 50];
    cpu::elementwise::launch(Op::ReluBackward, &y, &dy, &mut dx, 1.0, false);
    assert_grad(
        "relu dx",
        &dx,
        &finite_differences(&x, |x| test_loss(&relu(x), &w)),
        1e-3,
    );
}

#[test]
fn elementwise_rejects_mismatched_shapes() {
    let a = upload(&[3, 4], &[0.0; 12]);
    let b = upload(&[13], &[0.0; 13]);
    let msg = elementwise::add(gpu(), &a, &b, &a).unwrap_err().to_string();
    assert!(
        msg.contains("elementwise") && msg.contains("[13]") && msg.contains("[3, 4]"),
        "{msg}"
    );
}

#[test]
fn elementwise_spreads_past_65535_workgroups() {
    // 65535 * 256 + 1001 elements (one a thread: not a multiple of 4) need more workgroups
    // than one dimension holds: the launch spreads them over x and y, and every element
    // must still be written exactly once.
    let n = 65535 * 256 + 1001;
    let a: Vec<f32> = (0..n).map(|i| (i % 1013) as f32).collect();
    let out = nan_tensor(&[n]);
    let launch = elementwise::scale(gpu(), &upload(&[n], &a), &out, 2.0, false).unwrap();
    assert!(
        launch.workgroups[1] > 1,
        "spread over y: {:?}",
        launch.workgroups
    );
    run(&[launch]);
    let got = read(&out);
    let bad = (0..n).find(|&i| got[i] != 2.0 * a[i]);
    assert_eq!(bad, None, "first wrong element");
}

#[test]
fn bindings_over_the_device_limit_are_refused() {
    let limit = gpu().limits.max_storage_buffer_binding_size as usize;
    let n = limit / 4 + 16;
    let big = cpc::gpu::Tensor::zeros(gpu(), "big", &[n]).unwrap();
    let err = elementwise::scale(gpu(), &big, &big.view(0, &[n]), 1.0, true).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, cpc::Error::Limit { .. }) && msg.contains("max_storage_buffer_binding_size"),
        "{msg}"
    );
}
