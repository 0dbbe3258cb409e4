//! The model replicas a run trains, one per device (`--devices`; one replica without it),
//! and the host-side gradient sum that keeps several of them identical.
//!
//! With one replica and one process the gradients never leave the GPU: the micro-batches'
//! backward passes add into the gradient buffer and Adam reads it there. With several
//! replicas, or several processes ([`AllReduce`], e.g. MPI ranks), each step ends so:
//!
//! 1. each replica's last micro-batch copies its gradient buffer into a mappable read
//!    buffer ([`Replica::record_gradients_out`]);
//! 2. the host maps those, one replica after another in device order, and sums them into
//!    one host vector (replica 0's values, then each other replica's added in turn), then
//!    sums that vector over the processes ([`AllReduce::sum`]);
//! 3. the host writes the sum into each replica's mappable write buffer, which a copy puts
//!    back into its gradient buffer, and the optimiser runs on every replica
//!    ([`Replica::record_gradients_in`]).
//!
//! Every replica so gets the same gradient bits and runs the same Adam launches on the same
//! parameters: replicas on devices of one kind stay bit-identical. The buffers are made
//! once, when the run is planned; a step allocates nothing but its command buffers.

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::model::CpcModel;

/// A sum over the processes of a data-parallel run (one rank a process). Every process
/// calls [`AllReduce::sum`] at the same point of every step with a vector of the same
/// length; each ends with the same values, bit for bit.
pub trait AllReduce: Send + Sync + std::fmt::Debug {
    /// This process's place, 0-based; rank 0 writes checkpoints, metrics and the display.
    fn rank(&self) -> usize;
    /// Processes in the run.
    fn ranks(&self) -> usize;
    /// Replace `values` with their element-wise sum over every process.
    fn sum(&self, values: &mut [f32]) -> Result<()>;
    /// Whether `flag` is true on any process (a stop asked for on one of them).
    fn any(&self, flag: bool) -> Result<bool>;
    /// An error naming `what` unless `value` is the same on every process: the processes
    /// check that they start from, and keep, the same state.
    fn agree(&self, what: &str, value: u64) -> Result<()>;
}

/// One device's copy of the model, with the buffers its gradients cross to the host in.
pub struct Replica<'g> {
    pub gpu: &'g Gpu,
    pub model: CpcModel,
    /// The gradient's mappable copies (read, write); None when gradients stay on the GPU.
    staging: Option<(wgpu::Buffer, wgpu::Buffer)>,
}

impl<'g> Replica<'g> {
    /// A replica of `model` on `gpu`; `through_host` gives it the buffers for the host-side
    /// sum.
    pub fn new(gpu: &'g Gpu, model: CpcModel, through_host: bool) -> Replica<'g> {
        let staging = through_host.then(|| {
            let size = model.buffers.grads.len() as u64 * 4;
            let buffer = |label, usage| {
                gpu.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some(label),
                    size,
                    usage,
                    mapped_at_creation: false,
                })
            };
            use wgpu::BufferUsages as U;
            (
                buffer("gradients to host", U::MAP_READ | U::COPY_DST),
                buffer("gradients from host", U::MAP_WRITE | U::COPY_SRC),
            )
        });
        Replica {
            gpu,
            model,
            staging,
        }
    }

    /// Whether this replica's gradients go through the host.
    pub fn through_host(&self) -> bool {
        self.staging.is_some()
    }

    fn grads_bytes(&self) -> (u64, u64) {
        let g = &self.model.buffers.grads;
        (g.offset * 4, g.len() as u64 * 4)
    }

    /// Record the copy of the gradient buffer into the read buffer (after the step's last
    /// backward on this replica).
    pub fn record_gradients_out(&self, enc: &mut wgpu::CommandEncoder) {
        if let Some((read, _)) = &self.staging {
            let (offset, bytes) = self.grads_bytes();
            enc.copy_buffer_to_buffer(&self.model.buffers.grads.buffer, offset, read, 0, bytes);
        }
    }

    /// Write `sum` into the write buffer (waiting until the GPU is done with it) and record
    /// its copy into the gradient buffer, before the optimiser.
    pub fn record_gradients_in(&self, sum: &[f32], enc: &mut wgpu::CommandEncoder) -> Result<()> {
        let Some((_, write)) = &self.staging else {
            return Ok(());
        };
        let slice = write.slice(..);
        self.gpu
            .map_and_wait(slice, wgpu::MapMode::Write, None, "gradients from host")?;
        slice
            .get_mapped_range_mut()
            .map_err(|e| mapping_error("gradients from host", e))?
            .copy_from_slice(bytemuck::cast_slice(sum));
        write.unmap();
        let (offset, bytes) = self.grads_bytes();
        enc.copy_buffer_to_buffer(write, 0, &self.model.buffers.grads.buffer, offset, bytes);
        Ok(())
    }

    /// Add (or with `first`, copy) this replica's gradients, copied out by the step, into
    /// `sum`, waiting for them.
    fn add_gradients_to(&self, sum: &mut [f32], first: bool) -> Result<()> {
        let Some((read, _)) = &self.staging else {
            return Ok(());
        };
        let slice = read.slice(..);
        self.gpu
            .map_and_wait(slice, wgpu::MapMode::Read, None, "gradients to host")?;
        {
            let view = slice
                .get_mapped_range()
                .map_err(|e| mapping_error("gradients to host", e))?;
            let grads: &[f32] = bytemuck::cast_slice(&view);
            if first {
                sum.copy_from_slice(grads);
            } else {
                sum.iter_mut().zip(grads).for_each(|(s, g)| *s += g);
            }
        }
        read.unmap();
        Ok(())
    }
}

fn mapping_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Gpu {
        what: what.into(),
        message: e.to_string(),
    }
}

/// Sum the gradients every replica copied out this step into `sum` (in replica order),
/// then over the processes of `ranks`. Waits for each replica's step.
pub fn sum_gradients(
    replicas: &[Replica],
    ranks: Option<&dyn AllReduce>,
    sum: &mut [f32],
) -> Result<()> {
    for (i, r) in replicas.iter().enumerate() {
        r.add_gradients_to(sum, i == 0)?;
    }
    match ranks {
        Some(ranks) => ranks.sum(sum),
        None => Ok(()),
    }
}
