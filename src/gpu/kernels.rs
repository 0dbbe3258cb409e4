//! The table of WGSL shaders (one file per kernel family under shaders/) and the cache of
//! compute pipelines built from them, keyed by shader, entry point and override constants.
//! The cache lists what it has built ([`Gpu::built_pipelines`]), with the options every
//! module and pipeline is created with ([`RUNTIME_CHECKS`], [`ZERO_INITIALIZE_WORKGROUP_MEMORY`]),
//! so a test can translate each pipeline for other backends exactly as it was built here.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::gpu::Gpu;

macro_rules! shaders {
    ($($variant:ident => $file:literal),* $(,)?) => {
        /// Every shader of the crate.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Shader { $($variant),* }

        impl Shader {
            pub const ALL: &'static [Shader] = &[$(Shader::$variant),*];

            /// File name under shaders/.
            pub fn file(self) -> &'static str {
                match self { $(Shader::$variant => $file),* }
            }

            /// The WGSL file's text, compiled into the binary.
            fn file_text(self) -> &'static str {
                match self { $(Shader::$variant => include_str!(concat!("../../shaders/", $file))),* }
            }
        }
    };
}

shaders! {
    Matmul => "matmul.wgsl",
    MatmulTiled => "matmul_tiled.wgsl",
    Elementwise => "elementwise.wgsl",
    SumChannels => "sum_channels.wgsl",
    Conv2dForward => "conv2d_forward.wgsl",
    Conv2dBackwardInput => "conv2d_backward_input.wgsl",
    Conv2dBackwardWeight => "conv2d_backward_weight.wgsl",
    Conv2dWeightWindows => "conv2d_weight_windows.wgsl",
    Conv2dTiled => "conv2d_tiled.wgsl",
    // The same two files with their weights bound as storage (see Shader::source).
    Conv2dForwardStorage => "conv2d_forward.wgsl",
    Conv2dBackwardInputStorage => "conv2d_backward_input.wgsl",
    LayerNorm => "layer_norm.wgsl",
    MeanPool => "mean_pool.wgsl",
    MaskedMean => "masked_mean.wgsl",
    Embedding => "embedding.wgsl",
    Patches => "patches.wgsl",
    CopyRows => "copy_rows.wgsl",
    Gru => "gru.wgsl",
    Infonce => "infonce.wgsl",
    Adam => "adam.wgsl",
    SoftmaxXent => "softmax_xent.wgsl",
    Transpose => "transpose.wgsl",
    // The reduction kernels once more, with subgroup operations (see Shader::source); a
    // device that uses subgroups builds these in their place (Gpu::pipeline).
    InfonceSubgroup => "infonce.wgsl",
    SoftmaxXentSubgroup => "softmax_xent.wgsl",
    SumChannelsSubgroup => "sum_channels.wgsl",
    AdamSubgroup => "adam.wgsl",
    LayerNormSubgroup => "layer_norm.wgsl",
}

/// How the conv forward and input-gradient shaders declare their weights: one 64 KiB window
/// as a uniform buffer, as written in the files ...
const UNIFORM_WEIGHTS: &str = "@group(0) @binding(2) var<uniform> weight: array<vec4<f32>, 4096>;";
/// ... or, in the Storage variants, the whole (transposed) weight matrix as storage.
const STORAGE_WEIGHTS: &str = "@group(0) @binding(2) var<storage, read> weight: array<vec4<f32>>;";

/// What every reduction kernel is built with (shaders/shared/reduce.wgsl) ...
const REDUCE: &str = include_str!("../../shaders/shared/reduce.wgsl");
/// ... and one of its two implementations: trees in workgroup memory ...
const REDUCE_WORKGROUP: &str = include_str!("../../shaders/shared/reduce_workgroup.wgsl");
/// ... or subgroup operations (wgpu's SUBGROUP feature).
const REDUCE_SUBGROUP: &str = include_str!("../../shaders/shared/reduce_subgroup.wgsl");

/// How a reduction kernel's source implements shaders/shared/reduce.wgsl.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reductions {
    /// Portable: a row per thread, workgroup sums as trees in workgroup memory.
    Workgroup,
    /// A row per subgroup, workgroup sums within and then across subgroups.
    Subgroup,
}

/// Invocations in a workgroup of the row kernels (infonce_rows, softmax_xent): ROW_WG in
/// shaders/shared/reduce.wgsl.
pub const ROW_WORKGROUP: usize = 64;

impl Shader {
    /// A reduction kernel's variant with subgroup operations; None for every other shader,
    /// the variants included.
    pub fn with_subgroups(self) -> Option<Shader> {
        match self {
            Shader::Infonce => Some(Shader::InfonceSubgroup),
            Shader::SoftmaxXent => Some(Shader::SoftmaxXentSubgroup),
            Shader::SumChannels => Some(Shader::SumChannelsSubgroup),
            Shader::Adam => Some(Shader::AdamSubgroup),
            Shader::LayerNorm => Some(Shader::LayerNormSubgroup),
            _ => None,
        }
    }

    /// Which implementation of the shared reductions the source is built with; None for a
    /// shader without them.
    pub fn reductions(self) -> Option<Reductions> {
        if self.with_subgroups().is_some() {
            Some(Reductions::Workgroup)
        } else if Shader::ALL.iter().any(|s| s.with_subgroups() == Some(self)) {
            Some(Reductions::Subgroup)
        } else {
            None
        }
    }

    /// The WGSL source. The conv forward and input-gradient files read their weights from one
    /// 64 KiB uniform window per dispatch, which a CPU adapter reads ten times faster than
    /// storage; a GPU would need hundreds of small dispatches for the paper's layers that
    /// way, so their Storage variants bind all the weights as one storage array instead.
    /// The reduction kernels get the shared reductions prepended, portable or with subgroup
    /// operations.
    pub fn source(self) -> std::borrow::Cow<'static, str> {
        let text = self.file_text();
        let reductions = match self.reductions() {
            Some(Reductions::Workgroup) => REDUCE_WORKGROUP,
            Some(Reductions::Subgroup) => REDUCE_SUBGROUP,
            None => return Shader::weights_swapped(self, text),
        };
        format!("{reductions}\n{REDUCE}\n{text}").into()
    }

    /// The conv files' text, with storage weights in their Storage variants.
    fn weights_swapped(self, text: &'static str) -> std::borrow::Cow<'static, str> {
        match self {
            Shader::Conv2dForwardStorage | Shader::Conv2dBackwardInputStorage => {
                assert!(
                    text.contains(UNIFORM_WEIGHTS),
                    "{}: weight binding",
                    self.file()
                );
                text.replace(UNIFORM_WEIGHTS, STORAGE_WEIGHTS).into()
            }
            _ => text.into(),
        }
    }
}

/// Buffer bounds checks stay on. Off: the counter naga adds to every loop in case it never
/// ends, and the guard on every integer division against a zero divisor. Together they cost
/// 12-15 % of a tiny training step on lavapipe (conv kernels 555 -> 480 ms,
/// docs/performance.md).
/// SAFETY (of creating modules with these): every loop in shaders/ counts up to a shape
/// extent or to a u32 the host wrote (embedding.wgsl's backward walks its index: a u32
/// counter rising to a u32 bound ends whatever the bound), or halves a constant, so it ends;
/// every divisor is a shape extent or stride, which the launchers in ops/ check to be
/// nonzero before anything is dispatched, or a tile size, which ops::matmul::Tiling::new
/// checks.
pub const RUNTIME_CHECKS: wgpu::ShaderRuntimeChecks = wgpu::ShaderRuntimeChecks {
    bounds_checks: true,
    ..wgpu::ShaderRuntimeChecks::unchecked()
};

/// The kernels with workgroup memory (reduction trees) write each element before reading
/// it, so none pays for zeroing it.
pub const ZERO_INITIALIZE_WORKGROUP_MEMORY: bool = false;

/// One pipeline: its shader (file and source variant), entry point and override constants.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PipelineKey {
    pub shader: Shader,
    pub entry: &'static str,
    /// Override constants, as (name, value bits) so the key can be hashed.
    constants: Vec<(&'static str, u64)>,
}

impl PipelineKey {
    /// The override constants, as the pipeline was created with them.
    pub fn constants(&self) -> Vec<(&'static str, f64)> {
        self.constants
            .iter()
            .map(|&(n, bits)| (n, f64::from_bits(bits)))
            .collect()
    }
}

impl std::fmt::Display for PipelineKey {
    /// `conv2d_forward.wgsl (Conv2dForwardStorage) main`, then `TRANS_A=1` and so on.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({:?}) {}",
            self.shader.file(),
            self.shader,
            self.entry
        )?;
        for (name, value) in self.constants() {
            write!(f, " {name}={value}")?;
        }
        Ok(())
    }
}

/// Pipelines are built on first use and kept for the device's lifetime: none is created
/// inside a training step once the step has been planned.
#[derive(Default)]
pub(crate) struct PipelineCache {
    modules: Mutex<HashMap<Shader, wgpu::ShaderModule>>,
    pipelines: Mutex<HashMap<PipelineKey, wgpu::ComputePipeline>>,
}

impl Gpu {
    /// The pipeline for `entry` of `shader` with the given override constants. A device that
    /// uses subgroups ([`Gpu::subgroups`]) builds a reduction kernel's subgroup variant in its
    /// place: launchers name the kernel, the device picks how it reduces.
    pub fn pipeline(
        &self,
        shader: Shader,
        entry: &'static str,
        constants: &[(&'static str, f64)],
    ) -> wgpu::ComputePipeline {
        let shader = match shader.with_subgroups() {
            Some(variant) if self.subgroups => variant,
            _ => shader,
        };
        let key = PipelineKey {
            shader,
            entry,
            constants: constants.iter().map(|&(n, v)| (n, v.to_bits())).collect(),
        };
        if let Some(p) = self.pipelines.pipelines.lock().unwrap().get(&key) {
            return p.clone();
        }
        let module = self
            .pipelines
            .modules
            .lock()
            .unwrap()
            .entry(shader)
            .or_insert_with(|| {
                // SAFETY: see RUNTIME_CHECKS.
                unsafe {
                    self.device.create_shader_module_trusted(
                        wgpu::ShaderModuleDescriptor {
                            label: Some(shader.file()),
                            source: wgpu::ShaderSource::Wgsl(shader.source()),
                        },
                        RUNTIME_CHECKS,
                    )
                }
            })
            .clone();
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(entry),
                // Each shader's bindings are derived from its source (group 0 only).
                layout: None,
                module: &module,
                entry_point: Some(entry),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants,
                    zero_initialize_workgroup_memory: ZERO_INITIALIZE_WORKGROUP_MEMORY,
                },
                cache: None,
            });
        self.pipelines
            .pipelines
            .lock()
            .unwrap()
            .insert(key, pipeline.clone());
        pipeline
    }

    /// How a row kernel (infonce_rows, softmax_xent) is dispatched over `rows` rows: its
    /// override constants and its workgroup count (to spread). The portable kernels take a
    /// row per thread; with subgroups, a row per subgroup, as many per workgroup as it holds
    /// subgroups of the largest size the adapter reports, so no row waits for another. At a
    /// smaller size the extra subgroups idle: the kernels are correct for any count.
    pub fn row_dispatch(&self, rows: usize) -> ([(&'static str, f64); 1], u64) {
        let per_group = if self.subgroups {
            (ROW_WORKGROUP / self.info.subgroup_max_size.max(1) as usize).max(1)
        } else {
            ROW_WORKGROUP
        };
        (
            [("ROWS_PER_GROUP", per_group as f64)],
            rows.div_ceil(per_group) as u64,
        )
    }

    /// Every pipeline built on this device so far, sorted by shader, entry point and
    /// constants.
    pub fn built_pipelines(&self) -> Vec<PipelineKey> {
        let mut keys: Vec<PipelineKey> = self
            .pipelines
            .pipelines
            .lock()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        keys.sort();
        keys
    }
}

/// Check that every kernel a device of `device_type` may run binds no more storage buffers
/// per stage, and no larger uniform buffer, than `limits` allow, before anything is planned:
/// the error names each kernel (file and entry point) and the limit it breaks. A kernel's
/// bindings are those its entry point uses (the pipelines derive their layouts), counted by
/// naga from the source; the conv weight variants are those a device of this type gets
/// (uniform windows on a CPU adapter, storage on a GPU: ops::conv2d::WeightBinding).
pub fn check_kernels_fit(
    limits: &wgpu::Limits,
    device_type: wgpu::DeviceType,
) -> crate::error::Result<()> {
    let cpu = device_type == wgpu::DeviceType::Cpu;
    let mut broken = Vec::new();
    for &shader in Shader::ALL {
        let skip = match shader {
            Shader::Conv2dForward | Shader::Conv2dBackwardInput => !cpu,
            Shader::Conv2dForwardStorage | Shader::Conv2dBackwardInputStorage => cpu,
            _ => false,
        };
        if skip {
            continue;
        }
        let module = naga::front::wgsl::parse_str(&shader.source())
            .unwrap_or_else(|e| panic!("{}: {e}", shader.file()));
        let info = naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::all(),
        )
        .validate(&module)
        .unwrap_or_else(|e| panic!("{}: {e:?}", shader.file()));
        for (i, entry) in module.entry_points.iter().enumerate() {
            let used = info.get_entry_point(i);
            let (mut storage, mut uniform) = (0u32, 0u64);
            for (handle, var) in module.global_variables.iter() {
                if used[handle].is_empty() {
                    continue;
                }
                match var.space {
                    naga::AddressSpace::Storage { .. } => storage += 1,
                    naga::AddressSpace::Uniform => {
                        let size = module.types[var.ty].inner.size(module.to_ctx());
                        uniform = uniform.max(size as u64);
                    }
                    _ => {}
                }
            }
            let name = format!("{} {}", shader.file(), entry.name);
            if storage > limits.max_storage_buffers_per_shader_stage {
                broken.push(format!(
                    "{name} binds {storage} storage buffers; this device allows {} \
                     (max_storage_buffers_per_shader_stage)",
                    limits.max_storage_buffers_per_shader_stage
                ));
            }
            if uniform > limits.max_uniform_buffer_binding_size {
                broken.push(format!(
                    "{name} binds a uniform buffer of {uniform} bytes; this device allows {} \
                     (max_uniform_buffer_binding_size)",
                    limits.max_uniform_buffer_binding_size
                ));
            }
        }
    }
    if broken.is_empty() {
        return Ok(());
    }
    Err(crate::error::Error::Config(format!(
        "this device's limits do not fit every kernel cpc runs: {}",
        broken.join("; ")
    )))
}
