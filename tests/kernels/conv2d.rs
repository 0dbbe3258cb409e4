use cpc::gpu::Tensor;
use cpc::ops::conv2d::{self, Activation, Conv2d, ConvKernel, WeightBinding};
use cpc::ops::elementwise::Op;
use cpc::ops::matmul::Tiling;
use cpc::{cpu, Error};

use crate::common::*;

/// conv(n, cin, cout, h, w, k, stride, pad): a square kernel, stride and padding, one line
/// a case.
#[allow(clippy::too_many_arguments)]
fn conv(
    n: usize,
    cin: usize,
    cout: usize,
    h: usize,
    w: usize,
    k: usize,
    stride: usize,
    pad: usize,
) -> Conv2d {
    rect(n, cin, cout, [h, w], [k, k], [stride, stride], [pad, pad])
}

/// rect(n, cin, cout, [h, w], [kh, kw], [sh, sw], [ph, pw]): any kernel, stride and padding.
fn rect(
    n: usize,
    cin: usize,
    cout: usize,
    [h, w]: [usize; 2],
    [kh, kw]: [usize; 2],
    [sh, sw]: [usize; 2],
    [ph, pw]: [usize; 2],
) -> Conv2d {
    Conv2d {
        n,
        cin,
        h,
        w,
        cout,
        kh,
        kw,
        sh,
        sw,
        ph,
        pw,
    }
}

fn len(shape: [usize; 4]) -> usize {
    shape.iter().product()
}

/// f32 sums of `terms` products of values in [-1, 1], in another order than the f64
/// reference: rounding errors of terms at most 1 in size add up like sqrt(terms) * eps.
fn tol(terms: usize) -> f32 {
    4e-6 * (terms as f32).sqrt() + 1e-6
}

/// Square kernels 1, 3, 5 and 7 at strides 1, 2, 3 and 4, without and with padding, on odd
/// non-square images: 9 x 11 and 11 x 9 (the last row and column of a window are where h and
/// w swaps show).
fn small_cases() -> Vec<Conv2d> {
    let mut cases = Vec::new();
    for (i, k) in [1, 3, 5, 7].into_iter().enumerate() {
        for stride in [1, 2, 3, 4] {
            for pad in [0, k / 2] {
                let (h, w) = if i % 2 == 0 { (9, 11) } else { (11, 9) };
                cases.push(conv(2, 3, 5, h, w, k, stride, pad));
            }
        }
    }
    cases
}

/// Rectangular kernels, strides and padding: a 1-D conv (1 x 10 at stride 1 x 5, an audio
/// encoder's first layer), a 3 x 1 kernel, 2 x 5 at stride 2 x 3 padded 1 x 2, 4 x 3 at
/// stride 1 x 4 padded 2 x 0 (a column stride wider than the kernel: a phase with no taps),
/// 5 x 2 at stride 3 x 1 padded 0 x 1 on a 1-wide image.
fn rect_cases() -> Vec<Conv2d> {
    vec![
        rect(2, 1, 5, [1, 63], [1, 10], [1, 5], [0, 0]),
        rect(2, 3, 5, [9, 7], [3, 1], [1, 1], [1, 0]),
        rect(2, 3, 5, [11, 13], [2, 5], [2, 3], [1, 2]),
        rect(2, 3, 5, [7, 10], [4, 3], [1, 4], [2, 0]),
        rect(2, 3, 5, [13, 1], [5, 2], [3, 1], [0, 1]),
    ]
}

/// An audio encoder's five 1-D convs (widths 10, 8, 4, 4, 4 at strides 5, 4, 2, 2, 2, no
/// padding) scaled down: 2 clips of 600 samples, 1 channel in, then 12 and 20 channels
/// (past a block of 8), each layer's width the last one's output.
fn audio_cases() -> Vec<Conv2d> {
    let (mut width, mut cin) = (600, 1);
    let mut cases = Vec::new();
    for (i, (k, s)) in [(10, 5), (8, 4), (4, 2), (4, 2), (4, 2)]
        .into_iter()
        .enumerate()
    {
        let cout = if i % 2 == 0 { 12 } else { 20 };
        let c = rect(2, cin, cout, [1, width], [1, k], [1, s], [0, 0]);
        (width, cin) = (c.out_hw().1, cout);
        cases.push(c);
    }
    cases
}

fn check_forward(c: Conv2d, x_offset: usize, seed: u64) {
    check_forward_with(c, x_offset, seed, ConvKernel::for_device(gpu()));
}

fn check_forward_with(c: Conv2d, x_offset: usize, seed: u64, kernel: ConvKernel) {
    check_forward_as(c, x_offset, seed, kernel, Activation::Identity);
}

/// The forward into a NaN-filled y against the CPU reference, followed by a ReLU where `act`
/// fuses one.
fn check_forward_as(c: Conv2d, x_offset: usize, seed: u64, kernel: ConvKernel, act: Activation) {
    let mut r = rng(seed);
    let (x, w, b) = (
        random(&mut r, len(c.x_shape())),
        random(&mut r, len(c.w_shape())),
        random(&mut r, c.cout),
    );
    let tx = upload_at(x_offset, &c.x_shape(), &x);
    let (tw, tb) = (upload(&c.w_shape(), &w), upload(&[c.cout], &b));
    let ty = nan_tensor(&c.y_shape());
    run(&conv2d::forward_with(gpu(), &c, &tx, &tw, &tb, &ty, act, kernel).unwrap());
    let mut want = vec![0.0; len(c.y_shape())];
    cpu::conv2d::forward(&c, &x, &w, &b, &mut want);
    if act == Activation::Relu {
        let pre = want.clone();
        cpu::elementwise::launch(Op::Relu, &pre, &pre, &mut want, 1.0, false);
    }
    assert_close(
        &format!("{c:?} {kernel:?} {act:?}"),
        &read(&ty),
        &want,
        tol(c.cin * c.taps()),
        1e-5,
    );
}

/// `data` as a view `offset` elements into a larger buffer (as model activations are).
fn upload_at(offset: usize, shape: &[usize], data: &[f32]) -> Tensor {
    let mut host = vec![f32::NAN; offset + data.len()];
    host[offset..].copy_from_slice(data);
    upload(&[host.len()], &host).view(offset, shape)
}

#[test]
fn conv2d_forward_matches_reference() {
    for (seed, c) in small_cases().into_iter().enumerate() {
        check_forward(c, 0, seed as u64);
    }
    // More pixels than one workgroup's 512 and channels past a block of 8, x at an offset.
    check_forward(conv(3, 4, 17, 13, 15, 3, 1, 1), 5, 100);
    check_forward(conv(2, 9, 11, 17, 19, 5, 2, 2), 3, 101);
    // Padding wider than half the kernel: some outputs see only padding (and the bias).
    check_forward(conv(1, 2, 3, 4, 5, 3, 1, 3), 0, 102);
}

#[test]
fn conv2d_forward_over_several_weight_windows() {
    // 64 x 3 x 3 = 576 weights per output channel: 24 channels a 64 KiB window, so 44
    // channels take two windows, the second one part full.
    let c = conv(2, 64, 44, 5, 6, 3, 1, 1);
    let win = c.weight_windows(WeightBinding::Uniform);
    assert_eq!((win.row_blocks, win.col_ranges), (2, 1), "{win:?}");
    check_forward(c, 3, 103);
    // 45 x 7 x 7 = 2205 weights per output channel: 8 channels do not fit one window, so
    // the input channels are split in two and the second half adds to the first; 11 output
    // channels make two row blocks, the second with 3 channels.
    let c = conv(2, 45, 11, 7, 6, 7, 2, 3);
    let win = c.weight_windows(WeightBinding::Uniform);
    assert_eq!(
        (win.row_blocks, win.col_ranges, win.rows),
        (2, 2, 8),
        "{win:?}"
    );
    check_forward(c, 0, 104);
}

/// GPU backward against the CPU backward: dx overwritten (NaN-filled first) and accumulated,
/// dw and db accumulated onto random values.
fn check_backward(c: Conv2d, seed: u64) {
    check_backward_with(c, seed, ConvKernel::for_device(gpu()));
}

fn check_backward_with(c: Conv2d, seed: u64, kernel: ConvKernel) {
    check_input_grad(c, seed, kernel, false);
    let mut r = rng(seed + 1);
    let (nx, nw, ny) = (len(c.x_shape()), len(c.w_shape()), len(c.y_shape()));
    let (x, dy) = (random(&mut r, nx), random(&mut r, ny));
    let (dw0, db0) = (random(&mut r, nw), random(&mut r, c.cout));
    let (tx, tdy) = (upload(&c.x_shape(), &x), upload(&c.y_shape(), &dy));
    let (tdw, tdb) = (upload(&c.w_shape(), &dw0), upload(&[c.cout], &db0));
    run(&conv2d::backward_weight_with(gpu(), &c, &tx, &tdy, &tdw, &tdb, kernel).unwrap());
    let (mut dw, mut db) = (dw0.clone(), db0.clone());
    cpu::conv2d::backward_weight(&c, &x, &dy, &mut dw, &mut db);
    let (oh, ow) = c.out_hw();
    let terms = c.n * oh * ow;
    let what = format!("{c:?} {kernel:?}");
    assert_close(&format!("dw {what}"), &read(&tdw), &dw, tol(terms), 1e-5);
    assert_close(&format!("db {what}"), &read(&tdb), &db, tol(terms), 1e-5);
}

/// The input gradient into a NaN-filled dx and added to random values; `masked`: masked by
/// a ReLU output (half its entries 0, the rest positive, at an offset in its buffer), as the
/// CPU reference's input gradient followed by the ReLU's backward.
fn check_input_grad(c: Conv2d, seed: u64, kernel: ConvKernel, masked: bool) {
    let mut r = rng(seed);
    let (nx, nw, ny) = (len(c.x_shape()), len(c.w_shape()), len(c.y_shape()));
    let (w, dy, dx0) = (random(&mut r, nw), random(&mut r, ny), random(&mut r, nx));
    let mask: Vec<f32> = random(&mut r, nx).iter().map(|v| v.max(0.0)).collect();
    let (tw, tdy) = (upload(&c.w_shape(), &w), upload(&c.y_shape(), &dy));
    let tmask = masked.then(|| upload_at(3, &c.x_shape(), &mask));
    let what = format!("{c:?} {kernel:?} masked {masked}");
    for accumulate in [false, true] {
        let tdx = if accumulate {
            upload(&c.x_shape(), &dx0)
        } else {
            nan_tensor(&c.x_shape())
        };
        let relu = tmask.as_ref();
        let launches =
            conv2d::backward_input_with(gpu(), &c, &tdy, &tw, &tdx, accumulate, relu, kernel);
        run(&launches.unwrap());
        let mut want = dx0.clone();
        if masked {
            let mut sum = vec![0.0; nx];
            cpu::conv2d::backward_input(&c, &dy, &w, &mut sum, false);
            cpu::elementwise::launch(Op::ReluBackward, &mask, &sum, &mut want, 1.0, accumulate);
        } else {
            cpu::conv2d::backward_input(&c, &dy, &w, &mut want, accumulate);
        }
        let terms = c.cout * c.kh.div_ceil(c.sh) * c.kw.div_ceil(c.sw);
        assert_close(
            &format!("dx (accumulate {accumulate}) {what}"),
            &read(&tdx),
            &want,
            tol(terms),
            1e-5,
        );
    }
}

#[test]
fn conv2d_backward_matches_reference() {
    let cases = [
        conv(2, 3, 5, 9, 11, 3, 2, 1),
        conv(2, 3, 5, 11, 9, 3, 2, 0),
        conv(2, 3, 5, 9, 11, 3, 1, 1),
        conv(2, 3, 5, 11, 9, 7, 4, 3),
        conv(2, 5, 3, 9, 11, 7, 4, 0),
        conv(2, 3, 5, 11, 9, 1, 2, 0),
        conv(2, 3, 5, 9, 11, 5, 1, 2),
        conv(2, 5, 3, 11, 9, 5, 2, 2),
        conv(1, 2, 3, 4, 5, 3, 1, 3),
        // Past one workgroup of pixels (585 > 512) and past a block of 8 channels.
        conv(3, 9, 17, 13, 15, 3, 1, 1),
    ];
    for (seed, c) in cases.into_iter().enumerate() {
        check_backward(c, seed as u64);
    }
}

#[test]
fn conv2d_backward_weight_split_over_uneven_chunks() {
    let c = conv(89, 9, 9, 3, 4, 7, 1, 3);
    let (per_chunk, chunks) = c.weight_grad_chunks(gpu());
    assert!(
        per_chunk > 1 && chunks * per_chunk > c.n,
        "this case should have several images per chunk and a short last chunk: {per_chunk} x {chunks}"
    );
    check_backward(c, 7);
    check_backward_with(c, 8, ConvKernel::Tiled(Tiling::DEFAULT));
}

#[test]
fn conv2d_backward_over_several_weight_windows() {
    // The input gradient reads its weights in windows whose rows are input channels: 64
    // rows of 44 x 3 x 3 take two windows; 9 rows of 45 x 7 x 7 (past 8 rows a window)
    // split the output channels in two, the second half adding to the first.
    for (seed, c, blocks, ranges) in [
        (105, conv(2, 64, 44, 5, 6, 3, 1, 1), 2, 1),
        (106, conv(1, 9, 45, 6, 7, 7, 1, 3), 2, 2),
    ] {
        let win = c.input_grad_windows(WeightBinding::Uniform);
        assert_eq!(
            (win.row_blocks, win.col_ranges),
            (blocks, ranges),
            "{win:?}"
        );
        check_backward(c, seed);
    }
}

#[test]
fn conv2d_with_the_weights_in_one_storage_window() {
    // A GPU's path (WeightBinding::for_device picks it on any non-CPU adapter), run here on
    // lavapipe: one window of all the weights, one dispatch, the Storage shader variants.
    let cases = [
        conv(2, 64, 44, 5, 6, 3, 1, 1),
        conv(2, 45, 11, 7, 6, 7, 2, 3),
        conv(3, 9, 17, 13, 15, 3, 1, 1),
        conv(2, 5, 3, 11, 9, 5, 2, 2),
    ];
    for (seed, c) in cases.into_iter().enumerate() {
        let win = c.weight_windows(WeightBinding::Storage);
        assert_eq!(win.count(), 1, "{win:?}");
        let storage = ConvKernel::Direct(WeightBinding::Storage);
        check_forward_with(c, 2, 200 + seed as u64, storage);
        check_backward_with(c, 300 + seed as u64, storage);
    }
}

#[test]
fn conv2d_tiled_matches_reference() {
    // The GPU path (ConvKernel::for_device on a GPU), run here on lavapipe with every
    // tiling: square kernels 1 to 7 at strides 1 to 4, with and without padding, then tiles past the
    // edge in pixels and channels (585 pixels, 17 channels), x at an offset, padding wider
    // than half the kernel, and the layers of several weight windows on the CPU path.
    let mut cases = small_cases();
    cases.extend([
        conv(3, 9, 17, 13, 15, 3, 1, 1),
        conv(2, 9, 11, 17, 19, 5, 2, 2),
        conv(1, 2, 3, 4, 5, 3, 1, 3),
        conv(2, 45, 11, 7, 6, 7, 2, 3),
        conv(1, 9, 45, 6, 7, 7, 1, 3),
    ]);
    for (t, &tiling) in Tiling::CANDIDATES.iter().enumerate() {
        for (i, &c) in cases.iter().enumerate() {
            let seed = (1000 * t + i) as u64;
            check_forward_with(c, i % 3, seed, ConvKernel::Tiled(tiling));
            check_backward_with(c, seed, ConvKernel::Tiled(tiling));
        }
    }
}

/// The CPU path with both weight bindings, then the GPU path with every tiling.
fn every_kernel() -> Vec<ConvKernel> {
    let mut kernels = vec![
        ConvKernel::Direct(WeightBinding::Uniform),
        ConvKernel::Direct(WeightBinding::Storage),
    ];
    kernels.extend(Tiling::CANDIDATES.iter().map(|&t| ConvKernel::Tiled(t)));
    kernels
}

/// `check(case, its index, a seed of its own, kernel)` for every case on [`every_kernel`].
fn on_every_kernel(cases: &[Conv2d], seed: usize, check: impl Fn(Conv2d, usize, u64, ConvKernel)) {
    for (k, kernel) in every_kernel().into_iter().enumerate() {
        for (i, &c) in cases.iter().enumerate() {
            check(c, i, (seed + 100 * k + i) as u64, kernel);
        }
    }
}

#[test]
fn conv2d_rectangular_matches_reference_on_both_paths() {
    let mut cases = rect_cases();
    cases.extend(audio_cases());
    on_every_kernel(&cases, 2000, |c, i, seed, kernel| {
        check_forward_with(c, i % 3, seed, kernel);
        check_backward_with(c, seed, kernel);
    });
}

#[test]
fn conv2d_with_a_fused_relu_matches_reference_on_both_paths() {
    // The ReLU in the forward's store and the ReLU's backward folded into the input gradient,
    // on every kernel: uniform windows that split the forward's input channels (the second
    // adds to the first, and only then may the ReLU be taken) and the input gradient's output
    // channels (each share masked before it is added), tiles past the edge, a stride and a
    // rectangular kernel.
    let cases = [
        conv(2, 45, 11, 7, 6, 7, 2, 3),
        conv(1, 9, 45, 6, 7, 7, 1, 3),
        conv(3, 9, 17, 13, 15, 3, 1, 1),
        rect(2, 3, 5, [11, 13], [2, 5], [2, 3], [1, 2]),
    ];
    on_every_kernel(&cases, 4000, |c, i, seed, kernel| {
        check_forward_as(c, i % 3, seed, kernel, Activation::Relu);
        check_input_grad(c, seed, kernel, true);
    });
}

#[test]
fn conv2d_at_the_largest_taps_and_stride() {
    // A 1 x MAX_TAPS kernel: 8 output channels' taps of one input channel fill a uniform
    // window, so the 2 input channels take a window each. A MAX_STRIDE x MAX_STRIDE stride:
    // 256 phases, most of them without a tap of the 3 x 2 kernel.
    let cases = [
        rect(
            1,
            2,
            3,
            [1, conv2d::MAX_TAPS + 2],
            [1, conv2d::MAX_TAPS],
            [1, 1],
            [0, 0],
        ),
        rect(2, 3, 4, [35, 20], [3, 2], [conv2d::MAX_STRIDE; 2], [1, 1]),
    ];
    let win = cases[0].weight_windows(WeightBinding::Uniform);
    assert_eq!((win.cols, win.col_ranges), (1, 2), "{win:?}");
    for (i, c) in cases.into_iter().enumerate() {
        for kernel in [
            ConvKernel::for_device(gpu()),
            ConvKernel::Tiled(Tiling::DEFAULT),
        ] {
            check_forward_with(c, 1, 3000 + i as u64, kernel);
            check_backward_with(c, 3100 + i as u64, kernel);
        }
    }
}

#[test]
fn conv2d_backward_reference_matches_finite_differences() {
    let cases = [
        conv(2, 2, 3, 5, 6, 3, 2, 1),
        conv(1, 3, 2, 6, 5, 5, 1, 2),
        rect(2, 2, 3, [5, 9], [2, 4], [2, 3], [1, 2]),
    ];
    for (seed, c) in cases.into_iter().enumerate() {
        let mut r = rng(seed as u64);
        let (nx, nw, ny) = (len(c.x_shape()), len(c.w_shape()), len(c.y_shape()));
        let (x, w, b, target) = (
            random(&mut r, nx),
            random(&mut r, nw),
            random(&mut r, c.cout),
            random(&mut r, ny),
        );
        let loss = |x: &[f32], w: &[f32], b: &[f32]| {
            let mut y = vec![0.0; ny];
            cpu::conv2d::forward(&c, x, w, b, &mut y);
            test_loss(&y, &target)
        };
        let mut y = vec![0.0; ny];
        cpu::conv2d::forward(&c, &x, &w, &b, &mut y);
        let dy = test_loss_grad(&y, &target);
        let mut dx = vec![f32::NAN; nx];
        cpu::conv2d::backward_input(&c, &dy, &w, &mut dx, false);
        let (mut dw, mut db) = (vec![0.0; nw], vec![0.0; c.cout]);
        cpu::conv2d::backward_weight(&c, &x, &dy, &mut dw, &mut db);
        let what = format!("{c:?}");
        assert_grad(
            &format!("dx {what}"),
            &dx,
            &finite_differences(&x, |x| loss(x, &w, &b)),
            1e-3,
        );
        assert_grad(
            &format!("dw {what}"),
            &dw,
            &finite_differences(&w, |w| loss(&x, w, &b)),
            1e-3,
        );
        assert_grad(
            &format!("db {what}"),
            &db,
            &finite_differences(&b, |b| loss(&x, &w, b)),
            1e-3,
        );
    }
}

#[track_caller]
fn assert_shape_err(err: Error, kernel: &str, parts: &[&str]) {
    let msg = err.to_string();
    assert!(
        matches!(err, Error::Shape { kernel: k, .. } if k == kernel),
        "{msg}"
    );
    for part in parts {
        assert!(msg.contains(part), "'{part}' missing from: {msg}");
    }
}

#[test]
fn conv2d_rejects_mismatched_shapes() {
    let c = conv(2, 3, 4, 6, 6, 3, 2, 1);
    let t = |shape: &[usize]| upload(shape, &vec![0.0; shape.iter().product()]);
    let (x, w, b, y) = (t(&c.x_shape()), t(&c.w_shape()), t(&[4]), t(&c.y_shape()));
    let bad_w = t(&[4, 3, 5, 5]);
    let err = conv2d::forward(gpu(), &c, &x, &bad_w, &b, &y, Activation::Identity).unwrap_err();
    assert_shape_err(err, "conv2d_forward", &["[4, 3, 5, 5]", "[4, 3, 3, 3]"]);
    let bad_y = t(&[2, 4, 6, 6]);
    let err = conv2d::backward_input(gpu(), &c, &bad_y, &w, &x, false, None).unwrap_err();
    assert_shape_err(
        err,
        "conv2d_backward_input",
        &["[2, 4, 6, 6]", "[2, 4, 3, 3]"],
    );
    let bad_b = t(&[3]);
    let err = conv2d::backward_weight(gpu(), &c, &x, &y, &w, &bad_b).unwrap_err();
    assert_shape_err(err, "conv2d_backward_weight", &["[3]", "[4]"]);
    // Kernels of no taps or too many, strides of 0 or too wide, padding wider than the
    // kernel, and a kernel larger than the padded image.
    let (max_taps, max_stride) = (conv2d::MAX_TAPS, conv2d::MAX_STRIDE);
    for (bad, part) in [
        (Conv2d { kh: 0, ..c }, "kernel 0 x 3 has 0 taps".to_string()),
        (
            Conv2d { kw: max_taps, ..c },
            format!(
                "kernel 3 x {max_taps} has {} taps; it needs 1 to {max_taps} (MAX_TAPS)",
                3 * max_taps
            ),
        ),
        (Conv2d { sh: 0, ..c }, "stride 0 x 2".to_string()),
        (
            Conv2d {
                sw: max_stride + 1,
                ..c
            },
            format!(
                "stride 2 x {} must lie in 1..={max_stride} (MAX_STRIDE)",
                max_stride + 1
            ),
        ),
        (
            Conv2d { pw: 4, ..c },
            "padding 1 x 4 is wider than the kernel 3 x 3".to_string(),
        ),
        (
            Conv2d {
                kh: 7,
                kw: 7,
                ph: 0,
                pw: 0,
                ..c
            },
            "output 0 x 0".to_string(),
        ),
    ] {
        let err = conv2d::forward(gpu(), &bad, &x, &w, &b, &y, Activation::Identity).unwrap_err();
        assert_shape_err(err, "conv2d_forward", &[&part]);
    }
}
