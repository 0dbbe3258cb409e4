//! Adapter choice and the device every kernel runs on.
//!
//! The adapter follows the command line first, then the environment (WGPU_BACKEND,
//! WGPU_ADAPTER_NAME), then prefers a discrete GPU, an integrated one, a virtual one and
//! finally the CPU (software) adapter. The kernel path (which family of kernels the
//! launchers in ops/ plan) follows the adapter unless `--kernels` or CPC_KERNELS forces one;
//! on the GPU path the tiled kernels' tile sizes are tuned per adapter unless `--tune off` or
//! CPC_TUNE=off (ops::tune);
//! the reduction kernels use subgroup operations where the adapter offers them unless
//! `--subgroups off` or CPC_SUBGROUPS=off keeps them portable.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::gpu::kernels::PipelineCache;
use crate::ops::tune::{self, AdapterKey, Tilings, Tune};

/// How the user asked for an adapter (`--backend`, `--adapter`, `--software`, `--limits`).
#[derive(Clone, Debug, Default)]
pub struct AdapterChoice {
    /// Restrict to one backend: vulkan, metal, dx12 or gl.
    pub backend: Option<String>,
    /// Case-insensitive substring of the adapter's name.
    pub name: Option<String>,
    /// Take the software (CPU) adapter, e.g. Mesa's lavapipe.
    pub software: bool,
    /// Take the adapter of this index in `cpc info`'s list (on the backends allowed),
    /// whatever `name` and `software` say: `--devices`.
    pub index: Option<usize>,
    /// The limits to open the device with.
    pub limits: LimitsChoice,
    /// Exact limits instead of `limits`' (no flag): tests open a device smaller than any
    /// choice to see what a plan does on it.
    pub custom_limits: Option<wgpu::Limits>,
    /// The kernel path asked for (`--kernels`); None: CPC_KERNELS, else auto.
    pub kernels: Option<Kernels>,
    /// Whether to tune tile sizes (`--tune`); None: CPC_TUNE, else on.
    pub tune: Option<Tune>,
    /// The tuner's cache folder instead of CPC_CACHE_DIR's or the user's (no flag: tests
    /// keep their caches in temporary folders).
    pub cache_dir: Option<PathBuf>,
    /// Whether the reductions may use subgroups (`--subgroups`); None: CPC_SUBGROUPS, else
    /// auto. Tests set it to run both on one adapter.
    pub subgroups: Option<Subgroups>,
}

/// The limits a device is opened with: what decides which buffers bind whole, how many
/// storage buffers a kernel may use, how much workgroup memory it gets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LimitsChoice {
    /// The adapter's own (wgpu's defaults would cap buffers at 256 MiB).
    #[default]
    Adapter,
    /// WebGPU's baseline, `wgpu::Limits::default()`: 128 MiB storage bindings, 8 storage
    /// buffers per stage, 16 KiB workgroup memory, 256 invocations, 64 KiB uniform
    /// bindings. What a browser or a typical laptop GPU offers at least.
    Webgpu,
    /// `wgpu::Limits::downlevel_defaults()`: the GL ES class of device (4 storage buffers
    /// per stage, 16 KiB uniform bindings).
    Downlevel,
}

impl LimitsChoice {
    /// The limits to request from an adapter that offers `adapter`.
    pub fn limits(self, adapter: &wgpu::Limits) -> wgpu::Limits {
        match self {
            LimitsChoice::Adapter => adapter.clone(),
            LimitsChoice::Webgpu => wgpu::Limits::default(),
            LimitsChoice::Downlevel => wgpu::Limits::downlevel_defaults(),
        }
    }
}

/// The kernel path asked for: `--kernels auto|gpu|cpu` or CPC_KERNELS.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Kernels {
    /// Follow the adapter: the CPU path on a CPU adapter, the GPU path on any other.
    #[default]
    Auto,
    Gpu,
    Cpu,
}

/// The choice the command line made (`flag`), else the environment variable `var`, else
/// the default; and which of the three it was, for the reasons `cpc info` prints.
fn asked_or_env<T>(
    asked: Option<T>,
    flag: &'static str,
    var: &'static str,
) -> Result<(T, &'static str)>
where
    T: std::str::FromStr<Err = Error> + Default,
{
    Ok(match asked {
        Some(choice) => (choice, flag),
        None => match std::env::var(var) {
            Ok(v) if !v.is_empty() => (v.parse()?, var),
            _ => (T::default(), "default"),
        },
    })
}

impl std::str::FromStr for Kernels {
    type Err = Error;
    fn from_str(s: &str) -> Result<Kernels> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Kernels::Auto),
            "gpu" => Ok(Kernels::Gpu),
            "cpu" => Ok(Kernels::Cpu),
            other => Err(Error::Config(format!(
                "unknown kernel path '{other}': use auto, gpu or cpu"
            ))),
        }
    }
}

/// Which family of kernels a device runs, decided once when it is opened
/// ([`KernelPath::choose`]); each launcher with a kernel per path reads it from
/// [`Gpu::kernels`] (ops::matmul::MatmulKernel::for_device and
/// ops::conv2d::ConvKernel::for_device).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelPath {
    /// Tuned on lavapipe: blocks of outputs in registers, global memory read directly.
    Cpu,
    /// Built for GPUs: tiles staged through workgroup memory.
    Gpu,
}

impl KernelPath {
    /// The one place the path is chosen: the flag, else CPC_KERNELS, else the adapter's type
    /// (a CPU adapter gets the CPU path). Returns the path and why, in words.
    pub fn choose(
        asked: Option<Kernels>,
        device_type: wgpu::DeviceType,
    ) -> Result<(KernelPath, String)> {
        let (kernels, source) = asked_or_env(asked, "--kernels", "CPC_KERNELS")?;
        Ok(match kernels {
            Kernels::Gpu => (KernelPath::Gpu, format!("gpu kernels from {source}")),
            Kernels::Cpu => (KernelPath::Cpu, format!("cpu kernels from {source}")),
            Kernels::Auto if device_type == wgpu::DeviceType::Cpu => (
                KernelPath::Cpu,
                format!("cpu kernels for a CPU adapter ({source}: auto)"),
            ),
            Kernels::Auto => (
                KernelPath::Gpu,
                format!("gpu kernels for a {device_type:?} adapter ({source}: auto)"),
            ),
        })
    }
}

/// Whether the reduction kernels (InfoNCE and soft-max rows, channel sums, norms) may use
/// subgroup operations: `--subgroups auto|off` or CPC_SUBGROUPS.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Subgroups {
    /// Where the adapter offers wgpu's SUBGROUP feature (Vulkan, Metal and DX12 GPUs and
    /// lavapipe mostly do; GL never does in wgpu, nor do many browsers).
    #[default]
    Auto,
    /// Never: the portable kernels, as an adapter without the feature runs them.
    Off,
}

impl std::str::FromStr for Subgroups {
    type Err = Error;
    fn from_str(s: &str) -> Result<Subgroups> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Subgroups::Auto),
            "off" => Ok(Subgroups::Off),
            other => Err(Error::Config(format!(
                "unknown subgroups choice '{other}': use auto or off"
            ))),
        }
    }
}

impl Subgroups {
    /// The one place the reductions are chosen: the flag, else CPC_SUBGROUPS, else whether
    /// the adapter offers SUBGROUP (its `features`). Returns whether subgroup operations are
    /// used and why, in words (with the subgroup sizes the adapter reports).
    pub fn choose(
        asked: Option<Subgroups>,
        info: &wgpu::AdapterInfo,
        features: wgpu::Features,
    ) -> Result<(bool, String)> {
        let (choice, source) = asked_or_env(asked, "--subgroups", "CPC_SUBGROUPS")?;
        Ok(match choice {
            Subgroups::Off => (false, format!("off from {source}")),
            Subgroups::Auto if features.contains(wgpu::Features::SUBGROUP) => (
                true,
                format!(
                    "the adapter's subgroups have {} to {} invocations ({source}: auto)",
                    info.subgroup_min_size, info.subgroup_max_size
                ),
            ),
            Subgroups::Auto => (
                false,
                format!("the adapter has no subgroups ({source}: auto)"),
            ),
        })
    }
}

/// One adapter as `cpc info` reports it.
#[derive(Clone, Debug)]
pub struct AdapterSummary {
    pub info: wgpu::AdapterInfo,
    pub features: wgpu::Features,
    pub limits: wgpu::Limits,
}

/// The device, its queue and the compiled pipelines.
pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    /// The limits the device was opened with (the adapter's own unless asked otherwise).
    pub limits: wgpu::Limits,
    /// Which limits were asked for.
    pub limits_choice: LimitsChoice,
    pub features: wgpu::Features,
    /// Why this adapter was chosen, in words, for `cpc info`.
    pub reason: String,
    /// The kernel path the launchers plan for this device.
    pub kernels: KernelPath,
    /// Why that path, in words, for `cpc info`.
    pub kernels_reason: String,
    /// The tiled kernels' tiling per shape class (ops::tune): tuned, read from the cache
    /// file, or the default.
    pub tilings: Tilings,
    /// Whether the reduction kernels use subgroup operations (Gpu::pipeline builds their
    /// subgroup variants); the device has the SUBGROUP feature only then.
    pub subgroups: bool,
    /// Why, in words, for `cpc info`.
    pub subgroups_reason: String,
    pub(crate) pipelines: PipelineCache,
    /// Validation errors wgpu reports outside an error scope land here instead of panicking.
    uncaptured: Arc<Mutex<Vec<String>>>,
    /// Bytes of every tensor allocated so far: what a plan costs.
    pub(crate) allocated: std::sync::atomic::AtomicU64,
}

fn parse_backend(name: &str) -> Result<wgpu::Backends> {
    match name.to_ascii_lowercase().as_str() {
        "vulkan" | "vk" => Ok(wgpu::Backends::VULKAN),
        "metal" | "mtl" => Ok(wgpu::Backends::METAL),
        "dx12" | "d3d12" => Ok(wgpu::Backends::DX12),
        "gl" | "gles" | "opengl" => Ok(wgpu::Backends::GL),
        other => Err(Error::NoAdapter(format!(
            "unknown backend '{other}': use vulkan, metal, dx12 or gl"
        ))),
    }
}

fn type_rank(t: wgpu::DeviceType) -> u32 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    }
}

fn backend_rank(b: wgpu::Backend) -> u32 {
    // Native compute APIs before GL: GL has no f16, no subgroups and no faster.
    match b {
        wgpu::Backend::Vulkan | wgpu::Backend::Metal | wgpu::Backend::Dx12 => 0,
        _ => 1,
    }
}

const NO_ADAPTER_HELP: &str = "no GPU adapter found. On Debian/Ubuntu the software adapter \
(Mesa's lavapipe) comes with `apt-get install mesa-vulkan-drivers libvulkan1`; elsewhere \
install your GPU's Vulkan, Metal or DX12 driver";

impl AdapterChoice {
    fn backends(&self) -> Result<wgpu::Backends> {
        match &self.backend {
            Some(b) => parse_backend(b),
            None => Ok(wgpu::Backends::from_env().unwrap_or(wgpu::Backends::all())),
        }
    }

    fn name_filter(&self) -> Option<String> {
        self.name
            .clone()
            .or_else(|| std::env::var("WGPU_ADAPTER_NAME").ok())
            .filter(|s| !s.is_empty())
    }
}

fn instance(backends: wgpu::Backends) -> wgpu::Instance {
    // Flags and backend options come from the environment (WGPU_VALIDATION, ...).
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    desc.backends = backends;
    wgpu::Instance::new(desc)
}

/// Every adapter wgpu finds on the backends the choice allows.
pub fn list_adapters(choice: &AdapterChoice) -> Result<Vec<AdapterSummary>> {
    let inst = instance(choice.backends()?);
    let adapters = pollster::block_on(inst.enumerate_adapters(choice.backends()?));
    Ok(adapters
        .iter()
        .map(|a| AdapterSummary {
            info: a.get_info(),
            features: a.features(),
            limits: a.limits(),
        })
        .collect())
}

/// The adapters `--devices all` trains on, as indices of [`list_adapters`]' list: every
/// hardware adapter of the first backend, in the order Vulkan, Metal, DX12, GL, that offers
/// one (a GPU that two backends offer is listed once by each, and two GPUs of one model
/// have the same vendor and device ids, so the backend is what tells them apart), or where
/// there is none the first software adapter.
pub fn all_device_indices(choice: &AdapterChoice) -> Result<Vec<usize>> {
    let all = list_adapters(choice)?;
    let hardware = |a: &AdapterSummary| a.info.device_type != wgpu::DeviceType::Cpu;
    let order = [
        wgpu::Backend::Vulkan,
        wgpu::Backend::Metal,
        wgpu::Backend::Dx12,
        wgpu::Backend::Gl,
    ];
    let on = |backend| -> Vec<usize> {
        (all.iter().enumerate())
            .filter(|(_, a)| hardware(a) && a.info.backend == backend)
            .map(|(i, _)| i)
            .collect()
    };
    let best = (order.into_iter().map(on))
        .find(|found| !found.is_empty())
        .or_else(|| {
            (all.iter()
                .position(|a| a.info.device_type == wgpu::DeviceType::Cpu))
            .map(|i| vec![i])
        });
    best.ok_or_else(|| Error::NoAdapter(NO_ADAPTER_HELP.into()))
}

/// Pick the adapter the choice asks for and say why.
fn pick(choice: &AdapterChoice) -> Result<(wgpu::Adapter, String)> {
    let backends = choice.backends()?;
    let inst = instance(backends);
    let mut adapters = pollster::block_on(inst.enumerate_adapters(backends));
    if adapters.is_empty() {
        return Err(Error::NoAdapter(NO_ADAPTER_HELP.into()));
    }
    if let Some(i) = choice.index {
        let n = adapters.len();
        if i >= n {
            return Err(Error::NoAdapter(format!(
                "no adapter [{i}]: `cpc info` lists {n} ([0] to [{}])",
                n - 1
            )));
        }
        let adapter = adapters.swap_remove(i);
        return Ok((
            adapter,
            format!("adapter [{i}] of `cpc info`'s list asked for"),
        ));
    }
    let mut why = Vec::new();
    if let Some(b) = &choice.backend {
        why.push(format!("backend {b} asked for"));
    } else if wgpu::Backends::from_env().is_some() {
        why.push("backend from WGPU_BACKEND".into());
    }
    if let Some(name) = choice.name_filter() {
        let n = name.to_lowercase();
        adapters.retain(|a| a.get_info().name.to_lowercase().contains(&n));
        if adapters.is_empty() {
            return Err(Error::NoAdapter(format!(
                "no adapter's name contains '{name}' (see `cpc info` for the list)"
            )));
        }
        why.push(format!("name contains '{name}'"));
    }
    if choice.software {
        adapters.retain(|a| a.get_info().device_type == wgpu::DeviceType::Cpu);
        if adapters.is_empty() {
            return Err(Error::NoAdapter(format!(
                "no software adapter found; {}",
                &NO_ADAPTER_HELP[NO_ADAPTER_HELP.find("On Debian").unwrap()..]
            )));
        }
        why.push("software adapter asked for".into());
    }
    adapters.sort_by_key(|a| {
        let i = a.get_info();
        (type_rank(i.device_type), backend_rank(i.backend))
    });
    let best = adapters.swap_remove(0);
    why.push(format!(
        "best remaining by type ({:?}) and backend ({:?})",
        best.get_info().device_type,
        best.get_info().backend
    ));
    Ok((best, why.join("; ")))
}

/// The optional features that help when the adapter has them.
pub fn wanted_features() -> wgpu::Features {
    wgpu::Features::TIMESTAMP_QUERY
        | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS
        | wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES
        | wgpu::Features::SHADER_F16
        | wgpu::Features::SUBGROUP
}

impl Gpu {
    /// Open the adapter the choice asks for with the limits it asks for (by default the
    /// adapter's own) and the useful features.
    pub fn new(choice: &AdapterChoice) -> Result<Gpu> {
        let (adapter, reason) = pick(choice)?;
        let info = adapter.get_info();
        let (kernels, kernels_reason) = KernelPath::choose(choice.kernels, info.device_type)?;
        let (tuning, tuning_reason) = Tune::choose(choice.tune, kernels)?;
        let limits = match &choice.custom_limits {
            Some(l) => l.clone(),
            None => choice.limits.limits(&adapter.limits()),
        };
        // A kernel the limits cannot bind is refused here, at start, not mid-plan.
        crate::gpu::kernels::check_kernels_fit(&limits, info.device_type)?;
        let (subgroups, subgroups_reason) =
            Subgroups::choose(choice.subgroups, &info, adapter.features())?;
        let mut features = adapter.features() & wanted_features();
        // Without subgroups the device lacks the feature too: a portable kernel that used
        // one would fail to build, not pass unnoticed on an adapter that has them.
        features.set(wgpu::Features::SUBGROUP, subgroups);
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("cpc"),
            required_features: features,
            required_limits: limits.clone(),
            ..Default::default()
        }))
        .map_err(|source| Error::RequestDevice {
            adapter: info.name.clone(),
            source,
        })?;
        // Keep wgpu from panicking on an error outside a scope; report it at the next sync.
        let uncaptured = Arc::new(Mutex::new(Vec::new()));
        let sink = uncaptured.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            sink.lock().unwrap().push(e.to_string());
        }));
        let tilings = Tilings::open(
            AdapterKey::of(&info),
            tuning,
            tuning_reason,
            tune::cache::dir(choice.cache_dir.as_deref()),
        );
        Ok(Gpu {
            device,
            queue,
            info,
            limits,
            limits_choice: choice.limits,
            features,
            reason,
            kernels,
            kernels_reason,
            tilings,
            subgroups,
            subgroups_reason,
            pipelines: PipelineCache::default(),
            uncaptured,
            allocated: Default::default(),
        })
    }

    /// The reductions in words, for `cpc info` and `cpc profile`: which, and why.
    pub fn reductions(&self) -> String {
        let which = if self.subgroups {
            "subgroup operations"
        } else {
            "portable"
        };
        format!("{which}; {}", self.subgroups_reason)
    }

    /// The software adapter, for tests and benches (honours WGPU_ADAPTER_NAME if set).
    pub fn software() -> Result<Gpu> {
        Gpu::software_with(LimitsChoice::Adapter)
    }

    /// The software adapter opened with `limits`.
    pub fn software_with(limits: LimitsChoice) -> Result<Gpu> {
        Gpu::new(&AdapterChoice {
            software: true,
            limits,
            ..Default::default()
        })
    }

    /// Block until the GPU has finished everything submitted, then report any error wgpu
    /// raised meanwhile.
    pub fn sync(&self, what: &str) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Gpu {
                what: what.into(),
                message: e.to_string(),
            })?;
        self.check(what)
    }

    /// Map `slice` of a mappable buffer for `mode` and wait until it is mapped (after the
    /// GPU has finished the commands submitted before that use it), then report any error
    /// wgpu raised meanwhile; the caller reads or writes the mapped range, then unmaps.
    /// `after`: the submission that last uses the buffer, waited for first, so that later
    /// submissions need not finish (None: wait for everything submitted).
    pub fn map_and_wait(
        &self,
        slice: wgpu::BufferSlice<'_>,
        mode: wgpu::MapMode,
        after: Option<wgpu::SubmissionIndex>,
        what: &str,
    ) -> Result<()> {
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(mode, move |r| {
            let _ = tx.send(r);
        });
        let gpu_err = |message: String| Error::Gpu {
            what: what.into(),
            message,
        };
        if let Some(index) = after {
            self.device
                .poll(wgpu::PollType::Wait {
                    submission_index: Some(index),
                    timeout: None,
                })
                .map_err(|e| gpu_err(e.to_string()))?;
        }
        // The callback runs from a poll once the commands before the map have finished.
        let mapped = loop {
            if let Ok(r) = rx.try_recv() {
                break r;
            }
            self.device
                .poll(wgpu::PollType::wait_indefinitely())
                .map_err(|e| gpu_err(e.to_string()))?;
        };
        mapped.map_err(|e| gpu_err(e.to_string()))?;
        self.check(what)
    }

    /// Threads worth having in flight for one dispatch, for kernels that can trade more
    /// threads for more work after them (the conv weight gradient's split over the batch).
    /// A GPU wants tens of thousands; a CPU adapter (lavapipe: cores x 8 SIMD lanes) is
    /// busy with a few hundred, and each extra split only adds partial sums to add up.
    pub fn threads_in_flight(&self) -> usize {
        if self.info.device_type == wgpu::DeviceType::Cpu {
            1024
        } else {
            16384
        }
    }

    /// Bytes of all tensors allocated on this device so far (freed ones included): the
    /// difference across a planning step is what that plan allocates.
    pub fn allocated_bytes(&self) -> u64 {
        self.allocated.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Start (true) or stop (false) recording the size of every tensor this thread
    /// allocates; stopping returns the sizes recorded, in allocation order.
    pub fn record_sizes(&self, on: bool) -> Vec<u64> {
        crate::gpu::tensor::record_sizes(on)
    }

    /// How many sizes [`Gpu::record_sizes`] has recorded so far (0 while it is off).
    pub fn recorded_count(&self) -> usize {
        crate::gpu::tensor::recorded_count()
    }

    /// Allocate in `f` without recording sizes (buffers a plan counts apart).
    pub fn unrecorded<T>(&self, f: impl FnOnce() -> T) -> T {
        let state = crate::gpu::tensor::pause_recording();
        let out = f();
        crate::gpu::tensor::resume_recording(state);
        out
    }

    /// Report (and clear) an error wgpu raised outside a scope.
    pub fn check(&self, what: &str) -> Result<()> {
        let mut errs = self.uncaptured.lock().unwrap();
        if errs.is_empty() {
            Ok(())
        } else {
            let message = errs.join("; ");
            errs.clear();
            Err(Error::Gpu {
                what: what.into(),
                message,
            })
        }
    }
}
