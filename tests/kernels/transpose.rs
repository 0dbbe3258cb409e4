use cpc::cpu;
use cpc::ops::transpose;

use crate::common::*;
use crate::shared::expect_err;

/// [B, R, C]: one element, sides below, at and past the 16 x 16 tile, odd ones, and the audio
/// encoder's shape scaled down (D = 24 channels by T = 37 frames, and back).
const SHAPES: &[[usize; 3]] = &[
    [1, 1, 1],
    [2, 3, 5],
    [1, 16, 16],
    [3, 17, 33],
    [2, 24, 37],
    [2, 37, 24],
];

#[test]
fn transpose_matches_reference() {
    for (seed, &d) in SHAPES.iter().enumerate() {
        let n = d.iter().product();
        let x = random(&mut rng(seed as u64), n);
        let ty = nan_tensor(&[n]);
        run(&[transpose::launch(gpu(), &upload(&[n], &x), d, &ty).unwrap()]);
        let mut want = vec![f32::NAN; n];
        cpu::transpose::forward(&x, d, &mut want);
        // A copy is exact.
        assert_close(&format!("{d:?}"), &read(&ty), &want, 0.0, 0.0);
        // The reference's own rule, checked element by element on one entry.
        let [_, r, c] = d;
        assert_eq!(
            want[(d[0] - 1) * r * c + (c - 1) * r],
            x[(d[0] - 1) * r * c + c - 1]
        );
    }
}

#[test]
fn transpose_reads_and_writes_views_at_offsets() {
    // Both operands inside larger buffers, starting past the storage-offset alignment; the
    // elements around the output view must stay as they were.
    let d = [2, 5, 19];
    let n = 190;
    let x = random(&mut rng(7), 64 + n);
    let tx = upload(&[64 + n], &x);
    let ty = nan_tensor(&[128 + n + 64]);
    run(&[transpose::launch(gpu(), &tx.view(64, &[n]), d, &ty.view(128, &[n])).unwrap()]);
    let got = read(&ty);
    let mut want = vec![0.0; n];
    cpu::transpose::forward(&x[64..], d, &mut want);
    assert_close("view", &got[128..128 + n], &want, 0.0, 0.0);
    assert!(got[..128].iter().chain(&got[128 + n..]).all(|v| v.is_nan()));
}

#[test]
fn transpose_rejects_mismatched_shapes() {
    let (x, y) = (nan_tensor(&[30]), nan_tensor(&[30]));
    expect_err(transpose::launch(gpu(), &x, [2, 3, 4], &y), "[2, 3, 4]");
    expect_err(transpose::launch(gpu(), &x, [0, 3, 4], &y), "empty");
}
