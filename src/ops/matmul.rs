//! Batched matrix product with either operand transposed, by one of two kernels that
//! compute the same: shaders/matmul.wgsl (the CPU path, tuned on lavapipe) and
//! shaders/matmul_tiled.wgsl (the GPU path, tiled through workgroup memory). The device's
//! kernel path picks one, with the tiling tuned for the product's shape class on the GPU
//! path ([`MatmulKernel::tuned`], ops::tune); [`forward_with`] takes either.
//!
//! C = alpha * op(A) op(B) (+ C), with op(A) M x K and op(B) K x N. Operands may be strided
//! views: batch i of A starts at `a.offset + i * a.batch_stride` elements into its tensor.

use crate::error::{shape_err, Result};
use crate::gpu::{rel_offset, Gpu, KernelPath, Launch, Shader, Tensor};

crate::uniform_struct! {
    /// WGSL twin: MatmulParams in shaders/matmul.wgsl.
    pub struct MatmulParams {
        pub m: u32,
        pub n: u32,
        pub k: u32,
        pub batch: u32,
        pub a_offset: u32,
        pub b_offset: u32,
        pub c_offset: u32,
        pub a_batch_stride: u32,
        pub b_batch_stride: u32,
        pub c_batch_stride: u32,
        pub accumulate: u32,
        pub alpha: f32,
    }
}

/// Where one operand's batches start inside its tensor, in elements.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Strided {
    pub offset: usize,
    /// Elements from one batch to the next; 0 means "packed": rows x cols.
    pub batch_stride: usize,
}

/// What one matrix product computes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Matmul {
    pub batch: usize,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub trans_a: bool,
    pub trans_b: bool,
    /// Add to C instead of overwriting it.
    pub accumulate: bool,
    pub alpha: f32,
    pub a: Strided,
    pub b: Strided,
    pub c: Strided,
}

impl Matmul {
    /// C[M, N] = A[M, K] B[K, N] for `batch` packed matrices.
    pub fn new(batch: usize, m: usize, n: usize, k: usize) -> Matmul {
        Matmul {
            batch,
            m,
            n,
            k,
            trans_a: false,
            trans_b: false,
            accumulate: false,
            alpha: 1.0,
            a: Strided::default(),
            b: Strided::default(),
            c: Strided::default(),
        }
    }
    pub fn trans_a(mut self, t: bool) -> Self {
        self.trans_a = t;
        self
    }
    pub fn trans_b(mut self, t: bool) -> Self {
        self.trans_b = t;
        self
    }
    pub fn accumulate(mut self, acc: bool) -> Self {
        self.accumulate = acc;
        self
    }
    pub fn alpha(mut self, alpha: f32) -> Self {
        self.alpha = alpha;
        self
    }
    pub fn strides(mut self, a: Strided, b: Strided, c: Strided) -> Self {
        self.a = a;
        self.b = b;
        self.c = c;
        self
    }

    /// Element strides between batches, packed where the spec says 0.
    pub fn batch_strides(&self) -> [usize; 3] {
        let s = |x: Strided, packed: usize| {
            if x.batch_stride == 0 {
                packed
            } else {
                x.batch_stride
            }
        };
        [
            s(self.a, self.m * self.k),
            s(self.b, self.k * self.n),
            s(self.c, self.m * self.n),
        ]
    }

    /// Multiply-adds times two.
    pub fn flops(&self) -> u64 {
        2 * (self.batch * self.m * self.n * self.k) as u64
    }

    /// Elements each operand must hold: offset + last batch's start + one matrix.
    pub(crate) fn needs(&self) -> [usize; 3] {
        let [sa, sb, sc] = self.batch_strides();
        let last = self.batch.saturating_sub(1);
        [
            self.a.offset + last * sa + self.m * self.k,
            self.b.offset + last * sb + self.k * self.n,
            self.c.offset + last * sc + self.m * self.n,
        ]
    }

    fn check(&self, a: &Tensor, b: &Tensor, c: &Tensor) -> Result<()> {
        let needs = self.needs();
        let views = [self.a, self.b, self.c];
        for (((name, t), need), view) in [("a", a), ("b", b), ("c", c)]
            .into_iter()
            .zip(needs)
            .zip(views)
        {
            // A packed operand must be exactly its matrices; a strided view may hold more.
            let packed = view == Strided::default();
            if t.len() < need || (packed && t.len() != need) {
                return shape_err(
                    "matmul",
                    format!(
                        "operand {name} has shape {:?} ({} elements) but batch={} M={} N={} K={} \
                         (trans_a={}, trans_b={}, offset {}) reads {need} elements",
                        t.shape,
                        t.len(),
                        self.batch,
                        self.m,
                        self.n,
                        self.k,
                        self.trans_a,
                        self.trans_b,
                        view.offset,
                    ),
                );
            }
        }
        if self.m == 0 || self.n == 0 || self.batch == 0 {
            return shape_err(
                "matmul",
                format!(
                    "empty output: batch={} M={} N={}",
                    self.batch, self.m, self.n
                ),
            );
        }
        Ok(())
    }
}

/// One tiling of matmul_tiled.wgsl, handed to it as override constants: a BM x BN tile of
/// C per workgroup, slices of BK values of k staged in workgroup memory, and a TM x TN block
/// of C per thread, so (BM / TM) x (BN / TN) threads per workgroup. Read back from the
/// tuner's cache file (ops::tune) only if it is one of [`Tiling::CANDIDATES`].
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct Tiling {
    pub bm: usize,
    pub bn: usize,
    pub bk: usize,
    pub tm: usize,
    pub tn: usize,
}

impl Tiling {
    /// What the GPU path runs unless told otherwise: 256 threads of 4 x 4 outputs, 8 KiB of
    /// workgroup memory. (Chosen by reasoning, not yet timed on a real GPU.)
    pub const DEFAULT: Tiling = Tiling::new(64, 64, 16, 4, 4);

    /// Every tiling the kernel is tested with, and from which a tuner may pick: small tiles
    /// for small products, 8 x 8 blocks per thread for large ones.
    pub const CANDIDATES: &'static [Tiling] = &[
        Tiling::DEFAULT,
        Tiling::new(32, 32, 16, 4, 4),
        Tiling::new(64, 64, 16, 8, 8),
        Tiling::new(128, 64, 16, 8, 4),
        Tiling::new(128, 128, 8, 8, 8),
    ];

    /// A tiling, checked (at compile time for constants) against the kernel's assumptions.
    pub const fn new(bm: usize, bn: usize, bk: usize, tm: usize, tn: usize) -> Tiling {
        let t = Tiling { bm, bn, bk, tm, tn };
        assert!(t.valid(), "tiling breaks matmul_tiled.wgsl's assumptions");
        t
    }

    /// Whether a device with `limits` runs this tiling: its workgroup's shape, invocations and
    /// workgroup memory (a downlevel device offers 16352 bytes, not 16384).
    pub fn fits(&self, limits: &wgpu::Limits) -> bool {
        (self.bm / self.tm) as u32 <= limits.max_compute_workgroup_size_x
            && (self.bn / self.tn) as u32 <= limits.max_compute_workgroup_size_y
            && self.threads() as u32 <= limits.max_compute_invocations_per_workgroup
            && self.workgroup_bytes() as u32 <= limits.max_compute_workgroup_storage_size
    }

    /// `64x64x16/4x4`: BM x BN x BK / TM x TN.
    pub fn label(&self) -> String {
        format!(
            "{}x{}x{}/{}x{}",
            self.bm, self.bn, self.bk, self.tm, self.tn
        )
    }

    /// Invocations per workgroup.
    pub const fn threads(&self) -> usize {
        (self.bm / self.tm) * (self.bn / self.tn)
    }

    /// Bytes of workgroup memory: the two tiles.
    pub const fn workgroup_bytes(&self) -> usize {
        4 * self.bk * (self.bm + self.bn)
    }

    /// What the kernel assumes: blocks of 4 or 8 that divide the tile; whole vec4s per
    /// tile row and per thread load; every thread staging the same number of values; and
    /// WebGPU's default limits (256 invocations, 16 KiB of workgroup memory).
    const fn valid(&self) -> bool {
        let t = self.threads();
        (self.tm == 4 || self.tm == 8)
            && (self.tn == 4 || self.tn == 8)
            && self.bm.is_multiple_of(self.tm)
            && self.bn.is_multiple_of(self.tn)
            && self.bk.is_multiple_of(4)
            && (self.bm * self.bk).is_multiple_of(4 * t)
            && (self.bn * self.bk).is_multiple_of(4 * t)
            && t <= 256
            && self.workgroup_bytes() <= 16384
    }

    /// The override constants of matmul_tiled.wgsl and conv2d_tiled.wgsl.
    pub(crate) fn constants(&self) -> [(&'static str, f64); 5] {
        [
            ("BM", self.bm as f64),
            ("BN", self.bn as f64),
            ("BK", self.bk as f64),
            ("TM", self.tm as f64),
            ("TN", self.tn as f64),
        ]
    }
}

/// Which kernel computes a product.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatmulKernel {
    /// matmul.wgsl: 8 x 8 blocks in registers, no workgroup memory (the CPU path).
    RegisterBlock,
    /// matmul_tiled.wgsl with this tiling (the GPU path).
    Tiled(Tiling),
}

impl MatmulKernel {
    /// The kernel of the device's path ([`Gpu::kernels`]), the GPU path's at
    /// [`Tiling::DEFAULT`].
    pub fn for_device(gpu: &Gpu) -> MatmulKernel {
        match gpu.kernels {
            KernelPath::Cpu => MatmulKernel::RegisterBlock,
            KernelPath::Gpu => MatmulKernel::Tiled(Tiling::DEFAULT),
        }
    }

    /// The kernel of the device's path for C = op(A) op(B), the GPU path's at the tiling
    /// tuned for the product's shape class (ops::tune; DEFAULT with tuning off).
    pub fn tuned(gpu: &Gpu, mm: &Matmul, a: &Tensor, b: &Tensor) -> MatmulKernel {
        match MatmulKernel::for_device(gpu) {
            MatmulKernel::Tiled(_) => {
                MatmulKernel::Tiled(crate::ops::tune::matmul_tiling(gpu, mm, a, b))
            }
            kernel => kernel,
        }
    }
}

/// Whether matmul_tiled.wgsl may read an operand as vec4s: its stored rows (`row` elements),
/// its first element in the binding and its batch stride are all multiples of 4, so every
/// vector lies whole inside the operand and on a 16-byte boundary.
fn vec4_loads(row: usize, offset: u32, batch_stride: usize) -> bool {
    row > 0 && row.is_multiple_of(4) && offset.is_multiple_of(4) && batch_stride.is_multiple_of(4)
}

/// matmul_tiled.wgsl's entry point for `mm` with A and B starting `a_offset` and `b_offset`
/// elements into their bindings: vec4 loads of each operand that [`vec4_loads`] allows.
pub(crate) fn tiled_entry(mm: &Matmul, a_offset: u32, b_offset: u32) -> &'static str {
    let [sa, sb, _] = mm.batch_strides();
    // Rows of the stored operands: A [M, K] or [K, M], B [K, N] or [N, K].
    let row_a = if mm.trans_a { mm.m } else { mm.k };
    let row_b = if mm.trans_b { mm.k } else { mm.n };
    match (
        vec4_loads(row_a, a_offset, sa),
        vec4_loads(row_b, b_offset, sb),
    ) {
        (false, false) => "tiled",
        (true, false) => "tiled_a4",
        (false, true) => "tiled_b4",
        (true, true) => "tiled_a4_b4",
    }
}

/// Where A and B start in their bindings, as [`forward_with`] tells the kernel.
pub(crate) fn operand_offsets(gpu: &Gpu, mm: &Matmul, a: &Tensor, b: &Tensor) -> [u32; 2] {
    [
        rel_offset(gpu, a) + mm.a.offset as u32,
        rel_offset(gpu, b) + mm.b.offset as u32,
    ]
}

/// Plan C = alpha op(A) op(B) (+ C) with the device's kernel, tuned ([`MatmulKernel::tuned`]).
pub fn forward(gpu: &Gpu, mm: &Matmul, a: &Tensor, b: &Tensor, c: &Tensor) -> Result<Launch> {
    forward_with(gpu, mm, a, b, c, MatmulKernel::tuned(gpu, mm, a, b))
}

/// [`forward`] with the kernel given.
pub fn forward_with(
    gpu: &Gpu,
    mm: &Matmul,
    a: &Tensor,
    b: &Tensor,
    c: &Tensor,
    kernel: MatmulKernel,
) -> Result<Launch> {
    mm.check(a, b, c)?;
    let [sa, sb, sc] = mm.batch_strides();
    let [a_offset, b_offset] = operand_offsets(gpu, mm, a, b);
    let params = MatmulParams {
        m: mm.m as u32,
        n: mm.n as u32,
        k: mm.k as u32,
        batch: mm.batch as u32,
        a_offset,
        b_offset,
        c_offset: rel_offset(gpu, c) + mm.c.offset as u32,
        a_batch_stride: sa as u32,
        b_batch_stride: sb as u32,
        c_batch_stride: sc as u32,
        accumulate: mm.accumulate as u32,
        alpha: mm.alpha,
    };
    let mut constants = vec![
        ("TRANS_A", mm.trans_a as u32 as f64),
        ("TRANS_B", mm.trans_b as u32 as f64),
    ];
    let (shader, entry, [tile_m, tile_n]) = match kernel {
        // 8 x 8 threads of 8 x 8 outputs (matmul.wgsl's T and WG).
        MatmulKernel::RegisterBlock => (Shader::Matmul, "main", [64, 64]),
        MatmulKernel::Tiled(t) => {
            constants.extend(t.constants());
            let entry = tiled_entry(mm, a_offset, b_offset);
            (Shader::MatmulTiled, entry, [t.bm, t.bn])
        }
    };
    Launch::new(
        gpu,
        shader,
        entry,
        &constants,
        &params,
        &[a, b, c],
        [
            mm.n.div_ceil(tile_n) as u32,
            mm.m.div_ceil(tile_m) as u32,
            mm.batch as u32,
        ],
    )
    .map(|l| {
        let (b, m, n, k) = (mm.batch, mm.m, mm.n, mm.k);
        let moved = b * (m * k + k * n + m * n * (1 + mm.accumulate as usize));
        let (spec, [la, lb, lc]) = (*mm, mm.needs());
        l.cost(mm.flops(), moved as u64).reference(move || {
            let mut out = vec![0.0; lc];
            crate::cpu::matmul::forward(&spec, &vec![0.5; la], &vec![0.5; lb], &mut out);
        })
    })
}

/// The two products of the backward pass, as matmul specs on (first, second) operands:
/// d op(A) = dC op(B)^T and d op(B) = op(A)^T dC, written in terms of the stored A and B.
/// Returns (spec for dA with operands (dC or B, ...), spec for dB), see [`backward`].
pub fn backward_specs(mm: &Matmul, accumulate: bool) -> (Matmul, Matmul) {
    let [sa, sb, sc] = mm.batch_strides();
    let dc = Strided {
        offset: mm.c.offset,
        batch_stride: sc,
    };
    let a = Strided {
        offset: mm.a.offset,
        batch_stride: sa,
    };
    let b = Strided {
        offset: mm.b.offset,
        batch_stride: sb,
    };
    let base = |m, n, k| {
        Matmul::new(mm.batch, m, n, k)
            .accumulate(accumulate)
            .alpha(mm.alpha)
    };
    // dA: stored [M, K] gets dC[M,N] op(B)^T; stored [K, M] gets op(B)[K,N] dC^T.
    let da = if !mm.trans_a {
        // op(B)^T is B itself when B is stored [N, K], else B transposed.
        base(mm.m, mm.k, mm.n)
            .trans_b(!mm.trans_b)
            .strides(dc, b, a)
    } else {
        // op(B) is B^T when B is stored [N, K].
        base(mm.k, mm.m, mm.n)
            .trans_a(mm.trans_b)
            .trans_b(true)
            .strides(b, dc, a)
    };
    // dB: stored [K, N] gets op(A)^T dC; stored [N, K] gets dC^T op(A).
    let db = if !mm.trans_b {
        base(mm.k, mm.n, mm.m)
            .trans_a(!mm.trans_a)
            .strides(a, dc, b)
    } else {
        base(mm.n, mm.k, mm.m)
            .trans_a(true)
            .trans_b(mm.trans_a)
            .strides(dc, a, b)
    };
    (da, db)
}

/// Plan dA (+)= and dB (+)= for C = alpha op(A) op(B), given dC. The gradients take the
/// shapes and strides of A and B. Each of the two products gets the device's kernel tuned
/// for its own shape ([`MatmulKernel::tuned`]).
#[allow(clippy::too_many_arguments)]
pub fn backward(
    gpu: &Gpu,
    mm: &Matmul,
    a: &Tensor,
    b: &Tensor,
    dc: &Tensor,
    da: &Tensor,
    db: &Tensor,
    accumulate: bool,
) -> Result<Vec<Launch>> {
    backward_by(gpu, mm, a, b, dc, da, db, accumulate, |spec, x, y| {
        MatmulKernel::tuned(gpu, spec, x, y)
    })
}

/// [`backward`] with the kernel given, for both products.
#[allow(clippy::too_many_arguments)]
pub fn backward_with(
    gpu: &Gpu,
    mm: &Matmul,
    a: &Tensor,
    b: &Tensor,
    dc: &Tensor,
    da: &Tensor,
    db: &Tensor,
    accumulate: bool,
    kernel: MatmulKernel,
) -> Result<Vec<Launch>> {
    backward_by(gpu, mm, a, b, dc, da, db, accumulate, |_, _, _| kernel)
}

/// The backward's two products, each with the kernel `kernel` gives for its spec and its
/// (first, second) operands.
#[allow(clippy::too_many_arguments)]
fn backward_by(
    gpu: &Gpu,
    mm: &Matmul,
    a: &Tensor,
    b: &Tensor,
    dc: &Tensor,
    da: &Tensor,
    db: &Tensor,
    accumulate: bool,
    kernel: impl Fn(&Matmul, &Tensor, &Tensor) -> MatmulKernel,
) -> Result<Vec<Launch>> {
    let (sda, sdb) = backward_specs(mm, accumulate);
    let product = |spec: &Matmul, x: &Tensor, y: &Tensor, out: &Tensor| {
        forward_with(gpu, spec, x, y, out, kernel(spec, x, y))
    };
    let la = if !mm.trans_a {
        product(&sda, dc, b, da)?
    } else {
        product(&sda, b, dc, da)?
    };
    let lb = if !mm.trans_b {
        product(&sdb, a, dc, db)?
    } else {
        product(&sdb, dc, a, db)?
    };
    Ok(vec![la, lb])
}
