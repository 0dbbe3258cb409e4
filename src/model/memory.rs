//! What a model costs in GPU memory at a batch size, counted from the buffers its plan
//! allocates, and the largest batch that fits the adapter's limits, found before a run.
//!
//! The order matters for absurd models and batches (a checkpoint's configuration may say
//! anything the bounds of model::config allow): the parameter buffers are counted from the
//! shapes and checked first, before anything is planned; only then is the model planned, at
//! batches 1 to 3, from which any batch is extrapolated without allocating it, and the
//! batch that fits is found by bisection rather than one batch at a time.

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::model::{CpcModel, ParamLayout, Spec};
use crate::ops::adam::AdamConfig;

/// Bytes a planned model holds on the GPU.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MemoryPlan {
    pub batch: usize,
    /// One flat parameter buffer; gradients and the two Adam moments are the same size.
    pub params_bytes: u64,
    /// Everything: parameters, gradients, Adam moments, activations, their gradients, scratch.
    pub total_bytes: u64,
    /// The largest buffer bound whole, which must fit the adapter's binding limit (the flat
    /// parameter, gradient and moment buffers are bound in pieces and not counted here).
    pub largest_bytes: u64,
}

impl MemoryPlan {
    /// Why this plan cannot run on a device with `limits` within the optional memory budget,
    /// naming the limit; None when it can.
    pub fn refusal(&self, limits: &wgpu::Limits, budget_bytes: Option<u64>) -> Option<String> {
        // A size the estimate saturated (batch 2^31) is said as such, not as 2^34 GiB; a
        // binding limit in MiB, as WebGPU's 128 MiB is known.
        let gib = |b: u64| match b {
            u64::MAX => "more than 2^64 bytes".to_string(),
            b if b < 1 << 30 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
            b => format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64),
        };
        let (binding, buffer) = (
            limits.max_storage_buffer_binding_size,
            limits.max_buffer_size,
        );
        if self.largest_bytes > binding.min(buffer) {
            let (limit, name) = if binding <= buffer {
                (binding, "max_storage_buffer_binding_size")
            } else {
                (buffer, "max_buffer_size")
            };
            return Some(format!(
                "its largest buffer needs {} but this adapter {} at most {} ({name})",
                gib(self.largest_bytes),
                if binding <= buffer {
                    "binds"
                } else {
                    "allocates"
                },
                gib(limit)
            ));
        }
        budget_bytes.filter(|&b| self.total_bytes > b).map(|b| {
            format!(
                "it needs {} in all but the memory budget is {} (--memory-budget-gib)",
                gib(self.total_bytes),
                gib(b)
            )
        })
    }

    /// Activations, their gradients and the kernels' scratch.
    pub fn activation_bytes(&self) -> u64 {
        self.total_bytes.saturating_sub(4 * self.params_bytes)
    }
}

impl std::fmt::Display for MemoryPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        write!(
            f,
            "batch {}: parameters {:.1} MiB, gradients {:.1} MiB, Adam moments {:.1} MiB, \
             activations and scratch {:.1} MiB; total {:.1} MiB (largest buffer {:.1} MiB)",
            self.batch,
            mib(self.params_bytes),
            mib(self.params_bytes),
            mib(2 * self.params_bytes),
            mib(self.activation_bytes()),
            mib(self.total_bytes),
            mib(self.largest_bytes)
        )
    }
}

/// Bytes of one flat parameter buffer of `spec` (either modality's, or a vision
/// `&ModelSpec`), counted from its shapes (the gradients and both Adam moments are as
/// large): nothing is allocated. The spec is validated first, which bounds the count
/// (model::config::MAX_PARAMS), so the product cannot overflow.
pub fn params_bytes(spec: impl Into<Spec>) -> Result<u64> {
    let spec = spec.into();
    spec.validate()?;
    Ok(4 * ParamLayout::new(&spec).total as u64)
}

/// The four flat parameter buffers (parameters, gradients, two Adam moments) must each fit
/// the adapter's largest buffer (they are allocated whole, though bound in pieces) and
/// together the memory budget: checked from the shapes before any plan allocates them.
/// Returns the bytes of one.
fn check_params_fit(gpu: &Gpu, spec: &Spec, budget_bytes: Option<u64>) -> Result<u64> {
    let one = params_bytes(spec)?;
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    let what = format!(
        "the model's {} parameters need four flat buffers (parameters, gradients, two Adam \
         moments) of {one} bytes ({:.2} GiB) each, {:.2} GiB in all",
        ParamLayout::new(spec).count(),
        gib(one),
        gib(4 * one)
    );
    let max = gpu.limits.max_buffer_size;
    if one > max {
        return Err(Error::Config(format!(
            "{what}, but this adapter allocates at most {max} bytes ({:.2} GiB) a buffer \
             (max_buffer_size)",
            gib(max)
        )));
    }
    if let Some(budget) = budget_bytes.filter(|&b| 4 * one > b) {
        return Err(Error::Config(format!(
            "{what}, but the memory budget is {budget} bytes ({:.2} GiB), before any \
             activation",
            gib(budget)
        )));
    }
    Ok(one)
}

/// Plan the model for `batch` and count its buffers.
pub fn plan(
    gpu: &Gpu,
    spec: impl Into<Spec>,
    batch: usize,
    init: &[f32],
    adam: AdamConfig,
) -> Result<(CpcModel, MemoryPlan)> {
    let (model, plan, _) = plan_with_sizes(gpu, &spec.into(), batch, init, adam, None)?;
    Ok((model, plan))
}

/// [`plan`], also returning the size of every buffer in allocation order; `slice` as
/// [`CpcModel::sliced`].
fn plan_with_sizes(
    gpu: &Gpu,
    spec: &Spec,
    batch: usize,
    init: &[f32],
    adam: AdamConfig,
    slice: Option<usize>,
) -> Result<(CpcModel, MemoryPlan, Vec<u64>)> {
    gpu.record_sizes(true);
    // Out-of-memory from the driver comes back as an error of this scope, not a panic.
    let scope = gpu.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
    let model = CpcModel::sliced(gpu, spec, batch, init, adam, slice);
    let oom = pollster::block_on(scope.pop());
    let sizes = gpu.record_sizes(false);
    let model = model?;
    if let Some(e) = oom {
        return Err(Error::Gpu {
            what: format!("planning batch {batch}"),
            message: e.to_string(),
        });
    }
    let plan = MemoryPlan {
        batch,
        params_bytes: 4 * ParamLayout::new(spec).total as u64,
        total_bytes: 4 * 4 * ParamLayout::new(spec).total as u64 + sizes.iter().sum::<u64>(),
        largest_bytes: sizes.iter().copied().max().unwrap_or(0),
    };
    Ok((model, plan, sizes))
}

/// Plans at batches 1, 2 and 3, counted buffer by buffer, from which [`Estimate::at`]
/// extrapolates any batch without allocating it: a quadratic through the three for each
/// buffer (activations grow with B, the score matrices with B^2). Buffers that do not depend
/// on B (parameters, the conv weight-gradient scratch and weight windows) fit exactly.
/// The three plans have the encoder in one slice; [`Estimate::at`] slices it as the model
/// would at that batch (cpc::slice_images), each slice's buffers those of its examples.
pub struct Estimate {
    params_bytes: u64,
    /// Each buffer's size at batches 1, 2 and 3 (the plan allocates the same buffers in the
    /// same order at every batch).
    sizes: Vec<[u64; 3]>,
    /// Which of `sizes` the encoder's one slice allocated.
    slice: std::ops::Range<usize>,
    spec: Spec,
    limits: wgpu::Limits,
}

impl Estimate {
    /// Plans `spec` three times. The parameter buffers are checked against the adapter's
    /// largest buffer first, from the shapes; the plans get no initial values (zero
    /// parameters size the same buffers), so no host vector of the parameter count is made.
    /// Each plan has the encoder in one slice, so a device must bind 3 examples' largest
    /// activation (WebGPU's 128 MiB holds 10 of the paper preset's images).
    pub fn new(gpu: &Gpu, spec: impl Into<Spec>) -> Result<Estimate> {
        let spec = &spec.into();
        let params_bytes = check_params_fit(gpu, spec, None)?;
        if crate::model::cpc::slice_images(&gpu.limits, spec, 3) < 3 {
            return Err(Error::Config(format!(
                "the encoder's activations of 3 examples do not fit one binding of {} bytes \
                 (max_storage_buffer_binding_size or max_buffer_size), which the memory \
                 estimate needs",
                gpu.limits
                    .max_storage_buffer_binding_size
                    .min(gpu.limits.max_buffer_size)
            )));
        }
        let (mut runs, mut slices) = (Vec::new(), Vec::new());
        for b in 1..=3 {
            // Batches no step runs: nothing to tune for them.
            let (model, _, sizes) = gpu
                .tilings
                .paused(|| plan_with_sizes(gpu, spec, b, &[], AdamConfig::default(), Some(b)))?;
            runs.push(sizes);
            slices.push(model.slice_allocs[0].clone());
        }
        if runs.iter().any(|r| r.len() != runs[0].len()) || slices.iter().any(|s| *s != slices[0]) {
            return Err(Error::Other(format!(
                "memory estimate: the plans at batches 1, 2 and 3 allocate {:?} buffers, but \
                 a plan must allocate the same buffers at any batch",
                runs.iter().map(Vec::len).collect::<Vec<_>>()
            )));
        }
        let sizes = (0..runs[0].len())
            .map(|i| [runs[0][i], runs[1][i], runs[2][i]])
            .collect();
        Ok(Estimate {
            params_bytes,
            sizes,
            slice: slices[0].clone(),
            spec: spec.clone(),
            limits: gpu.limits.clone(),
        })
    }

    /// The spec it plans.
    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    pub fn at(&self, batch: usize) -> MemoryPlan {
        // Newton's form of the quadratic through batches 1, 2 and 3.
        let fit = |[y1, y2, y3]: [u64; 3], x: f64| {
            let (y1, y2, y3) = (y1 as f64, y2 as f64, y3 as f64);
            let (d1, d2) = (y2 - y1, (y3 - 2.0 * y2 + y1) / 2.0);
            (y1 + d1 * (x - 1.0) + d2 * (x - 1.0) * (x - 2.0)).max(0.0) as u64
        };
        // A huge batch saturates a buffer at u64::MAX (`as` does); the sums saturate too
        // rather than wrap to something that would seem to fit.
        // The encoder's buffers once per slice, `full` slices of `per` examples and one of the
        // rest; the others at the whole batch. Counted, not listed: the batch may be 2^31.
        let per = crate::model::cpc::slice_images(&self.limits, &self.spec, batch);
        let (full, rest) = ((batch / per) as u64, batch % per);
        let (mut total, mut largest) = (4 * self.params_bytes, 0);
        for (i, &s) in self.sizes.iter().enumerate() {
            let (bytes, most) = if self.slice.contains(&i) {
                let (one, last) = (fit(s, per as f64), fit(s, rest as f64));
                let last = if rest > 0 { last } else { 0 };
                (one.saturating_mul(full).saturating_add(last), one)
            } else {
                let b = fit(s, batch as f64);
                (b, b)
            };
            total = total.saturating_add(bytes);
            largest = largest.max(most);
        }
        MemoryPlan {
            batch,
            params_bytes: self.params_bytes,
            total_bytes: total,
            largest_bytes: largest,
        }
    }
}

/// Check, before anything runs, that `batch` fits the adapter's buffer limits and the
/// optional memory budget; the error says what the batch needs and which batch would fit.
/// The parameter buffers are checked first, from the shapes, so a model too large at any
/// batch is refused before it is planned.
pub fn check_fits(
    gpu: &Gpu,
    spec: impl Into<Spec>,
    batch: usize,
    budget_bytes: Option<u64>,
) -> Result<MemoryPlan> {
    let spec = &spec.into();
    let fits = |p: &MemoryPlan| p.refusal(&gpu.limits, budget_bytes).is_none();
    check_params_fit(gpu, spec, budget_bytes)?;
    let estimate = Estimate::new(gpu, spec)?;
    let want = estimate.at(batch);
    if fits(&want) {
        return Ok(want);
    }
    // The largest batch below `batch` that fits, by bisection (a batch of 2^31 must not be
    // searched one at a time): `lo` fits (0 standing for none), `hi` does not. The estimate
    // grows with the batch, so this is the largest; were it not monotone somewhere, `lo`
    // would still be a batch that fits with `lo + 1` one that does not.
    let (mut lo, mut hi) = (0, batch);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if fits(&estimate.at(mid)) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let best = (lo > 0).then_some(lo);
    let what = want.refusal(&gpu.limits, budget_bytes).unwrap_or_default();
    Err(Error::Config(format!(
        "batch {batch} does not fit: {what}; {}",
        best.map_or("not even batch 1 fits".into(), |b| format!(
            "batch {b} fits"
        ))
    )))
}
