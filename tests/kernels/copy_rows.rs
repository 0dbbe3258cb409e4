use cpc::ops::copy_rows::{self, CopyRows};
use cpc::{cpu, Error};

use crate::common::*;

/// Odd widths and row counts; the last spans many workgroups of 256 with a ragged end.
const SPECS: &[CopyRows] = &[
    CopyRows {
        blocks: 1,
        rows_per_block: 1,
        width: 1,
        offset: 0,
        block_stride: 1,
    },
    CopyRows {
        blocks: 2,
        rows_per_block: 15,
        width: 37,
        offset: 0,
        block_stride: 25 * 37,
    },
    CopyRows {
        blocks: 3,
        rows_per_block: 7,
        width: 5,
        offset: 11,
        block_stride: 7 * 5 + 3,
    },
    CopyRows {
        blocks: 5,
        rows_per_block: 30,
        width: 33,
        offset: 2,
        block_stride: 49 * 33,
    },
];

#[test]
fn copy_rows_gather_matches_reference() {
    for (seed, cr) in SPECS.iter().enumerate() {
        for accumulate in [false, true] {
            let mut r = rng(seed as u64);
            let (ls, lp) = (cr.strided_len(), cr.packed_len());
            let (src, d0) = (random(&mut r, ls), random(&mut r, lp));
            let ts = upload(&[ls], &src);
            let td = if accumulate {
                upload(&[lp], &d0)
            } else {
                nan_tensor(&[lp])
            };
            run(&[copy_rows::gather(gpu(), cr, &ts, &td, accumulate).unwrap()]);
            let mut want = d0.clone();
            cpu::copy_rows::gather(cr, &src, &mut want, accumulate);
            // A copy is exact; an add of two f32 values is one rounding, the same on both.
            assert_close(
                &format!("{cr:?} acc={accumulate}"),
                &read(&td),
                &want,
                0.0,
                0.0,
            );
        }
    }
}

#[test]
fn copy_rows_scatter_matches_reference() {
    for (seed, cr) in SPECS.iter().enumerate() {
        for accumulate in [false, true] {
            let mut r = rng(10 + seed as u64);
            let (ls, lp) = (cr.strided_len(), cr.packed_len());
            let (src, d0) = (random(&mut r, lp), random(&mut r, ls));
            // Overwriting: NaN everywhere, so the gaps must stay NaN and the blocks be written.
            let d0 = if accumulate { d0 } else { vec![f32::NAN; ls] };
            let ts = upload(&[lp], &src);
            let td = upload(&[ls], &d0);
            run(&[copy_rows::scatter(gpu(), cr, &ts, &td, accumulate).unwrap()]);
            let mut want = d0.clone();
            cpu::copy_rows::scatter(cr, &src, &mut want, accumulate);
            let got = read(&td);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                // Exact: a copy, or one f32 addition done the same way on both sides.
                assert!(
                    g == w || (g.is_nan() && w.is_nan()),
                    "{cr:?} acc={accumulate}: element {i} is {g}, expected {w}"
                );
            }
        }
    }
}

#[test]
fn copy_rows_scatter_reference_is_gather_backward() {
    // The gather is linear; its backward, the scatter-add into zeros, must match finite
    // differences of a non-linear loss of the gathered rows.
    let cr = SPECS[2];
    let mut r = rng(3);
    let (src, w) = (
        random(&mut r, cr.strided_len()),
        random(&mut r, cr.packed_len()),
    );
    let gathered = |s: &[f32]| {
        let mut y = vec![0.0; cr.packed_len()];
        cpu::copy_rows::gather(&cr, s, &mut y, false);
        y
    };
    let dy = test_loss_grad(&gathered(&src), &w);
    let mut dsrc = vec![0.0; cr.strided_len()];
    cpu::copy_rows::scatter(&cr, &dy, &mut dsrc, true);
    let numeric = finite_differences(&src, |s| test_loss(&gathered(s), &w));
    assert_grad("gather dsrc", &dsrc, &numeric, 1e-3);
}

#[test]
fn copy_rows_rejects_mismatched_shapes() {
    let cr = SPECS[2];
    let strided = upload(&[cr.strided_len() - 1], &vec![0.0; cr.strided_len() - 1]);
    let packed = upload(&[21, 5], &[0.0; 105]);
    let err = copy_rows::gather(gpu(), &cr, &strided, &packed, false).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            Error::Shape {
                kernel: "copy_rows_gather",
                ..
            }
        ),
        "{msg}"
    );
    let short = format!("[{}]", cr.strided_len() - 1);
    assert!(msg.contains(&short) && msg.contains("[21, 5]"), "{msg}");
    let overlapping = CopyRows {
        block_stride: 10,
        ..cr
    };
    let err = copy_rows::scatter(gpu(), &overlapping, &packed, &strided, true).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("copy_rows_scatter: block_stride"),
        "{err}"
    );
}
