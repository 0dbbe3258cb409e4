//! A launch: one compute dispatch with its pipeline, bind group and uniforms, planned once and
//! recorded any number of times. A model's forward or backward is a flat list of launches.

use crate::error::{Error, Result};
use crate::gpu::kernels::Shader;
use crate::gpu::{Gpu, Tensor};

/// A `#[repr(C)]` uniform struct that also exists, member for member, in a WGSL shader.
pub trait Uniform: bytemuck::Pod {
    /// The struct's name in WGSL.
    const WGSL_NAME: &'static str;
    /// (member name, byte offset) in declaration order.
    fn fields() -> Vec<(&'static str, usize)>;
}

/// Declare a uniform struct: #[repr(C)], Pod, with its member offsets for the layout test.
/// Members are u32 or f32 and the struct is padded to a multiple of 16 bytes.
#[macro_export]
macro_rules! uniform_struct {
    ($(#[$m:meta])* pub struct $name:ident { $($(#[$fm:meta])* pub $f:ident : $t:ty),* $(,)? }) => {
        $(#[$m])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
        pub struct $name { $($(#[$fm])* pub $f: $t),* }
        impl $crate::gpu::Uniform for $name {
            const WGSL_NAME: &'static str = stringify!($name);
            fn fields() -> Vec<(&'static str, usize)> {
                vec![$((stringify!($f), std::mem::offset_of!($name, $f))),*]
            }
        }
        const _: () = assert!(std::mem::size_of::<$name>() % 16 == 0, "pad uniforms to 16 bytes");
    };
}

/// The size and member offsets of a uniform struct, for comparison with naga's layout.
pub struct UniformLayout {
    pub name: &'static str,
    pub size: usize,
    pub fields: Vec<(&'static str, usize)>,
}

pub fn layout_of<U: Uniform>() -> UniformLayout {
    UniformLayout {
        name: U::WGSL_NAME,
        size: std::mem::size_of::<U>(),
        fields: U::fields(),
    }
}

/// Largest workgroup count the spread dispatches put in x; y takes the rest.
pub const SPREAD_X: u32 = 32768;

/// Workgroups for `n` workgroups' worth of linear work, spread over x and y when it exceeds
/// what one dimension takes. Shaders recover the index as wid.x + wid.y * num_workgroups.x
/// and skip indices past the end.
pub fn spread(gpu: &Gpu, kernel: &'static str, n: u64) -> Result<[u32; 3]> {
    let max = gpu.limits.max_compute_workgroups_per_dimension as u64;
    let n = n.max(1);
    if n <= max {
        return Ok([n as u32, 1, 1]);
    }
    let x = (SPREAD_X as u64).min(max);
    let y = n.div_ceil(x);
    if y > max {
        return Err(Error::Limit {
            kernel,
            message: format!("{n} workgroups do not fit in x and y"),
            limit: "max_compute_workgroups_per_dimension",
            value: max,
        });
    }
    Ok([x as u32, y as u32, 1])
}

/// The binding of a tensor starts at the largest aligned offset at or below its first byte;
/// this is the tensor's first element counted from there (what kernels get in uniforms).
pub fn rel_offset(gpu: &Gpu, t: &Tensor) -> u32 {
    let align = gpu.limits.min_storage_buffer_offset_alignment as u64;
    let base = (t.offset * 4) / align * align;
    ((t.offset * 4 - base) / 4) as u32
}

/// What a launch does, counted from its shapes: floating-point operations and the bytes it
/// must move at least (each input read once, each output written once).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cost {
    pub flops: u64,
    pub bytes: u64,
}

impl Cost {
    /// `flops` operations moving `elements` 4-byte elements (f32 or u32).
    pub fn of(flops: u64, elements: u64) -> Cost {
        Cost {
            flops,
            bytes: 4 * elements,
        }
    }
}

/// The cost of a launch on the inputs now in its buffers, for work that depends on their
/// values (see [`Launch::cost_of_inputs`]).
pub type CostOfInputs = std::sync::Arc<dyn Fn() -> Cost + Send + Sync>;

/// Runs the launch's CPU reference once on inputs of the launch's shapes (for
/// `cpc profile --compare`).
pub type Reference = std::sync::Arc<dyn Fn() + Send + Sync>;

pub struct Launch {
    /// The shader's name, with the entry point where it has several: "matmul",
    /// "layer_norm.forward".
    pub name: &'static str,
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    /// The uniform buffer, so per-step values (Adam's step) can be rewritten in place.
    pub uniforms: wgpu::Buffer,
    pub workgroups: [u32; 3],
    /// The plan's count, from the shapes: where the work depends on the inputs' values, the
    /// most a batch can ask (see [`Launch::cost_now`]).
    pub cost: Cost,
    cost_of_inputs: Option<CostOfInputs>,
    pub reference: Option<Reference>,
}

impl std::fmt::Debug for Launch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Launch")
            .field("name", &self.name)
            .field("workgroups", &self.workgroups)
            .field("cost", &self.cost)
            .finish_non_exhaustive()
    }
}

/// "file" for a shader's only (main) entry point, "file.entry" otherwise; interned so a
/// launch's name is a cheap &'static str for profiles.
fn launch_name(shader: Shader, entry: &'static str) -> &'static str {
    use std::collections::HashMap;
    use std::sync::Mutex;
    static NAMES: Mutex<Option<HashMap<(Shader, &'static str), &'static str>>> = Mutex::new(None);
    let mut names = NAMES.lock().unwrap();
    names
        .get_or_insert_with(HashMap::new)
        .entry((shader, entry))
        .or_insert_with(|| {
            let stem = shader.file().trim_end_matches(".wgsl");
            let name = if entry == "main" {
                stem.to_string()
            } else {
                format!("{stem}.{entry}")
            };
            Box::leak(name.into_boxed_str())
        })
}

impl Launch {
    /// Plan a dispatch of `entry` in `shader`: binding 0 is the uniform struct, bindings
    /// 1.. are the tensors in order.
    pub fn new<U: Uniform>(
        gpu: &Gpu,
        shader: Shader,
        entry: &'static str,
        constants: &[(&'static str, f64)],
        params: &U,
        tensors: &[&Tensor],
        workgroups: [u32; 3],
    ) -> Result<Launch> {
        let numbered: Vec<(u32, &Tensor)> = tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (i as u32 + 1, *t))
            .collect();
        Launch::with_bindings(gpu, shader, entry, constants, params, &numbered, workgroups)
    }

    /// As [`Launch::new`], for entry points that use only some of their shader's bindings:
    /// each tensor comes with its binding number.
    pub fn with_bindings<U: Uniform>(
        gpu: &Gpu,
        shader: Shader,
        entry: &'static str,
        constants: &[(&'static str, f64)],
        params: &U,
        tensors: &[(u32, &Tensor)],
        workgroups: [u32; 3],
    ) -> Result<Launch> {
        let max_dim = gpu.limits.max_compute_workgroups_per_dimension;
        if let Some(&w) = workgroups.iter().find(|&&w| w > max_dim) {
            return Err(Error::Limit {
                kernel: launch_name(shader, entry),
                message: format!("dispatch of {w} workgroups in one dimension"),
                limit: "max_compute_workgroups_per_dimension",
                value: max_dim as u64,
            });
        }
        let max_binding = gpu.limits.max_storage_buffer_binding_size;
        let align = gpu.limits.min_storage_buffer_offset_alignment as u64;
        // Catch wgpu's validation errors here, as an Err naming the entry point, instead of
        // a panic or a poisoned submission later.
        let scope = gpu.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let pipeline = gpu.pipeline(shader, entry, constants);
        let uniforms = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(entry),
            size: std::mem::size_of::<U>() as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        gpu.queue
            .write_buffer(&uniforms, 0, bytemuck::bytes_of(params));
        let mut ranges = Vec::with_capacity(tensors.len());
        for (_, t) in tensors {
            let base = (t.offset * 4) / align * align;
            // Round up to 4 bytes; never bind an empty range.
            let size = (t.binding_end() - base).max(4);
            if size > max_binding {
                return Err(Error::Limit {
                    kernel: launch_name(shader, entry),
                    message: format!(
                        "a binding of shape {:?} needs {size} bytes; split the batch",
                        t.shape
                    ),
                    limit: "max_storage_buffer_binding_size",
                    value: max_binding,
                });
            }
            ranges.push((base, size));
        }
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: uniforms.as_entire_binding(),
        }];
        for (&(binding, t), &(base, size)) in tensors.iter().zip(&ranges) {
            entries.push(wgpu::BindGroupEntry {
                binding,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: &t.buffer,
                    offset: base,
                    size: std::num::NonZeroU64::new(size),
                }),
            });
        }
        let bind_group = gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(entry),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Gpu {
                what: format!("planning {entry} of {}", shader.file()),
                message: e.to_string(),
            });
        }
        Ok(Launch {
            name: launch_name(shader, entry),
            pipeline,
            bind_group,
            uniforms,
            workgroups,
            cost: Cost::default(),
            cost_of_inputs: None,
            reference: None,
        })
    }

    /// The launch's FLOPs and minimal bytes moved (f32 elements read and written).
    pub fn cost(mut self, flops: u64, floats_moved: u64) -> Launch {
        self.cost = Cost::of(flops, floats_moved);
        self
    }

    /// Where the launch's work depends on the values of its inputs (how many positions of a
    /// text batch are words, how many distinct words it holds), `f` counts it for the inputs
    /// last written; [`Launch::cost_now`] asks it.
    pub fn cost_of_inputs(mut self, f: impl Fn() -> Cost + Send + Sync + 'static) -> Launch {
        self.cost_of_inputs = Some(std::sync::Arc::new(f));
        self
    }

    /// The launch's cost on the inputs now in its buffers: the plan's count, or for work that
    /// depends on the inputs' values, the count for the batch last written.
    pub fn cost_now(&self) -> Cost {
        self.cost_of_inputs.as_ref().map_or(self.cost, |f| f())
    }

    /// The launch's CPU reference, run on inputs of its shapes.
    pub fn reference(mut self, f: impl Fn() + Send + Sync + 'static) -> Launch {
        self.reference = Some(std::sync::Arc::new(f));
        self
    }

    /// Record the dispatch into a compute pass.
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        let [x, y, z] = self.workgroups;
        pass.dispatch_workgroups(x, y, z);
    }

    /// Rewrite the uniforms (queued; takes effect at the next submission).
    pub fn set_params<U: Uniform>(&self, gpu: &Gpu, params: &U) {
        gpu.queue
            .write_buffer(&self.uniforms, 0, bytemuck::bytes_of(params));
    }
}

impl Gpu {
    /// Record launches into one compute pass, submit and wait. For tests, benches and
    /// one-off work; the training loop records its own passes.
    pub fn run(&self, launches: &[&Launch]) -> Result<()> {
        let mut enc = self.device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            for l in launches {
                l.record(&mut pass);
            }
        }
        self.queue.submit([enc.finish()]);
        self.sync(launches.first().map(|l| l.name).unwrap_or("run"))
    }
}
