use cpc::cpu;
use cpc::ops::sum_channels;

use crate::common::*;

#[test]
fn sum_channels_matches_reference() {
    on_both_reductions(check_sums);
}

/// [outer, channels, inner]: sums of 1 to 70000 terms, one thread's (up to PER_THREAD_MAX)
/// and a workgroup's, with vec4 loads (inner a multiple of 4) and without.
fn check_sums() {
    for (seed, dims) in [
        [1, 1, 1],
        [3, 5, 7],
        [2, 3, 1000],
        [300, 17, 1],
        [1, 70000, 1],
        [13, 700, 1],
        [65, 7, 1],
        [8, 9, 8],
        [40, 3, 12],
        [7, 5, 100],
        [3, 2, 1001],
        [1, 1, 70000],
    ]
    .into_iter()
    .enumerate()
    {
        for accumulate in [false, true] {
            let mut r = rng(seed as u64);
            let n = dims.iter().product();
            let (x, o0) = (random(&mut r, n), random(&mut r, dims[1]));
            let tx = upload(&[n], &x);
            let to = if accumulate {
                upload(&[dims[1]], &o0)
            } else {
                nan_tensor(&[dims[1]])
            };
            run(&[sum_channels::launch(gpu(), &tx, dims, &to, 0.5, accumulate).unwrap()]);
            let mut want = o0.clone();
            cpu::sum_channels::launch(&x, dims, &mut want, 0.5, accumulate);
            // Sums of up to 2000 terms in [-1, 1] in f32, in a different order than the reference.
            assert_close(&format!("{dims:?}"), &read(&to), &want, 1e-4, 1e-5);
        }
    }
}
