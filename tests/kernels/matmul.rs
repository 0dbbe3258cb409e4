use std::collections::BTreeSet;

use cpc::gpu::{KernelPath, Kernels};
use cpc::ops::matmul::{self, Matmul, MatmulKernel, Strided, Tiling};
use cpc::{cpu, Error};

use crate::common::*;

/// Shapes that are not multiples of the 64 x 64 tile or the 8 x 8 thread block.
const SHAPES: &[(usize, usize, usize, usize)] = &[
    (1, 1, 1, 1),
    (1, 7, 5, 3),
    (2, 65, 33, 17),
    (3, 9, 70, 66),
    (1, 128, 64, 40),
];

/// Shapes for the tiled kernel (GPU path): 1, odd sizes on either side of its tiles (32 to
/// 128), multiples of 4 (whole and partial tiles) and mixes (K % 4 == 0 with odd M and N),
/// so every entry point, scalar and vec4 loads of either operand, runs.
const TILED_SHAPES: &[(usize, usize, usize, usize)] = &[
    (1, 1, 1, 1),
    (1, 3, 17, 5),
    (2, 17, 63, 65),
    (1, 65, 127, 33),
    (1, 127, 3, 129),
    (1, 128, 128, 64),
    (2, 68, 36, 20),
    (1, 4, 132, 12),
    (2, 33, 65, 36),
];

/// Check the device's kernel; see [`check_forward_with`].
fn check_forward(mm: Matmul, seed: u64) {
    check_forward_with(mm, seed, MatmulKernel::for_device(gpu()));
}

/// Run `mm` with `kernel` on random operands (C NaN-filled unless accumulating) against the
/// CPU reference. Returns the launch's name (which entry point ran).
fn check_forward_with(mm: Matmul, seed: u64, kernel: MatmulKernel) -> &'static str {
    let mut r = rng(seed);
    let [sa, sb, sc] = mm.batch_strides();
    let la = mm.a.offset + (mm.batch - 1) * sa + mm.m * mm.k;
    let lb = mm.b.offset + (mm.batch - 1) * sb + mm.k * mm.n;
    let lc = mm.c.offset + (mm.batch - 1) * sc + mm.m * mm.n;
    let (a, b, c0) = (random(&mut r, la), random(&mut r, lb), random(&mut r, lc));
    let (ta, tb) = (upload(&[la], &a), upload(&[lb], &b));
    let tc = if mm.accumulate {
        upload(&[lc], &c0)
    } else {
        nan_tensor(&[lc])
    };
    let launch = matmul::forward_with(gpu(), &mm, &ta, &tb, &tc, kernel).unwrap();
    let name = launch.name;
    run(&[launch]);
    let mut want = c0.clone();
    cpu::matmul::forward(&mm, &a, &b, &mut want);
    let got = read(&tc);
    // Strided views leave gaps the kernel must not touch; compare only written elements,
    // and check the gaps still hold NaN (or c0 when accumulating).
    let mut written = vec![false; lc];
    for bi in 0..mm.batch {
        for i in 0..mm.m * mm.n {
            written[mm.c.offset + bi * sc + i] = true;
        }
    }
    for i in 0..lc {
        if !written[i] {
            assert!(
                got[i].is_nan() || got[i] == c0[i],
                "{mm:?}: element {i} outside C was written"
            );
        }
    }
    let (g, w): (Vec<f32>, Vec<f32>) = (0..lc)
        .filter(|&i| written[i])
        .map(|i| (got[i], want[i]))
        .unzip();
    // f32 sums of K products of values in [-1, 1]: error grows like sqrt(K) * eps * |terms|.
    let tol = 1e-5 * (mm.k as f32).sqrt() * 4.0;
    assert_close(&format!("{kernel:?} {mm:?}"), &g, &w, tol, 1e-5);
    name
}

#[test]
fn matmul_forward_matches_reference() {
    for (seed, &(batch, m, n, k)) in SHAPES.iter().enumerate() {
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            check_forward(
                Matmul::new(batch, m, n, k).trans_a(ta).trans_b(tb),
                seed as u64,
            );
        }
    }
}

#[test]
fn matmul_forward_strided_accumulating_scaled() {
    let mm = Matmul::new(3, 7, 9, 5)
        .trans_b(true)
        .accumulate(true)
        .alpha(0.5)
        .strides(
            Strided {
                offset: 3,
                batch_stride: 50,
            },
            Strided {
                offset: 1,
                batch_stride: 0,
            },
            Strided {
                offset: 5,
                batch_stride: 70,
            },
        );
    check_forward(mm, 11);
    check_forward(mm.accumulate(false).trans_a(true), 12);
}

#[test]
fn matmul_tiled_forward_matches_reference() {
    for &tiling in Tiling::CANDIDATES {
        let kernel = MatmulKernel::Tiled(tiling);
        let mut entries = BTreeSet::new();
        for (seed, &(batch, m, n, k)) in TILED_SHAPES.iter().enumerate() {
            for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                let mm = Matmul::new(batch, m, n, k).trans_a(ta).trans_b(tb);
                entries.insert(check_forward_with(mm, seed as u64, kernel));
            }
        }
        let all = [
            "matmul_tiled.tiled",
            "matmul_tiled.tiled_a4",
            "matmul_tiled.tiled_b4",
            "matmul_tiled.tiled_a4_b4",
        ];
        assert_eq!(entries, all.into(), "{tiling:?}: entry points run");
    }
}

#[test]
fn matmul_tiled_forward_strided_accumulating_scaled() {
    let kernel = MatmulKernel::Tiled(Tiling::DEFAULT);
    let view = |offset, batch_stride| Strided {
        offset,
        batch_stride,
    };
    for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
        // Offsets and strides that are not multiples of 4: element loads.
        let odd = Matmul::new(3, 37, 9, 21)
            .trans_a(ta)
            .trans_b(tb)
            .alpha(0.5)
            .strides(view(3, 800), view(1, 0), view(5, 350));
        // Multiples of 4 with gaps between the batches: vec4 loads of views.
        let even = Matmul::new(2, 36, 68, 20)
            .trans_a(ta)
            .trans_b(tb)
            .alpha(-1.5)
            .strides(view(8, 724), view(4, 1364), view(12, 2452));
        for (i, mm) in [odd, even].into_iter().enumerate() {
            for accumulate in [false, true] {
                let entry = check_forward_with(mm.accumulate(accumulate), 20 + i as u64, kernel);
                assert_eq!(entry.ends_with("tiled"), i == 0, "{mm:?}: {entry}");
            }
        }
    }
}

/// dA and dB of `kernel` against the CPU reference, for every transpose, overwriting
/// (NaN-filled outputs) and accumulating onto random values.
fn check_backward(kernel: MatmulKernel, seed: u64) {
    for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
        for accumulate in [false, true] {
            let mm = Matmul::new(2, 13, 9, 70).trans_a(ta).trans_b(tb).alpha(1.5);
            let mut r = rng(seed);
            let (a, b, dc) = (
                random(&mut r, 2 * 13 * 70),
                random(&mut r, 2 * 70 * 9),
                random(&mut r, 2 * 13 * 9),
            );
            let (da0, db0) = (random(&mut r, a.len()), random(&mut r, b.len()));
            let (ta_, tb_, tdc) = (
                upload(&[2, 13 * 70], &a),
                upload(&[2, 70 * 9], &b),
                upload(&[2, 13 * 9], &dc),
            );
            let (tda, tdb) = if accumulate {
                (upload(&[a.len()], &da0), upload(&[b.len()], &db0))
            } else {
                (nan_tensor(&[a.len()]), nan_tensor(&[b.len()]))
            };
            let launches =
                matmul::backward_with(gpu(), &mm, &ta_, &tb_, &tdc, &tda, &tdb, accumulate, kernel)
                    .unwrap();
            run(&launches);
            let (mut da, mut db) = (da0.clone(), db0.clone());
            cpu::matmul::backward(&mm, &a, &b, &dc, &mut da, &mut db, accumulate);
            assert_close(&format!("dA {kernel:?}"), &read(&tda), &da, 2e-4, 1e-4);
            assert_close(&format!("dB {kernel:?}"), &read(&tdb), &db, 2e-4, 1e-4);
        }
    }
}

#[test]
fn matmul_tiled_backward_matches_reference() {
    check_backward(MatmulKernel::Tiled(Tiling::DEFAULT), 6);
}

#[test]
fn matmul_backward_reference_matches_finite_differences() {
    for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
        let mm = Matmul::new(2, 3, 4, 5).trans_a(ta).trans_b(tb).alpha(0.7);
        let mut r = rng(3);
        let (a, b, w) = (random(&mut r, 30), random(&mut r, 40), random(&mut r, 24));
        let loss = |a: &[f32], b: &[f32]| {
            let mut c = vec![0.0; 24];
            cpu::matmul::forward(&mm, a, b, &mut c);
            test_loss(&c, &w)
        };
        let mut c = vec![0.0; 24];
        cpu::matmul::forward(&mm, &a, &b, &mut c);
        let dc = test_loss_grad(&c, &w);
        let (mut da, mut db) = (vec![0.0; 30], vec![0.0; 40]);
        cpu::matmul::backward(&mm, &a, &b, &dc, &mut da, &mut db, false);
        assert_grad("dA", &da, &finite_differences(&a, |x| loss(x, &b)), 1e-3);
        assert_grad("dB", &db, &finite_differences(&b, |x| loss(&a, x)), 1e-3);
    }
}

#[test]
fn matmul_backward_matches_reference() {
    check_backward(MatmulKernel::RegisterBlock, 5);
}

#[test]
fn matmul_rejects_mismatched_shapes() {
    let a = upload(&[4, 5], &[0.0; 20]);
    let b = upload(&[6, 3], &[0.0; 18]);
    let c = upload(&[4, 3], &[0.0; 12]);
    let err = matmul::forward(gpu(), &Matmul::new(1, 4, 3, 5), &a, &b, &c).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            Error::Shape {
                kernel: "matmul",
                ..
            }
        ),
        "{msg}"
    );
    assert!(msg.contains("[6, 3]") && msg.contains("K=5"), "{msg}");
}

#[test]
fn kernel_path_follows_the_flag_then_the_adapter() {
    use wgpu::DeviceType::{Cpu, DiscreteGpu};
    let path = |asked, ty| KernelPath::choose(Some(asked), ty).unwrap().0;
    assert_eq!(path(Kernels::Auto, Cpu), KernelPath::Cpu);
    assert_eq!(path(Kernels::Auto, DiscreteGpu), KernelPath::Gpu);
    assert_eq!(path(Kernels::Gpu, Cpu), KernelPath::Gpu);
    assert_eq!(path(Kernels::Cpu, DiscreteGpu), KernelPath::Cpu);
    assert_eq!("GPU".parse::<Kernels>().unwrap(), Kernels::Gpu);
    assert!("fast".parse::<Kernels>().is_err());
}
