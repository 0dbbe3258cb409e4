use cpc::cpu;
use cpc::ops::patches::{self, Patches};

use crate::common::*;

#[test]
fn patches_forward_matches_reference() {
    // Tiny geometry (S = 32, P = 8, no jitter as P / 16 = 0), an odd grid, and jittered ones.
    for (seed, g) in [
        Patches {
            batch: 2,
            grid: 7,
            patch: 8,
            jitter: 0,
        },
        Patches {
            batch: 1,
            grid: 3,
            patch: 6,
            jitter: 0,
        },
        Patches {
            batch: 2,
            grid: 7,
            patch: 16,
            jitter: 1,
        },
        Patches {
            batch: 1,
            grid: 5,
            patch: 12,
            jitter: 3,
        },
    ]
    .into_iter()
    .enumerate()
    {
        let s = g.crop();
        let crops = random(&mut rng(seed as u64), g.batch * 3 * s * s);
        let out = nan_tensor(&[g.batch * g.grid * g.grid, 3, g.patch, g.patch]);
        run(&[patches::forward(
            gpu(),
            &g,
            &upload(&[g.batch, 3, s, s], &crops),
            &out,
            1234 + seed as u32,
        )
        .unwrap()]);
        let want = cpu::patches::forward(&g, &crops, 1234 + seed as u32);
        // A copy: exact.
        assert_close(&format!("{g:?}"), &read(&out), &want, 0.0, 0.0);
    }
}

#[test]
fn patches_without_jitter_are_the_overlapping_grid() {
    // Independent of the reference: patch (r, c) pixel (y, x) is crop pixel (r*P/2+y, c*P/2+x).
    let g = Patches {
        batch: 2,
        grid: 3,
        patch: 4,
        jitter: 0,
    };
    let s = g.crop();
    let crops: Vec<f32> = (0..2 * 3 * s * s).map(|i| i as f32).collect();
    let out = nan_tensor(&[18, 3, 4, 4]);
    run(&[patches::forward(gpu(), &g, &upload(&[2, 3, s, s], &crops), &out, 0).unwrap()]);
    let got = read(&out);
    let (b, r, c, ch, y, x) = (1, 2, 1, 2, 3, 1);
    let n = (b * 3 + r) * 3 + c;
    assert_eq!(
        got[((n * 3 + ch) * 4 + y) * 4 + x],
        crops[((b * 3 + ch) * s + r * 2 + y) * s + c * 2 + x]
    );
}

#[test]
fn patches_jitter_moves_patches_and_pads_with_zeros() {
    let g = Patches {
        batch: 1,
        grid: 7,
        patch: 16,
        jitter: 1,
    };
    let s = g.crop();
    let crops = vec![1.0; 3 * s * s];
    let out = nan_tensor(&[49, 3, 16, 16]);
    run(&[patches::forward(gpu(), &g, &upload(&[1, 3, s, s], &crops), &out, 99).unwrap()]);
    let got = read(&out);
    // Each patch keeps a 15 x 15 window of ones and a one-pixel frame of zeros on two sides.
    for n in 0..49 {
        let ones = got[n * 768..(n + 1) * 768]
            .iter()
            .filter(|&&v| v == 1.0)
            .count();
        assert_eq!(ones, 3 * 15 * 15, "patch {n}");
    }
    let placements: std::collections::HashSet<_> =
        (0..49).map(|n| cpu::patches::jitter(99, n, 1)).collect();
    assert!(
        placements.len() > 4,
        "the jitter varies from patch to patch"
    );
}

#[test]
fn patches_reject_mismatched_shapes() {
    let g = Patches {
        batch: 2,
        grid: 7,
        patch: 8,
        jitter: 0,
    };
    let msg = patches::forward(
        gpu(),
        &g,
        &upload(&[2, 3, 30, 30], &vec![0.0; 5400]),
        &nan_tensor(&[98, 3, 8, 8]),
        0,
    )
    .unwrap_err()
    .to_string();
    assert!(
        msg.contains("patches") && msg.contains("[2, 3, 30, 30]") && msg.contains("[2, 3, 32, 32]"),
        "{msg}"
    );
}
