//! Batched matrix product with either operand transposed (shaders/matmul.wgsl).
//!
//! C = alpha * op(A) op(B) (+ C), with op(A) M x K and op(B) K x N. Operands may be strided
//! views: batch i of A starts at `a.offset + i * a.batch_stride` elements into its tensor.

use crate::error::{shape_err, Result};
use crate::gpu::{rel_offset, Gpu, Launch, Shader, Tensor};

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
    fn needs(&self) -> [usize; 3] {
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

/// Plan C = alpha op(A) op(B) (+ C).
pub fn forward(gpu: &Gpu, mm: &Matmul, a: &Tensor, b: &Tensor, c: &Tensor) -> Result<Launch> {
    mm.check(a, b, c)?;
    let [sa, sb, sc] = mm.batch_strides();
    let params = MatmulParams {
        m: mm.m as u32,
        n: mm.n as u32,
        k: mm.k as u32,
        batch: mm.batch as u32,
        a_offset: rel_offset(gpu, a) + mm.a.offset as u32,
        b_offset: rel_offset(gpu, b) + mm.b.offset as u32,
        c_offset: rel_offset(gpu, c) + mm.c.offset as u32,
        a_batch_stride: sa as u32,
        b_batch_stride: sb as u32,
        c_batch_stride: sc as u32,
        accumulate: mm.accumulate as u32,
        alpha: mm.alpha,
    };
    let tile = 64;
    Launch::new(
        gpu,
        Shader::Matmul,
        "main",
        &[
            ("TRANS_A", mm.trans_a as u32 as f64),
            ("TRANS_B", mm.trans_b as u32 as f64),
        ],
        &params,
        &[a, b, c],
        [
            mm.n.div_ceil(tile) as u32,
            mm.m.div_ceil(tile) as u32,
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
/// shapes and strides of A and B.
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
    let (sda, sdb) = backward_specs(mm, accumulate);
    let la = if !mm.trans_a {
        forward(gpu, &sda, dc, b, da)?
    } else {
        forward(gpu, &sda, b, dc, da)?
    };
    let lb = if !mm.trans_b {
        forward(gpu, &sdb, a, dc, db)?
    } else {
        forward(gpu, &sdb, dc, a, db)?
    };
    Ok(vec![la, lb])
}
