//! f32 tensors on the GPU, and u32 ones (token ids, lengths, indices, written with
//! [`Tensor::write_u32`]): a buffer, an element offset into it and a shape.
//!
//! Many tensors may view one buffer (parameters, gradients and Adam moments each live in one
//! flat buffer with named views); a view's offset is in elements and kernels receive it in
//! their uniforms, so views need no binding alignment.

use crate::error::{Error, Result};
use crate::gpu::Gpu;

thread_local! {
    /// While Some, the size of every tensor this thread allocates (memory plans).
    static SIZES: std::cell::RefCell<Option<Vec<u64>>> = const { std::cell::RefCell::new(None) };
}

/// Stop recording for a while: returns what resuming needs.
pub(crate) fn pause_recording() -> Option<Vec<u64>> {
    SIZES.with_borrow_mut(|s| s.take())
}

pub(crate) fn resume_recording(state: Option<Vec<u64>>) {
    SIZES.with_borrow_mut(|s| *s = state)
}

/// How many sizes have been recorded so far (0 while not recording).
pub(crate) fn recorded_count() -> usize {
    SIZES.with_borrow(|s| s.as_ref().map_or(0, Vec::len))
}

pub(crate) fn record_sizes(on: bool) -> Vec<u64> {
    SIZES.with_borrow_mut(|sizes| {
        let out = sizes.take().unwrap_or_default();
        if on {
            *sizes = Some(Vec::new());
        }
        out
    })
}

#[derive(Clone, Debug)]
pub struct Tensor {
    pub buffer: wgpu::Buffer,
    /// First element of this view inside `buffer`.
    pub offset: u64,
    pub shape: Vec<usize>,
}

/// Usage of every storage buffer: read and written by kernels, copied to and from the host.
pub const STORAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_DST)
    .union(wgpu::BufferUsages::COPY_SRC);

impl Tensor {
    /// A new zero-filled tensor in a buffer of its own.
    pub fn zeros(gpu: &Gpu, label: &str, shape: &[usize]) -> Result<Tensor> {
        Tensor::alloc(gpu, label, shape, STORAGE)
    }

    /// A zeroed tensor that can also be bound as a uniform buffer, in windows of at most
    /// max_uniform_buffer_binding_size bytes at offsets that are multiples of 256 bytes.
    pub fn uniform(gpu: &Gpu, label: &str, shape: &[usize]) -> Result<Tensor> {
        Tensor::alloc(gpu, label, shape, STORAGE | wgpu::BufferUsages::UNIFORM)
    }

    fn alloc(gpu: &Gpu, label: &str, shape: &[usize], usage: wgpu::BufferUsages) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        let bytes = (n.max(1) * 4) as u64;
        if bytes > gpu.limits.max_buffer_size {
            return Err(Error::Limit {
                kernel: "alloc",
                message: format!("tensor '{label}' of shape {shape:?} needs {bytes} bytes"),
                limit: "max_buffer_size",
                value: gpu.limits.max_buffer_size,
            });
        }
        gpu.allocated
            .fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
        SIZES.with_borrow_mut(|sizes| sizes.as_mut().map(|s| s.push(bytes)));
        // New buffers are zeroed by wgpu.
        let buffer = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes.next_multiple_of(4),
            usage,
            mapped_at_creation: false,
        });
        Ok(Tensor {
            buffer,
            offset: 0,
            shape: shape.to_vec(),
        })
    }

    /// A new tensor holding `data`.
    pub fn from_slice(gpu: &Gpu, label: &str, shape: &[usize], data: &[f32]) -> Result<Tensor> {
        let t = Tensor::zeros(gpu, label, shape)?;
        t.write(gpu, data)?;
        Ok(t)
    }

    /// A view of `shape` starting `offset` elements into this tensor's buffer region.
    pub fn view(&self, offset: usize, shape: &[usize]) -> Tensor {
        Tensor {
            buffer: self.buffer.clone(),
            offset: self.offset + offset as u64,
            shape: shape.to_vec(),
        }
    }

    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Overwrite the view with host data (queued; lands before the next submission).
    pub fn write(&self, gpu: &Gpu, data: &[f32]) -> Result<()> {
        self.write_words(gpu, bytemuck::cast_slice(data))
    }

    /// Overwrite the view with u32 words (token ids, lengths, indices), which the kernels
    /// bind as `array<u32>`: a view counts 4-byte elements whatever they hold.
    pub fn write_u32(&self, gpu: &Gpu, data: &[u32]) -> Result<()> {
        self.write_words(gpu, bytemuck::cast_slice(data))
    }

    fn write_words(&self, gpu: &Gpu, data: &[[u8; 4]]) -> Result<()> {
        if data.len() != self.len() {
            return Err(Error::Shape {
                kernel: "write",
                message: format!(
                    "{} values for a tensor of shape {:?} ({} elements)",
                    data.len(),
                    self.shape,
                    self.len()
                ),
            });
        }
        if !data.is_empty() {
            gpu.queue
                .write_buffer(&self.buffer, self.offset * 4, bytemuck::cast_slice(data));
        }
        Ok(())
    }

    /// Fill the view with one value (NaN before a kernel test: "never written" must not pass).
    pub fn fill(&self, gpu: &Gpu, value: f32) -> Result<()> {
        self.write(gpu, &vec![value; self.len()])
    }

    /// Copy the view back to the host, waiting for the GPU. Not for the training loop.
    pub fn read(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        let n = self.len();
        if n == 0 {
            return Ok(Vec::new());
        }
        let bytes = (n * 4) as u64;
        let staging = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = gpu.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(&self.buffer, self.offset * 4, &staging, 0, bytes);
        gpu.queue.submit([enc.finish()]);
        let slice = staging.slice(..);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        gpu.sync("readback")?;
        rx.recv()
            .map_err(|e| Error::Other(e.to_string()))?
            .map_err(|e| Error::Gpu {
                what: "readback".into(),
                message: e.to_string(),
            })?;
        let out = {
            let view = slice.get_mapped_range().map_err(|e| Error::Gpu {
                what: "readback".into(),
                message: e.to_string(),
            })?;
            bytemuck::cast_slice::<u8, f32>(&view).to_vec()
        };
        staging.unmap();
        Ok(out)
    }

    /// Bytes from the start of the buffer to the end of this view: what a binding must cover.
    pub(crate) fn binding_end(&self) -> u64 {
        (self.offset + self.len() as u64) * 4
    }
}
