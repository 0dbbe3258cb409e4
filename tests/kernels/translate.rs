//! Every pipeline the program builds translates with naga to SPIR-V, MSL, HLSL, GLSL ES 3.10
//! and desktop GLSL 4.30 (the reduction kernels' subgroup variants to the SPIR-V and HLSL
//! versions with subgroups: see [`translate`]); spirv-val checks the SPIR-V and
//! glslangValidator the GLSL (Debian's spirv-tools and glslang-tools). A missing tool fails
//! the test where CI is set and is skipped with a message elsewhere; MSL and HLSL have no
//! validator here, so for them translation must succeed.
//!
//! The pipelines are the ones a fresh device's cache holds ([`Gpu::built_pipelines`]) after
//! planning real workloads: the tiny preset and the small one with layer norm, the probe's
//! classifier, the conv kernels with their weights bound as storage (a GPU's binding), the
//! frames' transpose, and the GPU path's tiled matrix product with every tiling candidate; the models and probe
//! once more on a device without subgroups, for the portable reduction kernels.
//! Each is translated from the same source, with the same override constants and runtime
//! checks as gpu/kernels.rs creates it; every entry point of every shader must be among them.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::process::Command;

use cpc::eval::probe::{Hyper, LinearClassifier};
use cpc::gpu::kernels::{RUNTIME_CHECKS, ZERO_INITIALIZE_WORKGROUP_MEMORY};
use cpc::gpu::{AdapterChoice, Gpu, Reductions, Shader, Subgroups, Tensor};
use cpc::model::{CpcModel, ModelSpec};
use cpc::ops::adam::AdamConfig;
use cpc::ops::conv2d::{self, Activation, Conv2d, ConvKernel, WeightBinding};
use cpc::ops::matmul::{self, Matmul, MatmulKernel, Tiling};
use cpc::train::Config;
use naga::back::{glsl, hlsl, msl, spv};
use naga::proc::{BoundsCheckPolicies, BoundsCheckPolicy};

/// Plan what the program plans, on `gpu`, so that its cache holds every pipeline they use.
fn plan_workloads(gpu: &Gpu) {
    plan_models_and_probe(gpu);
    plan_gpu_path_kernels(gpu);
    // The frames' transpose of a 1-D encoder (no preset plans one yet).
    let t = Tensor::zeros(gpu, "planned", &[60]).unwrap();
    cpc::ops::transpose::launch(gpu, &t, [2, 5, 6], &t.view(0, &[60])).unwrap();
    plan_sentence_encoder_kernels(gpu);
}

/// The text encoder's own kernels: the embedding lookup and its backward, the mean over
/// each sentence's words and its backward (no preset plans them yet).
fn plan_sentence_encoder_kernels(gpu: &Gpu) {
    use cpc::ops::embedding::{self, Embedding, Tokens};
    use cpc::ops::masked_mean;
    let shape = Embedding {
        sentences: 3,
        width: 5,
        vocab: 13,
        dim: 7,
    };
    let tokens = Tokens::new(gpu, shape).unwrap();
    let t = |shape: &[usize]| Tensor::zeros(gpu, "planned", shape).unwrap();
    let (table, out) = (t(&shape.table_shape()), t(&shape.out_shape()));
    embedding::forward(gpu, &tokens, &table, &out).unwrap();
    embedding::backward(gpu, &tokens, &out, &table).unwrap();
    let (dims, y) = ([3, 7, 5], t(&[3, 7]));
    masked_mean::forward(gpu, &out, &tokens.lengths, dims, &y).unwrap();
    masked_mean::backward(gpu, &y, &tokens.lengths, dims, &out, false).unwrap();
}

/// The models (tiny, small with layer norm) and the probe: every reduction kernel.
fn plan_models_and_probe(gpu: &Gpu) {
    for (preset, toml) in [
        ("tiny", ""),
        ("small", "[model.encoder]\nlayer_norm = true"),
    ] {
        let config = Config::from_toml_overrides(preset, toml).unwrap();
        let adam = AdamConfig {
            weight_decay: 0.1,
            max_norm: 1.0,
            ..AdamConfig::default()
        };
        CpcModel::new(
            gpu,
            &ModelSpec::from(config.model.vision().unwrap()),
            1,
            &[],
            adam,
        )
        .unwrap_or_else(|e| panic!("planning the {preset} preset: {e}"));
    }
    // The probe's classifier, on more rows than one thread sums and of an odd dimension, as
    // real probe sets are: the scalar paths of elementwise (W's weight decay) and
    // sum_channels (the bias gradient), where vec4 loads do not fit.
    let (dim, classes, rows) = (5, 3, 2 * cpc::ops::sum_channels::PER_THREAD_MAX);
    let labels: Vec<u32> = (0..rows as u32).map(|i| i % classes as u32).collect();
    let x = vec![0.5; rows * dim];
    let probe = LinearClassifier::new(gpu, dim, classes, (&x, &labels), &[(&x, &labels)], 2);
    // Training plans the weight decay.
    let hyper = Hyper {
        lr: 0.1,
        weight_decay: 1e-2,
        iterations: 2,
    };
    probe.unwrap().fit(gpu, &hyper).unwrap();
}

/// The conv and matmul kernels a GPU gets, with every tiling.
fn plan_gpu_path_kernels(gpu: &Gpu) {
    // A GPU binds the conv weights as storage (ops::conv2d::WeightBinding::for_device).
    let c = Conv2d::square(1, 4, 6, 8, 3, 1);
    let t = |shape: &[usize]| Tensor::zeros(gpu, "planned", shape).unwrap();
    let (x, w, b, y) = (
        t(&c.x_shape()),
        t(&c.w_shape()),
        t(&[c.cout]),
        t(&c.y_shape()),
    );
    let storage = ConvKernel::Direct(WeightBinding::Storage);
    conv2d::forward_with(gpu, &c, &x, &w, &b, &y, Activation::Identity, storage).unwrap();
    conv2d::backward_input_with(gpu, &c, &y, &w, &x, false, None, storage).unwrap();
    // The GPU path's convolutions (ops::conv2d::ConvKernel::for_device on a GPU), with every
    // tiling a device may be given.
    for &tiling in Tiling::CANDIDATES {
        let tiled = ConvKernel::Tiled(tiling);
        conv2d::forward_with(gpu, &c, &x, &w, &b, &y, Activation::Identity, tiled).unwrap();
        conv2d::backward_input_with(gpu, &c, &y, &w, &x, false, None, tiled).unwrap();
        conv2d::backward_weight_with(gpu, &c, &x, &y, &w, &b, tiled).unwrap();
    }
    // The GPU path's matrix product (ops::matmul::MatmulKernel::for_device on a GPU), with
    // every tiling a device may be given, each with vec4 loads of A, B, both and neither
    // (rows of 8 floats or of 5), plain and transposed.
    for &tiling in Tiling::CANDIDATES {
        for (k, n) in [(8, 8), (8, 5), (5, 8), (5, 5)] {
            for (trans_a, trans_b) in [(false, false), (true, true)] {
                let m = 8;
                let mm = Matmul::new(1, m, n, k).trans_a(trans_a).trans_b(trans_b);
                let a = t(&if trans_a { [k, m] } else { [m, k] });
                let b = t(&if trans_b { [n, k] } else { [k, n] });
                matmul::forward_with(gpu, &mm, &a, &b, &t(&[m, n]), MatmulKernel::Tiled(tiling))
                    .unwrap();
            }
        }
    }
}

/// The translations checked, each with the validator that checks its output (if any).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Backend {
    Spirv,
    Msl,
    Hlsl,
    GlslEs,
    GlslDesktop,
}

impl Backend {
    const ALL: [Backend; 5] = [
        Backend::Spirv,
        Backend::Msl,
        Backend::Hlsl,
        Backend::GlslEs,
        Backend::GlslDesktop,
    ];

    fn name(self) -> &'static str {
        match self {
            Backend::Spirv => "SPIR-V 1.0 (Vulkan 1.0; subgroups 1.3, Vulkan 1.1)",
            Backend::Msl => "MSL 2.0",
            Backend::Hlsl => "HLSL SM 5.1 (subgroups SM 6.0)",
            Backend::GlslEs => "GLSL ES 3.10",
            Backend::GlslDesktop => "GLSL 4.30 core",
        }
    }

    /// The SPIR-V version a module is written in: 1.0, or for the subgroup variants 1.3 (its
    /// GroupNonUniform capabilities are SPIR-V 1.3's), what wgpu-hal writes for the oldest
    /// devices that offer SUBGROUP (Vulkan 1.1 with VK_EXT_subgroup_size_control).
    fn spirv_version(subgroups: bool) -> (u8, u8) {
        if subgroups {
            (1, 3)
        } else {
            (1, 0)
        }
    }

    /// The validator's program, and the file its input goes in.
    fn validator(self) -> Option<(&'static str, &'static str)> {
        match self {
            Backend::Spirv => Some(("spirv-val", "kernel.spv")),
            Backend::GlslEs | Backend::GlslDesktop => Some(("glslangValidator", "kernel.comp")),
            Backend::Msl | Backend::Hlsl => None,
        }
    }
}

/// Bounds-check policies as wgpu-hal 30 derives them from [`RUNTIME_CHECKS`] for Vulkan and
/// Metal: restricted indices and buffer accesses when checks are on (Vulkan leaves buffers
/// to robustBufferAccess2 where a device has it; restricting them is the code every other
/// device gets).
fn policies() -> BoundsCheckPolicies {
    let p = if RUNTIME_CHECKS.bounds_checks {
        BoundsCheckPolicy::Restrict
    } else {
        BoundsCheckPolicy::Unchecked
    };
    BoundsCheckPolicies {
        index: p,
        buffer: p,
        image_load: p,
        binding_array: BoundsCheckPolicy::Unchecked,
    }
}

/// Translate one entry point of a module whose overrides are applied, with the options
/// wgpu-hal 30 would use (vulkan/device.rs, metal/device.rs, dx12/device.rs,
/// gles/device.rs), bindings numbered as its pipeline layouts number them.
/// `subgroups`: the module is a subgroup variant, which only devices with SUBGROUP build, so
/// translated for what those have (SPIR-V 1.3, HLSL shader model 6.0 for wave intrinsics);
/// MSL and GLSL take the extension-free versions (naga writes simd_sum and
/// GL_KHR_shader_subgroup whatever the version, and glslangValidator accepts the extension in
/// GLSL ES 3.10 and 4.30, though wgpu's GL backend never offers SUBGROUP).
fn translate(
    backend: Backend,
    module: &naga::Module,
    info: &naga::valid::ModuleInfo,
    entry: &str,
    subgroups: bool,
) -> Result<Vec<u8>, String> {
    let stage = naga::ShaderStage::Compute;
    // Group 0's bindings in order: the layout wgpu derives from the shader (layout: None).
    let mut bindings: Vec<(naga::ResourceBinding, naga::AddressSpace)> = module
        .global_variables
        .iter()
        .filter_map(|(_, v)| v.binding.map(|b| (b, v.space)))
        .collect();
    bindings.sort_by_key(|(b, _)| (b.group, b.binding));
    match backend {
        Backend::Spirv => {
            let options = spv::Options {
                lang_version: Backend::spirv_version(subgroups),
                bounds_check_policies: policies(),
                zero_initialize_workgroup_memory: if ZERO_INITIALIZE_WORKGROUP_MEMORY {
                    spv::ZeroInitializeWorkgroupMemoryMode::Polyfill
                } else {
                    spv::ZeroInitializeWorkgroupMemoryMode::None
                },
                force_loop_bounding: RUNTIME_CHECKS.force_loop_bounding,
                ray_query_initialization_tracking: RUNTIME_CHECKS.ray_query_initialization_tracking,
                emit_int_div_checks: RUNTIME_CHECKS.int_div_checks,
                ..spv::Options::default()
            };
            let pipeline = spv::PipelineOptions {
                shader_stage: stage,
                entry_point: entry.to_string(),
            };
            spv::write_vec(module, info, &options, Some(&pipeline))
                .map(|words| words.iter().flat_map(|w| w.to_le_bytes()).collect())
                .map_err(|e| e.to_string())
        }
        Backend::Msl => {
            // Metal numbers the buffers in binding order; the buffer sizes (for runtime-sized
            // arrays) come last.
            let resources = msl::EntryPointResources {
                resources: bindings
                    .iter()
                    .enumerate()
                    .map(|(slot, &(b, space))| {
                        let target = msl::BindTarget {
                            buffer: Some(slot as u8),
                            mutable: matches!(
                                space,
                                naga::AddressSpace::Storage { access }
                                    if access.contains(naga::StorageAccess::STORE)
                            ),
                            ..Default::default()
                        };
                        (b, target)
                    })
                    .collect(),
                immediates_buffer: None,
                sizes_buffer: Some(bindings.len() as u8),
            };
            let options = msl::Options {
                lang_version: (2, 0),
                per_entry_point_map: [(entry.to_string(), resources)].into(),
                bounds_check_policies: policies(),
                zero_initialize_workgroup_memory: ZERO_INITIALIZE_WORKGROUP_MEMORY,
                force_loop_bounding: RUNTIME_CHECKS.force_loop_bounding,
                emit_int_div_checks: RUNTIME_CHECKS.int_div_checks,
                ray_query_initialization_tracking: RUNTIME_CHECKS.ray_query_initialization_tracking,
                ..msl::Options::default()
            };
            let pipeline = msl::PipelineOptions {
                entry_point: Some((stage, entry.to_string())),
                ..msl::PipelineOptions::default()
            };
            msl::write_string(module, info, &options, &pipeline)
                .map(|(text, _)| text.into_bytes())
                .map_err(|e| e.to_string())
        }
        Backend::Hlsl => {
            // No binding map: naga numbers each register by its binding and its space by its
            // group (fake_missing_bindings), which leaves the code the same.
            let options = hlsl::Options {
                shader_model: if subgroups {
                    hlsl::ShaderModel::V6_0
                } else {
                    hlsl::ShaderModel::V5_1
                },
                zero_initialize_workgroup_memory: ZERO_INITIALIZE_WORKGROUP_MEMORY,
                restrict_indexing: RUNTIME_CHECKS.bounds_checks,
                force_loop_bounding: RUNTIME_CHECKS.force_loop_bounding,
                ray_query_initialization_tracking: RUNTIME_CHECKS.ray_query_initialization_tracking,
                ..hlsl::Options::default()
            };
            let pipeline = hlsl::PipelineOptions {
                entry_point: Some((stage, entry.to_string())),
            };
            let mut text = String::new();
            hlsl::Writer::new(&mut text, &options, &pipeline)
                .write(module, info, None)
                .map_err(|e| e.to_string())?;
            Ok(text.into_bytes())
        }
        Backend::GlslEs | Backend::GlslDesktop => {
            // GL numbers uniform and storage blocks apart, each in binding order. Its bounds
            // checks are GL's own: naga adds none (gles/device.rs).
            let (mut uniforms, mut storage) = (0u8, 0u8);
            let binding_map = bindings
                .iter()
                .map(|&(b, space)| {
                    let counter = match space {
                        naga::AddressSpace::Uniform => &mut uniforms,
                        _ => &mut storage,
                    };
                    *counter += 1;
                    (b, *counter - 1)
                })
                .collect();
            let options = glsl::Options {
                version: if backend == Backend::GlslEs {
                    glsl::Version::new_gles(310)
                } else {
                    glsl::Version::Desktop(430)
                },
                binding_map,
                zero_initialize_workgroup_memory: ZERO_INITIALIZE_WORKGROUP_MEMORY,
                ..glsl::Options::default()
            };
            let pipeline = glsl::PipelineOptions {
                shader_stage: stage,
                entry_point: entry.to_string(),
                multiview: None,
            };
            let mut text = String::new();
            glsl::Writer::new(
                &mut text,
                module,
                info,
                &options,
                &pipeline,
                BoundsCheckPolicies::default(),
            )
            .and_then(|mut w| w.write())
            .map_err(|e| e.to_string())?;
            Ok(text.into_bytes())
        }
    }
}

/// Whether `tool` runs here; without it, fail in CI and say so elsewhere.
fn have(tool: &str) -> bool {
    crate::shared::have_tool(tool, "apt-get install spirv-tools glslang-tools")
}

/// Run the validator on `bytes` written to `file`; its complaint on failure.
/// SPIR-V is checked for the Vulkan version its SPIR-V version comes with (`subgroups`:
/// Vulkan 1.1).
fn validate(tool: &str, file: &Path, bytes: &[u8], subgroups: bool) -> Result<(), String> {
    std::fs::write(file, bytes).unwrap();
    let mut cmd = Command::new(tool);
    if tool == "spirv-val" {
        cmd.args([
            "--target-env",
            if subgroups { "vulkan1.1" } else { "vulkan1.0" },
        ]);
    }
    let out = cmd.arg(file).output().map_err(|e| format!("{tool}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let said: Vec<String> = [&out.stdout, &out.stderr]
        .iter()
        .map(|s| String::from_utf8_lossy(s).trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    Err(format!("{tool} ({}):\n{}", out.status, said.join("\n")))
}

#[test]
fn every_pipeline_translates_for_every_backend() {
    // A device of its own, so its cache holds exactly what the workloads plan; lavapipe has
    // subgroups, so its reduction kernels are the subgroup variants. A second device without
    // them plans the models and probe again for the portable ones.
    let gpu = Gpu::software().expect("software adapter");
    plan_workloads(&gpu);
    let portable = Gpu::new(&AdapterChoice {
        software: true,
        subgroups: Some(Subgroups::Off),
        ..Default::default()
    })
    .expect("software adapter");
    plan_models_and_probe(&portable);
    let mut keys = gpu.built_pipelines();
    keys.extend(portable.built_pipelines());
    keys.sort();
    keys.dedup();
    assert!(
        keys.iter()
            .any(|k| k.shader.reductions() == Some(Reductions::Subgroup)),
        "the software adapter offers subgroups: {}",
        gpu.reductions()
    );

    // Every entry point of every shader (source variants included) is planned.
    let built: BTreeSet<(Shader, &str)> = keys.iter().map(|k| (k.shader, k.entry)).collect();
    let mut modules = HashMap::new();
    let mut unplanned = Vec::new();
    for &shader in Shader::ALL {
        let module = naga::front::wgsl::parse_str(&shader.source())
            .unwrap_or_else(|e| panic!("{}: {e}", shader.file()));
        let info = naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::all(),
        )
        .validate(&module)
        .unwrap_or_else(|e| panic!("{}: {e}", shader.file()));
        for ep in &module.entry_points {
            if !built.contains(&(shader, ep.name.as_str())) {
                unplanned.push(format!("{} ({shader:?}) {}", shader.file(), ep.name));
            }
        }
        modules.insert(shader, (module, info));
    }
    assert!(
        unplanned.is_empty(),
        "entry points no planned workload builds (plan one in plan_workloads): {unplanned:#?}"
    );

    let tools: BTreeSet<&str> = Backend::ALL
        .iter()
        .filter_map(|b| b.validator().map(|(tool, _)| tool))
        .collect();
    let validators: HashMap<&str, bool> = tools.into_iter().map(|t| (t, have(t))).collect();
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    let mut passed = [0; Backend::ALL.len()];
    for key in &keys {
        let (module, info) = &modules[&key.shader];
        let subgroups = key.shader.reductions() == Some(Reductions::Subgroup);
        let constants: naga::back::PipelineConstants = key
            .constants()
            .into_iter()
            .map(|(n, v)| (n.to_string(), v))
            .collect();
        let fail = |backend: Option<Backend>, message: String| {
            let backend = backend.map_or("overrides", Backend::name);
            format!("{key} [{backend}]: {message}")
        };
        let (module, info) = match naga::back::pipeline_constants::process_overrides(
            module,
            info,
            Some((naga::ShaderStage::Compute, key.entry)),
            &constants,
        ) {
            Ok(processed) => processed,
            Err(e) => {
                failures.push(fail(None, e.to_string()));
                continue;
            }
        };
        for (b, backend) in Backend::ALL.into_iter().enumerate() {
            let result = translate(backend, &module, &info, key.entry, subgroups).and_then(|out| {
                match backend.validator() {
                    Some((tool, file)) if validators[tool] => {
                        validate(tool, &dir.path().join(file), &out, subgroups)
                    }
                    _ => Ok(()),
                }
            });
            match result {
                Ok(()) => passed[b] += 1,
                Err(e) => failures.push(fail(Some(backend), e)),
            }
        }
    }
    let passed: Vec<String> = Backend::ALL
        .iter()
        .zip(passed)
        .map(|(b, n)| format!("{} {n}", b.name()))
        .collect();
    eprintln!(
        "translate: {} pipelines; passed: {}",
        keys.len(),
        passed.join(", ")
    );
    assert!(
        failures.is_empty(),
        "{} translations failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
