//! What a model costs in GPU memory at a batch size, counted from the buffers its plan
//! allocates, and the largest batch that fits the adapter's limits, found before a run.

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::model::{CpcModel, ModelSpec, ParamLayout};
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

/// Plan the model for `batch` and count its buffers.
pub fn plan(
    gpu: &Gpu,
    spec: &ModelSpec,
    batch: usize,
    init: &[f32],
    adam: AdamConfig,
) -> Result<(CpcModel, MemoryPlan)> {
    let (model, plan, _) = plan_with_sizes(gpu, spec, batch, init, adam)?;
    Ok((model, plan))
}

/// [`plan`], also returning the size of every buffer in allocation order.
fn plan_with_sizes(
    gpu: &Gpu,
    spec: &ModelSpec,
    batch: usize,
    init: &[f32],
    adam: AdamConfig,
) -> Result<(CpcModel, MemoryPlan, Vec<u64>)> {
    gpu.record_sizes(true);
    // Out-of-memory from the driver comes back as an error of this scope, not a panic.
    let scope = gpu.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
    let model = CpcModel::new(gpu, spec, batch, init, adam);
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
pub struct Estimate {
    params_bytes: u64,
    /// Each buffer's size at batches 1, 2 and 3 (the plan allocates the same buffers in the
    /// same order at every batch).
    sizes: Vec<[u64; 3]>,
}

impl Estimate {
    pub fn new(gpu: &Gpu, spec: &ModelSpec) -> Result<Estimate> {
        let init = vec![0.0; ParamLayout::new(spec).total];
        let mut runs = Vec::new();
        for b in 1..=3 {
            let (_, _, sizes) = plan_with_sizes(gpu, spec, b, &init, AdamConfig::default())?;
            runs.push(sizes);
        }
        assert!(
            runs.iter().all(|r| r.len() == runs[0].len()),
            "a plan allocates the same buffers at any batch"
        );
        let sizes = (0..runs[0].len())
            .map(|i| [runs[0][i], runs[1][i], runs[2][i]])
            .collect();
        Ok(Estimate {
            params_bytes: 4 * init.len() as u64,
            sizes,
        })
    }

    pub fn at(&self, batch: usize) -> MemoryPlan {
        // Newton's form of the quadratic through batches 1, 2 and 3.
        let x = batch as f64;
        let fit = |[y1, y2, y3]: [u64; 3]| {
            let (y1, y2, y3) = (y1 as f64, y2 as f64, y3 as f64);
            let (d1, d2) = (y2 - y1, (y3 - 2.0 * y2 + y1) / 2.0);
            (y1 + d1 * (x - 1.0) + d2 * (x - 1.0) * (x - 2.0)).max(0.0) as u64
        };
        let each: Vec<u64> = self.sizes.iter().map(|&s| fit(s)).collect();
        MemoryPlan {
            batch,
            params_bytes: self.params_bytes,
            total_bytes: 4 * self.params_bytes + each.iter().sum::<u64>(),
            largest_bytes: each.iter().copied().max().unwrap_or(0),
        }
    }
}

/// Check, before anything runs, that `batch` fits the adapter's buffer limits and the
/// optional memory budget; the error says what the batch needs and which batch would fit.
pub fn check_fits(
    gpu: &Gpu,
    spec: &ModelSpec,
    batch: usize,
    budget_bytes: Option<u64>,
) -> Result<MemoryPlan> {
    let limit = gpu
        .limits
        .max_storage_buffer_binding_size
        .min(gpu.limits.max_buffer_size);
    let fits = |p: &MemoryPlan| {
        p.largest_bytes <= limit && budget_bytes.is_none_or(|b| p.total_bytes <= b)
    };
    let estimate = Estimate::new(gpu, spec)?;
    let want = estimate.at(batch);
    if fits(&want) {
        return Ok(want);
    }
    let best = (1..batch).rev().find(|&b| fits(&estimate.at(b)));
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    let what = if want.largest_bytes > limit {
        format!(
            "its largest buffer needs {:.2} GiB but this adapter binds at most {:.2} GiB \
             (max_storage_buffer_binding_size)",
            gib(want.largest_bytes),
            gib(limit)
        )
    } else {
        format!(
            "it needs {:.2} GiB in all but the memory budget is {:.2} GiB",
            gib(want.total_bytes),
            gib(budget_bytes.unwrap_or(0))
        )
    };
    Err(Error::Config(format!(
        "batch {batch} does not fit: {what}; {}",
        best.map_or("not even batch 1 fits".into(), |b| format!(
            "batch {b} fits"
        ))
    )))
}
