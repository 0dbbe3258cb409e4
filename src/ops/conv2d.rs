//! 2D convolution over a batch of images (shaders/conv2d_forward.wgsl,
//! conv2d_backward_input.wgsl, conv2d_backward_weight.wgsl), all as implicit matrix products.
//! The forward and input gradient have a second kernel each, tiled through workgroup memory
//! for real GPUs (shaders/conv2d_tiled.wgsl); the device's kernel path picks one
//! ([`ConvKernel::for_device`]) and the `_with` launchers take either.
//!
//! Layouts as in PyTorch: x [N, Cin, H, W], weight [Cout, Cin, KH, KW], bias [Cout],
//! y [N, Cout, OH, OW] with OH = (H + 2 PH - KH) / SH + 1 and OW = (W + 2 PW - KW) / SW + 1,
//! zero padding. Kernels, strides and padding may differ along the two axes (a 1-D
//! convolution is KH = 1 over images of height 1), within [`MAX_TAPS`], [`MAX_STRIDE`] and
//! padding no wider than the kernel.
//! The forward overwrites y; backward_input overwrites dx (or adds, by flag); backward_weight
//! adds to dw and db (parameter gradients). A ReLU fuses into either side: the forward may
//! store relu(y) ([`Activation::Relu`]), and the input gradient may be masked by the output
//! of the ReLU its input came through, so that it is that ReLU's input gradient. The weight gradient is summed per chunk of the
//! batch into a partial buffer the plan owns, then the chunks are added with sum_channels.

use crate::error::{shape_err, Result};
use crate::gpu::{rel_offset, spread, Gpu, KernelPath, Launch, Shader, Tensor};
use crate::ops::matmul::Tiling;
use crate::ops::sum_channels;
use crate::ops::tune::ConvPass;

/// One of this file's parameter structs: the convolution's geometry (n, cin, h, w, cout, kh,
/// kw, sh, sw, ph, pw, oh, ow: the members every one begins with, as [`Conv2d::geometry`]
/// lists them), then the members given, the padding members zero.
macro_rules! params {
    ($ty:ident, $c:expr, { $($f:ident : $v:expr),* $(,)? }) => {{
        let [n, cin, h, w, cout, kh, kw, sh, sw, ph, pw, oh, ow] = $c.geometry();
        // A struct without padding members has nothing left to default.
        #[allow(clippy::needless_update)]
        $ty { n, cin, h, w, cout, kh, kw, sh, sw, ph, pw, oh, ow, $($f: $v,)* ..Default::default() }
    }};
}

crate::uniform_struct! {
    /// WGSL twin: Conv2dForwardParams in shaders/conv2d_forward.wgsl.
    pub struct Conv2dForwardParams {
        pub n: u32,
        pub cin: u32,
        pub h: u32,
        pub w: u32,
        pub cout: u32,
        pub kh: u32,
        pub kw: u32,
        pub sh: u32,
        pub sw: u32,
        pub ph: u32,
        pub pw: u32,
        pub oh: u32,
        pub ow: u32,
        pub x_offset: u32,
        pub b_offset: u32,
        pub y_offset: u32,
        pub co_base: u32,
        pub ci_base: u32,
        pub ci_count: u32,
        pub accumulate: u32,
        pub window_cis: u32,
        pub relu: u32,
        pub _pad0: u32,
        pub _pad1: u32,
    }
}

crate::uniform_struct! {
    /// WGSL twin: WeightWindowsParams in shaders/conv2d_weight_windows.wgsl.
    pub struct WeightWindowsParams {
        pub cout: u32,
        pub cin: u32,
        pub kk: u32,
        pub w_offset: u32,
        pub rows: u32,
        pub cols: u32,
        pub col_ranges: u32,
        pub windows: u32,
        pub transpose: u32,
        pub windows_offset: u32,
        pub window: u32,
        pub _pad0: u32,
    }
}

crate::uniform_struct! {
    /// WGSL twin: Conv2dBackwardInputParams in shaders/conv2d_backward_input.wgsl.
    pub struct Conv2dBackwardInputParams {
        pub n: u32,
        pub cin: u32,
        pub h: u32,
        pub w: u32,
        pub cout: u32,
        pub kh: u32,
        pub kw: u32,
        pub sh: u32,
        pub sw: u32,
        pub ph: u32,
        pub pw: u32,
        pub oh: u32,
        pub ow: u32,
        /// ceil(H / SH), ceil(W / SW): a stride phase's rows and columns.
        pub hq: u32,
        pub wq: u32,
        pub dy_offset: u32,
        pub dx_offset: u32,
        pub accumulate: u32,
        pub ci_base: u32,
        pub co_base: u32,
        pub co_count: u32,
        pub window_cos: u32,
        pub relu: u32,
        pub mask_offset: u32,
    }
}

crate::uniform_struct! {
    /// WGSL twin: Conv2dBackwardWeightParams in shaders/conv2d_backward_weight.wgsl.
    pub struct Conv2dBackwardWeightParams {
        pub n: u32,
        pub cin: u32,
        pub h: u32,
        pub w: u32,
        pub cout: u32,
        pub kh: u32,
        pub kw: u32,
        pub sh: u32,
        pub sw: u32,
        pub ph: u32,
        pub pw: u32,
        pub oh: u32,
        pub ow: u32,
        /// Images per chunk of the batch (the last chunk may hold fewer).
        pub chunk: u32,
        pub x_offset: u32,
        pub dy_offset: u32,
        pub partial_offset: u32,
        pub _pad0: u32,
        pub _pad1: u32,
        pub _pad2: u32,
    }
}

crate::uniform_struct! {
    /// WGSL twin: Conv2dTiledParams in shaders/conv2d_tiled.wgsl.
    pub struct Conv2dTiledParams {
        pub n: u32,
        pub cin: u32,
        pub h: u32,
        pub w: u32,
        pub cout: u32,
        pub kh: u32,
        pub kw: u32,
        pub sh: u32,
        pub sw: u32,
        pub ph: u32,
        pub pw: u32,
        pub oh: u32,
        pub ow: u32,
        /// Offsets of the input (x or dy), weights (dy for the weight gradient), bias and
        /// output (y, dx or the weight gradient's chunks).
        pub in_offset: u32,
        pub w_offset: u32,
        pub b_offset: u32,
        pub out_offset: u32,
        pub accumulate: u32,
        /// The weight gradient's images per chunk of the batch.
        pub chunk: u32,
        /// The forward: ReLU in the store; the input gradient: masked by the ReLU output at
        /// mask_offset.
        pub relu: u32,
        pub mask_offset: u32,
        pub _pad0: u32,
        pub _pad1: u32,
        pub _pad2: u32,
    }
}

/// Channels and pixels one thread computes in each direction, and threads per workgroup
/// (TC/TP/TO/TI and WG in the shaders).
const BLOCK: usize = 8;
const WG: usize = 64;

/// Floats in one window of the forward's weights: a 64 KiB uniform binding.
pub const WEIGHT_WINDOW: usize = 16384;

/// Most taps a kernel may have, KH x KW: a uniform weight window (the CPU path's) must hold
/// one input channel's taps for a block of 8 output channels. Any KH and KW whose product
/// is within it run: nothing in the kernels is unrolled over taps.
pub const MAX_TAPS: usize = WEIGHT_WINDOW / BLOCK;

/// Largest stride along either axis. The input gradient runs each of the SH x SW stride
/// phases as its own slice of workgroups along z (on the CPU path times the window's blocks
/// of 8 channels): at 16 x 16 = 256 phases, 255 blocks (2040 channels) still fit z's 65535
/// workgroups.
pub const MAX_STRIDE: usize = 16;

/// What the forward stores: the convolution plus its bias, or the ReLU of that, fused into
/// the store where a ReLU reads nothing but the conv's output (y is then the ReLU's output).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    Identity,
    Relu,
}

/// How the conv forward and input gradient bind their weights (conv2d_weight_windows.wgsl).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightBinding {
    /// 64 KiB uniform windows, one dispatch each: a CPU adapter's fast path (lavapipe reads
    /// uniforms ten times faster than storage; 1.45x on the tiny residual layer's forward).
    Uniform,
    /// One storage window of all the weights, one dispatch: a GPU's path, where the paper's
    /// layers would otherwise take hundreds of small dispatches.
    Storage,
}

impl WeightBinding {
    /// Uniform windows on a CPU adapter, storage on a GPU.
    pub fn for_device(gpu: &Gpu) -> WeightBinding {
        if gpu.info.device_type == wgpu::DeviceType::Cpu {
            WeightBinding::Uniform
        } else {
            WeightBinding::Storage
        }
    }
}

/// Which kernel computes a convolution's forward or input gradient.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvKernel {
    /// conv2d_forward.wgsl / conv2d_backward_input.wgsl, 8 x 8 blocks in registers, the
    /// weights bound as given (the CPU path).
    Direct(WeightBinding),
    /// conv2d_tiled.wgsl with this tiling: pixels along its rows, channels along its
    /// columns (the GPU path).
    Tiled(Tiling),
}

impl ConvKernel {
    /// The kernel of the device's path ([`Gpu::kernels`]), the GPU path's at
    /// [`Tiling::DEFAULT`].
    pub fn for_device(gpu: &Gpu) -> ConvKernel {
        match gpu.kernels {
            KernelPath::Cpu => ConvKernel::Direct(WeightBinding::for_device(gpu)),
            KernelPath::Gpu => ConvKernel::Tiled(Tiling::DEFAULT),
        }
    }

    /// The kernel of the device's path for `pass` of `c`, the GPU path's at the tiling
    /// tuned for its shape class (ops::tune; DEFAULT with tuning off).
    pub fn tuned(gpu: &Gpu, c: &Conv2d, pass: ConvPass) -> ConvKernel {
        match ConvKernel::for_device(gpu) {
            ConvKernel::Tiled(_) => ConvKernel::Tiled(crate::ops::tune::conv_tiling(gpu, c, pass)),
            kernel => kernel,
        }
    }
}

/// How a kernel's weights are cut into windows (conv2d_weight_windows.wgsl): rows are the
/// channels a thread computes 8 of (output channels for the forward, input channels for the
/// input gradient), columns the channels it sums over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WeightWindows {
    pub binding: WeightBinding,
    /// Floats per window.
    pub floats: usize,
    /// Rows per window (a multiple of 8).
    pub rows: usize,
    /// Columns per window.
    pub cols: usize,
    /// Windows along the columns.
    pub col_ranges: usize,
    /// Windows along the rows.
    pub row_blocks: usize,
}

impl WeightWindows {
    /// Storage: one window of everything. Uniform: as many blocks of 8 rows with all their
    /// columns as fit 64 KiB, or, where 8 rows do not fit (columns x taps > 2048), 8 rows
    /// over an even split of the columns.
    fn new(binding: WeightBinding, rows: usize, cols: usize, kk: usize) -> WeightWindows {
        let all_rows = rows.next_multiple_of(BLOCK);
        let (per_window, cols_per_window, col_ranges, floats) = match binding {
            WeightBinding::Storage => (
                all_rows,
                cols,
                1,
                (all_rows * cols * kk).next_multiple_of(4),
            ),
            WeightBinding::Uniform if BLOCK * cols * kk <= WEIGHT_WINDOW => {
                let r = WEIGHT_WINDOW / (cols * kk) / BLOCK * BLOCK;
                (r.min(all_rows), cols, 1, WEIGHT_WINDOW)
            }
            WeightBinding::Uniform => {
                let ranges = cols.div_ceil(WEIGHT_WINDOW / (BLOCK * kk));
                (BLOCK, cols.div_ceil(ranges), ranges, WEIGHT_WINDOW)
            }
        };
        WeightWindows {
            binding,
            floats,
            rows: per_window,
            cols: cols_per_window,
            col_ranges,
            row_blocks: rows.div_ceil(per_window),
        }
    }

    pub fn count(&self) -> usize {
        self.col_ranges * self.row_blocks
    }

    /// Each window's first row, rows, first column and columns, in window order.
    fn each(&self, rows: usize, cols: usize) -> impl Iterator<Item = [usize; 4]> + '_ {
        (0..self.row_blocks).flat_map(move |rb| {
            (0..self.col_ranges).map(move |cr| {
                let (r0, c0) = (rb * self.rows, cr * self.cols);
                [r0, self.rows.min(rows - r0), c0, self.cols.min(cols - c0)]
            })
        })
    }
}

/// The shape of one convolution: a KH x KW kernel at stride SH x SW over images padded by
/// PH rows above and below and PW columns left and right.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2d {
    pub n: usize,
    pub cin: usize,
    pub h: usize,
    pub w: usize,
    pub cout: usize,
    pub kh: usize,
    pub kw: usize,
    pub sh: usize,
    pub sw: usize,
    pub ph: usize,
    pub pw: usize,
}

impl Conv2d {
    /// The image presets' convs: k x k at stride `stride` over side x side images, padded
    /// by k / 2 on every side.
    pub fn square(
        n: usize,
        cin: usize,
        side: usize,
        cout: usize,
        k: usize,
        stride: usize,
    ) -> Conv2d {
        Conv2d {
            n,
            cin,
            h: side,
            w: side,
            cout,
            kh: k,
            kw: k,
            sh: stride,
            sw: stride,
            ph: k / 2,
            pw: k / 2,
        }
    }

    /// Output height and width, (H + 2 PH - KH) / SH + 1 and (W + 2 PW - KW) / SW + 1 (0 where
    /// the kernel does not fit).
    pub fn out_hw(&self) -> (usize, usize) {
        let out = |size: usize, k: usize, s: usize, pad: usize| {
            (size + 2 * pad)
                .checked_sub(k)
                .map_or(0, |d| d / s.max(1) + 1)
        };
        (
            out(self.h, self.kh, self.sh, self.ph),
            out(self.w, self.kw, self.sw, self.pw),
        )
    }

    /// Taps of the kernel, KH x KW.
    pub fn taps(&self) -> usize {
        self.kh * self.kw
    }

    /// The geometry every kernel's parameters begin with: n, cin, h, w, cout, kh, kw, sh,
    /// sw, ph, pw, oh, ow (see [`params!`]).
    fn geometry(&self) -> [u32; 13] {
        let (oh, ow) = self.out_hw();
        [
            self.n, self.cin, self.h, self.w, self.cout, self.kh, self.kw, self.sh, self.sw,
            self.ph, self.pw, oh, ow,
        ]
        .map(|v| v as u32)
    }

    pub fn x_shape(&self) -> [usize; 4] {
        [self.n, self.cin, self.h, self.w]
    }
    pub fn w_shape(&self) -> [usize; 4] {
        [self.cout, self.cin, self.kh, self.kw]
    }
    pub fn y_shape(&self) -> [usize; 4] {
        let (oh, ow) = self.out_hw();
        [self.n, self.cout, oh, ow]
    }

    pub fn x_len(&self) -> usize {
        self.x_shape().iter().product()
    }
    pub fn w_len(&self) -> usize {
        self.w_shape().iter().product()
    }
    pub fn y_len(&self) -> usize {
        self.y_shape().iter().product()
    }

    /// Floats a forward (or backward-input) pass moves at least: input, weights, output.
    pub fn moved(&self) -> u64 {
        (self.x_len() + self.w_len() + self.y_len()) as u64
    }

    /// Multiply-adds of the forward times two (bias not counted).
    pub fn flops(&self) -> u64 {
        let (oh, ow) = self.out_hw();
        2 * (self.n * self.cout * oh * ow * self.cin * self.taps()) as u64
    }

    /// Stride phases of the input gradient, SH x SW, and the rows and columns of one:
    /// ceil(H / SH) x ceil(W / SW) pixels (counting those past the image's edge).
    pub fn phases(&self) -> (usize, usize, usize) {
        (
            self.sh * self.sw,
            self.h.div_ceil(self.sh),
            self.w.div_ceil(self.sw),
        )
    }

    /// The forward's weight windows: rows are output channels, columns input channels.
    pub fn weight_windows(&self, binding: WeightBinding) -> WeightWindows {
        WeightWindows::new(binding, self.cout, self.cin, self.taps())
    }

    /// The input gradient's weight windows: rows are input channels, columns output ones.
    pub fn input_grad_windows(&self, binding: WeightBinding) -> WeightWindows {
        WeightWindows::new(binding, self.cin, self.cout, self.taps())
    }

    /// Images per chunk and number of chunks for the weight gradient's split reduction on
    /// this device: the batch is cut into enough chunks to keep it busy when the channels
    /// alone give few threads (the first layer: Cin = 3).
    pub fn weight_grad_chunks(&self, gpu: &Gpu) -> (usize, usize) {
        let chunks = self.weight_grad_max_chunks(gpu).min(self.n.max(1));
        let per_chunk = self.n.div_ceil(chunks).max(1);
        (per_chunk, self.n.div_ceil(per_chunk))
    }

    /// The chunks aimed for (about [`Gpu::threads_in_flight`] threads in all), which the
    /// scratch buffer is sized for whatever the batch: at most about 4 MiB, and a memory
    /// plan sees no step in it as N grows.
    fn weight_grad_max_chunks(&self, gpu: &Gpu) -> usize {
        let items = self.cout.div_ceil(BLOCK) * self.cin.div_ceil(BLOCK) * self.taps();
        gpu.threads_in_flight().div_ceil(items).max(1)
    }

    /// The geometry alone: a kernel of 1 to [`MAX_TAPS`] taps, strides of 1 to
    /// [`MAX_STRIDE`], padding no wider than the kernel along its axis (wider only adds
    /// outputs that see nothing but padding), nothing empty.
    fn check_geometry(&self, kernel: &'static str) -> Result<()> {
        let (kh, kw, sh, sw) = (self.kh, self.kw, self.sh, self.sw);
        let taps = kh.saturating_mul(kw);
        if taps == 0 || taps > MAX_TAPS {
            return shape_err(
                kernel,
                format!(
                    "kernel {kh} x {kw} has {taps} taps; it needs 1 to {MAX_TAPS} (MAX_TAPS): {self:?}"
                ),
            );
        }
        if !(1..=MAX_STRIDE).contains(&sh) || !(1..=MAX_STRIDE).contains(&sw) {
            return shape_err(
                kernel,
                format!("stride {sh} x {sw} must lie in 1..={MAX_STRIDE} (MAX_STRIDE) along each axis: {self:?}"),
            );
        }
        if self.ph > kh || self.pw > kw {
            return shape_err(
                kernel,
                format!(
                    "padding {} x {} is wider than the kernel {kh} x {kw}: {self:?}",
                    self.ph, self.pw
                ),
            );
        }
        let (oh, ow) = self.out_hw();
        if self.n == 0 || self.cin == 0 || self.cout == 0 || oh == 0 || ow == 0 {
            return shape_err(
                kernel,
                format!("empty input or output: {self:?} gives output {oh} x {ow}"),
            );
        }
        Ok(())
    }

    /// The geometry, then each tensor against the shape it must have.
    fn check(&self, kernel: &'static str, tensors: &[(&str, &Tensor, &[usize])]) -> Result<()> {
        self.check_geometry(kernel)?;
        for &(name, t, want) in tensors {
            if t.len() != want.iter().product::<usize>() {
                return shape_err(
                    kernel,
                    format!("{name} has shape {:?} but {self:?} needs {want:?}", t.shape),
                );
            }
        }
        Ok(())
    }
}

/// Plan the copy of `w` into uniform-buffer windows (conv2d_weight_windows.wgsl), rows
/// being input channels when `transpose`. Allocates the windows: owned by the launches'
/// bind groups from here on, planned once and rewritten every step.
fn stage_windows(
    gpu: &Gpu,
    kernel: &'static str,
    c: &Conv2d,
    w: &Tensor,
    win: &WeightWindows,
    transpose: bool,
) -> Result<(Tensor, Launch)> {
    let limit = gpu.limits.max_uniform_buffer_binding_size;
    if win.binding == WeightBinding::Uniform && limit < (WEIGHT_WINDOW * 4) as u64 {
        return Err(crate::error::Error::Limit {
            kernel,
            message: format!("a weight window of {} bytes", WEIGHT_WINDOW * 4),
            limit: "max_uniform_buffer_binding_size",
            value: limit,
        });
    }
    let shape = [win.count(), win.floats];
    let windows = match win.binding {
        WeightBinding::Uniform => Tensor::uniform(gpu, "conv2d weight windows", &shape)?,
        WeightBinding::Storage => Tensor::zeros(gpu, "conv2d weight windows", &shape)?,
    };
    let params = WeightWindowsParams {
        cout: c.cout as u32,
        cin: c.cin as u32,
        kk: c.taps() as u32,
        w_offset: rel_offset(gpu, w),
        rows: win.rows as u32,
        cols: win.cols as u32,
        col_ranges: win.col_ranges as u32,
        windows: win.count() as u32,
        transpose: transpose as u32,
        windows_offset: rel_offset(gpu, &windows),
        window: win.floats as u32,
        _pad0: 0,
    };
    let floats = win.count() * win.floats;
    let stage = Launch::new(
        gpu,
        Shader::Conv2dWeightWindows,
        "main",
        &[],
        &params,
        &[w, &windows],
        spread(gpu, kernel, floats.div_ceil(256) as u64)?,
    )?
    .cost(0, (c.w_len() + floats) as u64);
    Ok((windows, stage))
}

/// Plan y = act(conv(x, weight) + bias) with the device's kernel ([`ConvKernel::tuned`]).
pub fn forward(
    gpu: &Gpu,
    c: &Conv2d,
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    y: &Tensor,
    act: Activation,
) -> Result<Vec<Launch>> {
    let kernel = ConvKernel::tuned(gpu, c, ConvPass::Forward);
    forward_with(gpu, c, x, w, b, y, act, kernel)
}

/// [`forward`] with the kernel given: one tiled dispatch, or the weights' copy into windows
/// bound as the binding says, then one dispatch per window (conv2d_forward.wgsl; a ReLU is
/// taken by the last window of each block of output channels, once the sum is whole).
#[allow(clippy::too_many_arguments)]
pub fn forward_with(
    gpu: &Gpu,
    c: &Conv2d,
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    y: &Tensor,
    act: Activation,
    kernel: ConvKernel,
) -> Result<Vec<Launch>> {
    let name = "conv2d_forward";
    c.check(
        name,
        &[
            ("x", x, &c.x_shape()),
            ("weight", w, &c.w_shape()),
            ("bias", b, &[c.cout]),
            ("y", y, &c.y_shape()),
        ],
    )?;
    let binding = match kernel {
        ConvKernel::Direct(binding) => binding,
        ConvKernel::Tiled(tiling) => {
            let relu = act == Activation::Relu;
            let l = tiled(
                gpu,
                c,
                TiledPass::Forward { bias: b, relu },
                x,
                w,
                y,
                tiling,
            )?;
            let l = l.cost(c.flops(), c.moved());
            return Ok(vec![l.reference(forward_reference(*c))]);
        }
    };
    let (oh, ow) = c.out_hw();
    let win = c.weight_windows(binding);
    let (windows, stage) = stage_windows(gpu, name, c, w, &win, false)?;
    let shader = match binding {
        WeightBinding::Uniform => Shader::Conv2dForward,
        WeightBinding::Storage => Shader::Conv2dForwardStorage,
    };
    let mut launches = vec![stage];
    let [wx, wy, _] = spread(gpu, name, (c.n * oh * ow).div_ceil(WG * BLOCK) as u64)?;
    let kk = c.taps();
    for (i, [co_base, rows, ci_base, ci_count]) in win.each(c.cout, c.cin).enumerate() {
        let params = params!(Conv2dForwardParams, c, {
            x_offset: rel_offset(gpu, x),
            b_offset: rel_offset(gpu, b),
            y_offset: rel_offset(gpu, y),
            co_base: co_base as u32,
            ci_base: ci_base as u32,
            ci_count: ci_count as u32,
            accumulate: (ci_base > 0) as u32,
            window_cis: win.cols as u32,
            relu: (act == Activation::Relu && ci_base + ci_count == c.cin) as u32,
        });
        let window = windows.view(i * win.floats, &[win.floats]);
        let flops = 2 * c.n * oh * ow * rows * ci_count * kk;
        let moved = c.n * ci_count * c.h * c.w + rows * ci_count * kk + c.n * rows * oh * ow;
        let mut l = Launch::new(
            gpu,
            shader,
            "main",
            &[],
            &params,
            &[x, &window, b, y],
            [wx, wy, rows.div_ceil(BLOCK) as u32],
        )?
        .cost(flops as u64, moved as u64);
        if i == 0 {
            // The whole convolution's CPU reference, once (profile --compare).
            l = l.reference(forward_reference(*c));
        }
        launches.push(l);
    }
    Ok(launches)
}

/// Plan dx (+)= the gradient of y = conv(x, weight) + bias with respect to x, given dy,
/// with the device's kernel ([`ConvKernel::tuned`]). With `relu`, the output of the
/// ReLU that x came through (x itself, or the ReLU's input where the ReLU fused into the
/// conv before), the gradient is kept where relu > 0 and is 0 elsewhere: the ReLU's backward
/// folded in, dx being the gradient of the ReLU's input.
pub fn backward_input(
    gpu: &Gpu,
    c: &Conv2d,
    dy: &Tensor,
    w: &Tensor,
    dx: &Tensor,
    accumulate: bool,
    relu: Option<&Tensor>,
) -> Result<Vec<Launch>> {
    let kernel = ConvKernel::tuned(gpu, c, ConvPass::BackwardInput);
    backward_input_with(gpu, c, dy, w, dx, accumulate, relu, kernel)
}

/// [`backward_input`] with the kernel given: one tiled dispatch, or the weights' copy into
/// windows (transposed) bound as the binding says, then one dispatch per window
/// (conv2d_backward_input.wgsl; each masks its own share before adding it).
#[allow(clippy::too_many_arguments)]
pub fn backward_input_with(
    gpu: &Gpu,
    c: &Conv2d,
    dy: &Tensor,
    w: &Tensor,
    dx: &Tensor,
    accumulate: bool,
    relu: Option<&Tensor>,
    kernel: ConvKernel,
) -> Result<Vec<Launch>> {
    let name = "conv2d_backward_input";
    c.check(
        name,
        &[
            ("dy", dy, &c.y_shape()),
            ("weight", w, &c.w_shape()),
            ("dx", dx, &c.x_shape()),
        ],
    )?;
    if let Some(m) = relu {
        c.check(name, &[("relu", m, &c.x_shape())])?;
    }
    // What the input gradient moves at least: the forward's floats, dx once more where it is
    // added to, and the mask.
    let moved = c.moved() + (accumulate as u64 + relu.is_some() as u64) * c.x_len() as u64;
    let binding = match kernel {
        ConvKernel::Direct(binding) => binding,
        ConvKernel::Tiled(tiling) => {
            let pass = TiledPass::BackwardInput {
                accumulate,
                mask: relu,
            };
            let l = tiled(gpu, c, pass, dy, w, dx, tiling)?;
            let l = l.cost(c.flops(), moved);
            return Ok(vec![l.reference(backward_input_reference(*c, accumulate))]);
        }
    };
    let (oh, ow) = c.out_hw();
    let (phases, hq, wq) = c.phases();
    let win = c.input_grad_windows(binding);
    let (windows, stage) = stage_windows(gpu, name, c, w, &win, true)?;
    let shader = match binding {
        WeightBinding::Uniform => Shader::Conv2dBackwardInput,
        WeightBinding::Storage => Shader::Conv2dBackwardInputStorage,
    };
    let mut launches = vec![stage];
    let [wx, wy, _] = spread(gpu, name, (c.n * hq * wq).div_ceil(WG * BLOCK) as u64)?;
    let kk = c.taps();
    for (i, [ci_base, rows, co_base, co_count]) in win.each(c.cin, c.cout).enumerate() {
        let params = params!(Conv2dBackwardInputParams, c, {
            hq: hq as u32,
            wq: wq as u32,
            dy_offset: rel_offset(gpu, dy),
            dx_offset: rel_offset(gpu, dx),
            accumulate: (accumulate || co_base > 0) as u32,
            ci_base: ci_base as u32,
            co_base: co_base as u32,
            co_count: co_count as u32,
            window_cos: win.cols as u32,
            relu: relu.is_some() as u32,
            mask_offset: relu.map_or(0, |m| rel_offset(gpu, m)),
        });
        let window = windows.view(i * win.floats, &[win.floats]);
        let flops = 2 * c.n * oh * ow * rows * co_count * kk;
        let moved = c.n * co_count * oh * ow + rows * co_count * kk + c.n * rows * c.h * c.w;
        let mut l = Launch::new(
            gpu,
            shader,
            "main",
            &[],
            &params,
            // dy stands in for an absent mask: the kernel reads it only with relu != 0.
            &[dy, &window, dx, relu.unwrap_or(dy)],
            [wx, wy, (phases * rows.div_ceil(BLOCK)) as u32],
        )?
        .cost(flops as u64, moved as u64);
        if i == 0 {
            // The whole input gradient's CPU reference, once (profile --compare).
            l = l.reference(backward_input_reference(*c, accumulate));
        }
        launches.push(l);
    }
    Ok(launches)
}

/// The forward's CPU reference on constant inputs (profile --compare).
fn forward_reference(conv: Conv2d) -> impl Fn() + Send + Sync + 'static {
    move || {
        let mut y = vec![0.0; conv.y_len()];
        crate::cpu::conv2d::forward(
            &conv,
            &vec![0.5; conv.x_len()],
            &vec![0.5; conv.w_len()],
            &vec![0.5; conv.cout],
            &mut y,
        );
    }
}

/// The input gradient's CPU reference on constant inputs (profile --compare).
fn backward_input_reference(conv: Conv2d, accumulate: bool) -> impl Fn() + Send + Sync + 'static {
    move || {
        let mut dx = vec![0.0; conv.x_len()];
        crate::cpu::conv2d::backward_input(
            &conv,
            &vec![0.5; conv.y_len()],
            &vec![0.5; conv.w_len()],
            &mut dx,
            accumulate,
        );
    }
}

/// What one dispatch of conv2d_tiled.wgsl computes, with the tensors only it binds.
#[derive(Clone, Copy, Debug)]
enum TiledPass<'a> {
    /// With the bias, and the ReLU in the store or not.
    Forward { bias: &'a Tensor, relu: bool },
    /// Masked by the ReLU output `mask`, if any.
    BackwardInput {
        accumulate: bool,
        mask: Option<&'a Tensor>,
    },
    /// Into chunks of this many images.
    BackwardWeight { chunk: usize },
}

/// Plan one dispatch of conv2d_tiled.wgsl: from `input` (x, dy, x) and `second` (the
/// weights, the weights, dy) into `out` (y, dx, the weight gradient's chunks), with what the
/// pass binds besides. Its grid: the product's rows by channels, along z the stride phases
/// of the input gradient or the weight gradient's chunks.
fn tiled(
    gpu: &Gpu,
    c: &Conv2d,
    pass: TiledPass,
    input: &Tensor,
    second: &Tensor,
    out: &Tensor,
    tiling: Tiling,
) -> Result<Launch> {
    let (oh, ow) = c.out_hw();
    let (phases, hq, wq) = c.phases();
    let mut params = params!(Conv2dTiledParams, c, {
        in_offset: rel_offset(gpu, input),
        w_offset: rel_offset(gpu, second),
        out_offset: rel_offset(gpu, out),
    });
    let mut tensors = vec![(1, input), (2, second), (4, out)];
    let (entry, [rows, cols, z]) = match pass {
        TiledPass::Forward { bias, relu } => {
            params.b_offset = rel_offset(gpu, bias);
            params.relu = relu as u32;
            tensors.push((3, bias));
            ("forward", [c.n * oh * ow, c.cout, 1])
        }
        TiledPass::BackwardInput { accumulate, mask } => {
            params.accumulate = accumulate as u32;
            params.relu = mask.is_some() as u32;
            params.mask_offset = mask.map_or(0, |m| rel_offset(gpu, m));
            // dy stands in for an absent mask: the kernel reads it only with relu != 0.
            tensors.push((5, mask.unwrap_or(input)));
            ("backward_input", [c.n * hq * wq, c.cin, phases])
        }
        TiledPass::BackwardWeight { chunk } => {
            params.chunk = chunk as u32;
            let rows = c.cin * c.taps();
            ("backward_weight", [rows, c.cout, c.n.div_ceil(chunk)])
        }
    };
    Launch::with_bindings(
        gpu,
        Shader::Conv2dTiled,
        entry,
        &tiling.constants(),
        &params,
        &tensors,
        [
            rows.div_ceil(tiling.bm) as u32,
            cols.div_ceil(tiling.bn) as u32,
            z as u32,
        ],
    )
}

/// Plan dw += and db += the gradients of y = conv(x, weight) + bias, given dy, with the
/// device's kernel ([`ConvKernel::tuned`]).
pub fn backward_weight(
    gpu: &Gpu,
    c: &Conv2d,
    x: &Tensor,
    dy: &Tensor,
    dw: &Tensor,
    db: &Tensor,
) -> Result<Vec<Launch>> {
    let kernel = ConvKernel::tuned(gpu, c, ConvPass::BackwardWeight);
    backward_weight_with(gpu, c, x, dy, dw, db, kernel)
}

/// [`backward_weight`] with the kernel given (a Direct kernel's weight binding does not
/// matter: the weight gradient reads no weights): the chunked weight gradient into a
/// partial buffer allocated here, the sum of its chunks into dw, and the sum of dy over
/// batch and pixels into db.
pub fn backward_weight_with(
    gpu: &Gpu,
    c: &Conv2d,
    x: &Tensor,
    dy: &Tensor,
    dw: &Tensor,
    db: &Tensor,
    kernel: ConvKernel,
) -> Result<Vec<Launch>> {
    let kernel_name = "conv2d_backward_weight";
    c.check(
        kernel_name,
        &[
            ("x", x, &c.x_shape()),
            ("dy", dy, &c.y_shape()),
            ("dw", dw, &c.w_shape()),
            ("db", db, &[c.cout]),
        ],
    )?;
    let (oh, ow) = c.out_hw();
    let (per_chunk, chunks) = c.weight_grad_chunks(gpu);
    let dw_size = c.w_len();
    // Owned by the launches' bind groups from here on: planned once, reused every step.
    let scratch = Tensor::zeros(
        gpu,
        "conv2d weight gradient chunks",
        &[c.weight_grad_max_chunks(gpu), dw_size],
    )?;
    let partial = scratch.view(0, &[chunks, dw_size]);
    let chunked = match kernel {
        ConvKernel::Tiled(tiling) => {
            let pass = TiledPass::BackwardWeight { chunk: per_chunk };
            tiled(gpu, c, pass, x, dy, &partial, tiling)?
        }
        ConvKernel::Direct(_) => {
            let params = params!(Conv2dBackwardWeightParams, c, {
                chunk: per_chunk as u32,
                x_offset: rel_offset(gpu, x),
                dy_offset: rel_offset(gpu, dy),
                partial_offset: rel_offset(gpu, &partial),
            });
            let items = c.cout.div_ceil(BLOCK) * c.cin.div_ceil(BLOCK) * c.taps();
            let [wx, wy, _] = spread(gpu, kernel_name, items.div_ceil(WG) as u64)?;
            Launch::new(
                gpu,
                Shader::Conv2dBackwardWeight,
                "main",
                &[],
                &params,
                &[x, dy, &partial],
                [wx, wy, chunks as u32],
            )?
        }
    };
    let chunked = chunked
        .cost(c.flops(), (c.x_len() + c.y_len() + chunks * dw_size) as u64)
        .reference({
            let conv = *c;
            move || {
                let (mut dw, mut db) = (vec![0.0; conv.w_len()], vec![0.0; conv.cout]);
                crate::cpu::conv2d::backward_weight(
                    &conv,
                    &vec![0.5; conv.x_len()],
                    &vec![0.5; conv.y_len()],
                    &mut dw,
                    &mut db,
                );
            }
        });
    Ok(vec![
        chunked,
        sum_channels::launch(gpu, &partial, [chunks, dw_size, 1], dw, 1.0, true)?,
        sum_channels::launch(gpu, dy, [c.n, c.cout, oh * ow], db, 1.0, true)?,
    ])
}
