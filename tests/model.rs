//! The whole CPC model on the software adapter: its forward against the CPU reference model,
//! and its gradients against finite differences of the CPU reference's loss.

use cpc::cpu;
use cpc::gpu::{Gpu, Kernels};
use cpc::model::{
    AudioSpec, Conv1dSpec, ConvSpec, CpcModel, Examples, ModelSpec, ParamLayout, Spec, StageSpec,
    TextSpec,
};
use cpc::ops::adam::AdamConfig;
use cpc::ops::embedding::PaddedSentences;
use rand::Rng;

mod common;
use common::{gpu, gpu_on};

/// The tiny preset's model (docs/model.md, "Tiny-scale calibration"): 8x8 patches, conv 3->32, conv s2 32->64, one
/// residual conv, D = H = 64, offsets 2 and 3.
fn tiny() -> ModelSpec {
    let from_preset = ModelSpec::from(
        cpc::train::Config::preset("tiny")
            .unwrap()
            .model
            .vision()
            .unwrap(),
    );
    let spec = ModelSpec {
        crop: 32,
        grid: 7,
        jitter: 0,
        stem: ConvSpec {
            kernel: 3,
            out: 32,
            stride: 1,
        },
        stages: vec![StageSpec {
            down: ConvSpec {
                kernel: 3,
                out: 64,
                stride: 2,
            },
            blocks: 1,
            convs_per_block: 1,
        }],
        layer_norm: false,
        hidden: 64,
        offsets: vec![2, 3],
    };
    assert_eq!(
        spec, from_preset,
        "the tiny preset is the calibration model of docs/model.md"
    );
    spec
}

/// Narrow, with layer norm, two-conv blocks, two stages and jitter: every code path.
fn narrow_with_norm() -> ModelSpec {
    ModelSpec {
        crop: 48,
        grid: 5,
        jitter: 1,
        stem: ConvSpec {
            kernel: 5,
            out: 6,
            stride: 1,
        },
        stages: vec![
            StageSpec {
                down: ConvSpec {
                    kernel: 3,
                    out: 8,
                    stride: 2,
                },
                blocks: 1,
                convs_per_block: 2,
            },
            StageSpec {
                down: ConvSpec {
                    kernel: 3,
                    out: 10,
                    stride: 2,
                },
                blocks: 2,
                convs_per_block: 1,
            },
        ],
        layer_norm: true,
        hidden: 9,
        offsets: vec![2, 4],
    }
}

/// A small audio model: 640-sample windows, three 1-D convs of 8 channels (kernels 10, 8, 4,
/// strides 5, 4, 2, padded as the paper preset: 128, 32, then 16 frames of D = 8), H = 8,
/// offsets 1..=3.
fn small_audio(frame_norm: bool) -> AudioSpec {
    let conv = |kernel, stride, pad| Conv1dSpec {
        kernel,
        stride,
        pad,
        channels: 8,
    };
    AudioSpec {
        window: 640,
        convs: vec![conv(10, 5, 3), conv(8, 4, 2), conv(4, 2, 1)],
        hidden: 8,
        offsets: vec![1, 2, 3],
        frame_norm,
    }
}

/// A batch of examples, uniform in [-0.5, 0.5): crops [B, 3, S, S] or clips [B, L].
fn inputs(spec: &Spec, batch: usize, seed: u64) -> Vec<f32> {
    let mut r = common::rng(seed);
    (0..batch * spec.input_shape().len())
        .map(|_| r.random_range(-0.5f32..0.5))
        .collect()
}

fn crops(spec: &ModelSpec, batch: usize, seed: u64) -> Vec<f32> {
    inputs(&spec.into(), batch, seed)
}

/// Run forward and backward once on the GPU; return (stats, flat gradients).
fn gpu_step<'a>(
    gpu: &Gpu,
    spec: impl Into<Spec>,
    batch: usize,
    params: &[f32],
    x: impl Into<Examples<'a>>,
    seed: u32,
) -> (Vec<f32>, Vec<f32>) {
    let model = CpcModel::new(gpu, spec, batch, params, AdamConfig::default()).unwrap();
    model.set_inputs(gpu, x, 1, 0.0, seed).unwrap();
    model.run(gpu, |m, pass| m.record_gradients(pass)).unwrap();
    (
        model.stats.read(gpu).unwrap(),
        model.buffers.grads.read(gpu).unwrap(),
    )
}

/// The model's forward and gradients on `gpu` against the CPU reference (see the module),
/// on random f32 examples.
fn check_model(gpu: &Gpu, spec: impl Into<Spec>, batch: usize, samples_per_tensor: usize) {
    let spec = &spec.into();
    check_model_on(
        gpu,
        spec,
        batch,
        &inputs(spec, batch, 8),
        samples_per_tensor,
    );
}

/// [`check_model`] on the examples `x`.
fn check_model_on<'a>(
    gpu: &Gpu,
    spec: &Spec,
    batch: usize,
    x: impl Into<Examples<'a>>,
    samples_per_tensor: usize,
) {
    let x = x.into();
    let layout = ParamLayout::new(spec);
    let params = layout.init(7);
    let seed = 5;
    let (stats, grads) = gpu_step(gpu, spec, batch, &params, x, seed);
    let reference = cpu::model::loss(spec, &params, x, batch, seed);
    // The forward: the loss matches the reference (f32 through ~10 layers vs f64 sums).
    let want = reference.stats();
    for (i, (g, w)) in stats.iter().zip(&want).enumerate() {
        let tol = if i == 0 || i % 2 == 1 {
            1e-3 * w.abs().max(1.0)
        } else {
            1.5 / (batch * 49) as f32
        };
        assert!((g - w).abs() <= tol, "stats[{i}]: GPU {g}, CPU {w}");
    }
    // Chance level at initialisation: ln(candidates) within a few tenths.
    let chance = (spec.sequences(batch).rows() as f32).ln();
    assert!(
        (stats[0] - chance).abs() < 0.5,
        "initial loss {} vs ln(N) {chance}",
        stats[0]
    );

    // The gradients: central differences of the CPU loss for a few entries of every tensor,
    // the entry with the largest GPU gradient among them.
    let mut r = common::rng(9);
    // A small step: ReLU kinks within +-h of an input blur larger ones (measured: at h = 1e-3
    // the differences of the layer-norm model wander by 20 % of an entry, at 3e-5 they agree
    // with the GPU to 1 %), and the reference's f64 sums keep rounding noise below that.
    let h = 3e-5f32;
    for v in &layout.views {
        let g = &grads[v.offset..v.offset + v.len()];
        let scale = g.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        assert!(
            scale > 0.0 && scale.is_finite(),
            "{}: gradient is all zero or not finite",
            v.name
        );
        let argmax = (0..g.len())
            .max_by(|&a, &b| g[a].abs().total_cmp(&g[b].abs()))
            .unwrap();
        let picks: Vec<usize> = std::iter::once(argmax)
            .chain((1..samples_per_tensor).map(|_| r.random_range(0..g.len())))
            .collect();
        for i in picks {
            let mut p = params.clone();
            p[v.offset + i] = params[v.offset + i] + h;
            let up = cpu::model::loss(spec, &p, x, batch, seed).loss;
            p[v.offset + i] = params[v.offset + i] - h;
            let down = cpu::model::loss(spec, &p, x, batch, seed).loss;
            let numeric = (up - down) / (2.0 * h as f64);
            let err = (g[i] as f64 - numeric).abs();
            // f32 activations limit what differences resolve: judge against the tensor's
            // gradient scale (5 %) and the entry itself (5 %).
            let tol = 0.05 * scale as f64 + 0.05 * numeric.abs() + 1e-6;
            assert!(
                err <= tol,
                "{}[{i}]: GPU {} vs finite differences {numeric} (scale {scale})",
                v.name,
                g[i]
            );
        }
    }
}

#[test]
fn tiny_model_gradients_match_finite_differences() {
    check_model(gpu(), &tiny(), 2, 3);
}

/// The same check on the GPU kernel path, forced on the software adapter. The tiny model
/// only, to keep the suite short (~20 s here); the kernel tests cover the tiled product's
/// odd shapes.
#[test]
fn tiny_model_gradients_match_finite_differences_on_the_gpu_kernel_path() {
    check_model(gpu_on(Kernels::Gpu), &tiny(), 2, 3);
}

#[test]
fn narrow_model_with_norm_and_jitter_gradients_match_finite_differences() {
    check_model(gpu(), &narrow_with_norm(), 2, 3);
}

/// Without norms every ReLU the planner can fuse is fused (cpc::fuse_relus): into the stem,
/// the downsampling convs and the first of two block convs, whose outputs a conv, a ReLU and
/// a residual sum read; a second block's ReLU of a residual sum folds into its conv's input
/// gradient.
#[test]
fn narrow_model_without_norm_gradients_match_finite_differences() {
    let spec = ModelSpec {
        layer_norm: false,
        ..narrow_with_norm()
    };
    check_model(gpu(), &spec, 2, 3);
}

#[test]
fn the_memory_estimate_matches_a_real_plan() {
    use cpc::model::memory::{plan, Estimate};
    for spec in [
        Spec::Vision(tiny()),
        Spec::Vision(narrow_with_norm()),
        Spec::Audio(small_audio(true)),
        Spec::Text(small_text()),
    ] {
        let est = Estimate::new(gpu(), &spec).unwrap();
        let init = ParamLayout::new(&spec).init(0);
        for batch in [3, 7] {
            let (_, real) = plan(gpu(), &spec, batch, &init, AdamConfig::default()).unwrap();
            let guess = est.at(batch);
            // Every buffer but the conv weight-gradient scratch (whose chunking rounds) is a
            // polynomial of degree <= 2 in the batch: the estimate is right to a few per cent.
            let close = |a: u64, b: u64| (a as f64 - b as f64).abs() <= 0.03 * b as f64;
            assert!(
                close(guess.total_bytes, real.total_bytes),
                "{guess} vs {real}"
            );
            assert!(
                close(guess.largest_bytes, real.largest_bytes),
                "{guess} vs {real}"
            );
        }
    }
}

#[test]
fn features_are_the_mean_patch_vector_of_each_image() {
    let spec = narrow_with_norm();
    let params = ParamLayout::new(&spec).init(3);
    let x = crops(&spec, 3, 4);
    let model = CpcModel::new(gpu(), &spec, 3, &params, AdamConfig::default()).unwrap();
    let got = model.features(gpu(), &x).unwrap();
    // The reference without jitter (features never jitter).
    let plain = ModelSpec {
        jitter: 0,
        ..spec.clone()
    };
    let z = cpu::model::encode(&plain, &params, &x, 3, 0);
    let (gg, d) = (25, spec.dim());
    for b in 0..3 {
        for j in 0..d {
            let want: f32 = (0..gg).map(|r| z[(b * gg + r) * d + j]).sum::<f32>() / gg as f32;
            let g = got[b * d + j];
            assert!(
                (g - want).abs() <= 1e-4 * (1.0 + want.abs()),
                "image {b} feature {j}: {g} vs {want}"
            );
        }
    }
}

// ---------------------------------------------------------------- memory limits

/// The batch in "batch N fits" of a memory error.
fn fitting_batch(message: &str) -> usize {
    let at = message
        .rfind(" fits")
        .unwrap_or_else(|| panic!("no fitting batch in: {message}"));
    let words: Vec<&str> = message[..at].split_whitespace().collect();
    words
        .last()
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("{message}"))
}

#[test]
fn a_batch_of_two_to_the_31_is_refused_quickly_with_the_batch_that_fits() {
    use cpc::model::memory::{check_fits, Estimate};
    let spec = tiny();
    let budget = 256u64 << 20;
    let limit = gpu()
        .limits
        .max_storage_buffer_binding_size
        .min(gpu().limits.max_buffer_size);
    for (batch, budget) in [(1usize << 31, Some(budget)), (u32::MAX as usize, None)] {
        let start = std::time::Instant::now();
        let message = check_fits(gpu(), &spec, batch, budget)
            .unwrap_err()
            .to_string();
        assert!(start.elapsed().as_secs() < 60, "took {:?}", start.elapsed());
        assert!(
            message.contains(&format!("batch {batch} does not fit")),
            "{message}"
        );
        // The batch named is the largest the estimate lets through.
        let best = fitting_batch(&message);
        let est = Estimate::new(gpu(), &spec).unwrap();
        let fits = |b: usize| {
            let p = est.at(b);
            p.largest_bytes <= limit && budget.is_none_or(|x| p.total_bytes <= x)
        };
        assert!(fits(best) && !fits(best + 1), "{message}");
    }
}

#[test]
fn parameter_buffers_over_the_budget_are_refused_before_planning() {
    use cpc::model::memory::check_fits;
    // About 51 M parameters: 200 MiB a buffer, 800 MiB for the four, over a 256 MiB budget.
    let spec = ModelSpec {
        hidden: 4096,
        ..tiny()
    };
    let message = check_fits(gpu(), &spec, 1, Some(256 << 20))
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("parameter") && message.contains("budget") && message.contains("0.25 GiB"),
        "{message}"
    );
    // Buffers larger than the adapter allocates: refused at any batch, by the estimate too
    // (`cpc pretrain --plan`), from the shapes alone.
    let max = gpu().limits.max_buffer_size;
    let hidden = (1..=16).map(|i| i << 10).find(|&h| {
        let big = ModelSpec {
            hidden: h,
            ..tiny()
        };
        4 * ParamLayout::new(&big).total as u64 > max
    });
    let Some(hidden) = hidden else {
        return; // An adapter with buffers over 3 GiB: nothing this test can exceed cheaply.
    };
    let spec = ModelSpec { hidden, ..tiny() };
    for message in [
        check_fits(gpu(), &spec, 1, None).unwrap_err().to_string(),
        cpc::model::memory::Estimate::new(gpu(), &spec)
            .err()
            .unwrap()
            .to_string(),
    ] {
        assert!(
            message.contains("parameter")
                && message.contains("max_buffer_size")
                && message.contains(&max.to_string()),
            "{message}"
        );
    }
}

#[test]
fn an_absurd_spec_is_an_error_not_a_panic() {
    // Specs built directly, not from a validated configuration: the planner's own check
    // must refuse them before any size is computed (grid + 1 wrapped to a division by 0).
    let stage = |blocks, convs_per_block| StageSpec {
        down: ConvSpec {
            kernel: 3,
            out: 64,
            stride: 2,
        },
        blocks,
        convs_per_block,
    };
    let absurd = [
        ModelSpec {
            grid: usize::MAX,
            ..tiny()
        },
        ModelSpec {
            crop: usize::MAX,
            ..tiny()
        },
        ModelSpec {
            hidden: usize::MAX,
            ..tiny()
        },
        ModelSpec {
            stages: vec![stage(1, usize::MAX)],
            ..tiny()
        },
        ModelSpec {
            stages: vec![stage(usize::MAX, 1)],
            ..tiny()
        },
    ];
    for spec in absurd {
        let text = spec.validate().unwrap_err().to_string();
        let planned = CpcModel::new(gpu(), &spec, 1, &[], AdamConfig::default());
        assert!(planned.is_err(), "{text}");
        assert!(text.contains(&usize::MAX.to_string()), "{text}");
    }
}

/// The software adapter opened with WebGPU's limits but bindings and buffers of `limit`
/// bytes.
fn small_device(limit: u64) -> cpc::gpu::Gpu {
    cpc::gpu::Gpu::new(&cpc::gpu::AdapterChoice {
        software: true,
        custom_limits: Some(wgpu::Limits {
            max_storage_buffer_binding_size: limit,
            max_buffer_size: limit,
            ..wgpu::Limits::default()
        }),
        ..Default::default()
    })
    .unwrap()
}

#[test]
fn the_plan_marks_the_batches_that_cannot_run_with_the_limit_they_break() {
    use cpc::cli::pretrain::plan_report;
    use cpc::model::memory::Estimate;
    // The score matrices of 64 images (960 queries by 1600 patches) outgrow 4 MiB bindings.
    let spec = narrow_with_norm();
    let small = small_device(4 << 20);
    let est = Estimate::new(&small, &spec).unwrap();
    let report = plan_report(&est, &small.limits, None, "narrow", 8, 1);
    let lines: Vec<&str> = report.lines().collect();
    // A heading, then each batch's line, followed by a marked one where it cannot run.
    let marks = |batch: &str| {
        let at = lines
            .iter()
            .position(|l| l.trim_start().starts_with(batch))
            .unwrap_or_else(|| panic!("no {batch} in:\n{report}"));
        lines
            .get(at + 1)
            .filter(|l| l.contains("cannot run here"))
            .copied()
    };
    assert_eq!(marks("batch 8:"), None, "{report}");
    let refused = marks("batch 64:").unwrap_or_else(|| panic!("{report}"));
    assert!(
        refused.contains("max_storage_buffer_binding_size"),
        "{report}"
    );
    // Under a budget below batch 8's total, batch 8 and this run are marked with it.
    let budget = est.at(8).total_bytes - 1;
    let report = plan_report(&est, &small.limits, Some(budget), "narrow", 8, 1);
    let marked: Vec<&str> = report
        .lines()
        .filter(|l| l.contains("cannot run here") && l.contains("memory budget"))
        .collect();
    assert_eq!(marked.len(), 4, "{report}"); // batches 8, 16, 32 and this run (64: the binding)
                                             // Four micro-batches of 8 a step: the memory of one batch of 8, four times its FLOPs.
    let report = plan_report(&est, &small.limits, None, "narrow", 8, 4);
    let run = report
        .split("this run: ")
        .nth(1)
        .unwrap_or_else(|| panic!("{report}"));
    assert!(run.starts_with("batch 8:"), "{report}");
    assert!(
        run.contains("4 micro-batches a step") && run.contains("32 examples"),
        "{report}"
    );
}

#[test]
fn an_encoder_too_large_to_bind_whole_is_planned_in_slices_that_compute_the_same() {
    use cpc::model::cpc::slice_images;
    use cpc::model::memory::{check_fits, plan, Estimate};
    let spec = narrow_with_norm();
    let batch = 7;
    // A device whose storage bindings hold 3.6 images of the largest activation (the stem's
    // output, 6 channels at the patch's side), and whose buffers are no larger: slices of
    // 3, 3 and 1 images, while the whole patches (3 channels, 3.5 images' worth) still bind.
    let per_image = 4 * 25 * 6 * spec.patch() * spec.patch();
    let limit = (per_image * 36 / 10 / 4 * 4) as u64;
    let small = small_device(limit);
    assert_eq!(slice_images(&small.limits, &spec, batch), 3);
    // Whole, this batch would not bind; sliced, the estimate and the plan agree it fits.
    let whole = Estimate::new(gpu(), &spec).unwrap().at(batch);
    assert!(whole.largest_bytes > limit, "{whole}");
    let est = Estimate::new(&small, &spec).unwrap().at(batch);
    check_fits(&small, &spec, batch, None).unwrap();
    let params = ParamLayout::new(&spec).init(5);
    let (model, real) = plan(&small, &spec, batch, &params, AdamConfig::default()).unwrap();
    assert_eq!(model.slice_allocs.len(), 3);
    assert!(real.largest_bytes <= limit, "{real}");
    assert_eq!(est.largest_bytes, real.largest_bytes, "{est} vs {real}");
    let close = |a: u64, b: u64| (a as f64 - b as f64).abs() <= 0.03 * b as f64;
    assert!(close(est.total_bytes, real.total_bytes), "{est} vs {real}");

    // The sliced step against the whole one (itself checked against the CPU reference
    // above), and the sliced encoder against the CPU reference's.
    let x = crops(&spec, batch, 8);
    model.set_inputs(&small, &x, 1, 0.0, 3).unwrap();
    model
        .run(&small, |m, pass| m.record_gradients(pass))
        .unwrap();
    let (stats, grads) = (
        model.stats.read(&small).unwrap(),
        model.buffers.grads.read(&small).unwrap(),
    );
    let (want_stats, want_grads) = gpu_step(gpu(), &spec, batch, &params, &x, 3);
    let near = |a: f32, b: f32| (a - b).abs() <= 1e-4 * (1.0 + b.abs());
    for (i, (a, b)) in stats.iter().zip(&want_stats).enumerate() {
        assert!(near(*a, *b), "stat {i}: sliced {a}, whole {b}");
    }
    for (i, (a, b)) in grads.iter().zip(&want_grads).enumerate() {
        assert!(near(*a, *b), "gradient {i}: sliced {a}, whole {b}");
    }
    let got = model.features(&small, &x).unwrap();
    let plain = ModelSpec {
        jitter: 0,
        ..spec.clone()
    };
    let z = cpu::model::encode(&plain, &params, &x, batch, 0);
    let (gg, d) = (25, spec.dim());
    for b in 0..batch {
        for j in 0..d {
            let want: f32 = (0..gg).map(|r| z[(b * gg + r) * d + j]).sum::<f32>() / gg as f32;
            assert!(near(got[b * d + j], want), "image {b} feature {j}");
        }
    }
}

/// The layer list is the architecture: the tiny preset's, spelled out here by hand (ops in
/// order, parameter names and shapes under PyTorch's names, FLOPs), and the paper preset's
/// parameter count as the spec states it (34.6 M).
#[test]
fn the_layer_list_spells_out_each_preset() {
    use cpc::model::layers::Op;
    let list = tiny().layers();
    let ops: Vec<&str> = (list.layers.iter())
        .map(|l| match l.op {
            Op::Conv { .. } => "conv",
            Op::Norm { .. } => "norm",
            Op::Relu => "relu",
            Op::Add { .. } => "add",
        })
        .collect();
    assert_eq!(
        ops,
        ["conv", "relu", "conv", "relu", "relu", "conv", "add", "relu"]
    );
    let layout = ParamLayout::new(&tiny());
    let names: Vec<(&str, &[usize])> = (layout.views.iter())
        .map(|v| (v.name.as_str(), v.shape.as_slice()))
        .collect();
    let want: &[(&str, &[usize])] = &[
        ("encoder.stem.weight", &[32, 3, 3, 3]),
        ("encoder.stem.bias", &[32]),
        ("encoder.stages.0.down.weight", &[64, 32, 3, 3]),
        ("encoder.stages.0.down.bias", &[64]),
        ("encoder.stages.0.blocks.0.convs.0.weight", &[64, 64, 3, 3]),
        ("encoder.stages.0.blocks.0.convs.0.bias", &[64]),
        ("gru.weight_ih_l0", &[192, 64]),
        ("gru.weight_hh_l0", &[192, 64]),
        ("gru.bias_ih_l0", &[192]),
        ("gru.bias_hh_l0", &[192]),
        ("heads.0.weight", &[64, 64]),
        ("heads.1.weight", &[64, 64]),
    ];
    assert_eq!(names, want);
    // Per 8x8 patch: stem 2*64*32*27, down to 4x4 2*16*64*288, block conv 2*16*64*576, and
    // one operation per element of the ReLUs (2048 + 3 * 1024) and the sum (1024).
    assert_eq!(
        list.flops(1),
        110_592 + 589_824 + 1_179_648 + 2048 + 4 * 1024
    );
    let paper = ModelSpec::from(
        cpc::train::Config::preset("paper")
            .unwrap()
            .model
            .vision()
            .unwrap(),
    );
    let count = ParamLayout::new(&paper).count();
    assert!((34_550_000..34_650_000).contains(&count), "{count}");
    assert_eq!(paper.layers().output_shape().c, paper.dim());
}

/// The paper's speech model as one layer list: five 1-D convs with ReLUs turn a window of
/// 20480 samples into 128 frames of 512 channels (one per 160 samples); its parameters under
/// their names, counted by hand; windows and offsets that do not fit are errors.
#[test]
fn the_audio_layer_list_gives_the_papers_frames() {
    use cpc::model::audio::AudioSpec;
    use cpc::model::layers::Op;
    let spec = AudioSpec::paper();
    spec.validate().unwrap();
    let list = spec.layers();
    assert_eq!((spec.frames(), spec.dim()), (128, 512));
    let widths: Vec<usize> = list.acts.iter().map(|a| a.w).collect();
    assert_eq!(
        widths,
        [20480, 4096, 4096, 1024, 1024, 512, 512, 256, 256, 128, 128]
    );
    assert!(list
        .layers
        .iter()
        .step_by(2)
        .all(|l| matches!(l.op, Op::Conv { .. })));
    assert!(list
        .layers
        .iter()
        .skip(1)
        .step_by(2)
        .all(|l| l.op == Op::Relu));
    let layout = ParamLayout::new(&spec);
    let shape = |name: &str| layout.get(name).map(|v| v.shape.clone());
    assert_eq!(shape("encoder.convs.0.weight"), Some(vec![512, 1, 1, 10]));
    assert_eq!(shape("encoder.convs.1.weight"), Some(vec![512, 512, 1, 8]));
    assert_eq!(shape("encoder.convs.4.bias"), Some(vec![512]));
    assert_eq!(shape("gru.weight_ih_l0"), Some(vec![768, 512]));
    assert_eq!(shape("heads.11.weight"), Some(vec![512, 256]));
    // Convs 5632 + 2097664 + 3 x 1049088, GRU 393216 + 196608 + 1536, heads 12 x 131072.
    assert_eq!(layout.count(), 7_414_784);

    let short = AudioSpec {
        window: 100,
        ..AudioSpec::paper()
    };
    let err = short.validate().unwrap_err().to_string();
    assert!(err.contains("100 samples"), "{err}");
    let far = AudioSpec {
        offsets: vec![1, 128],
        ..AudioSpec::paper()
    };
    let err = far.validate().unwrap_err().to_string();
    assert!(err.contains("1..128"), "{err}");
}

// ---------------------------------------------------------------- audio

/// `got` against `want` element by element, within `tol` (1 + |want|); NaN (a value never
/// written) fails.
fn assert_near(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * (1.0 + w.abs()),
            "{what}[{i}]: GPU {g}, CPU {w}"
        );
    }
}

/// The model's forward on `gpu` against the CPU reference on `x`, every output NaN-filled
/// before the run: z, c, the scores, the loss and the accuracies (within one query's flip).
/// Returns the reference's z and c.
fn check_forward<'a>(
    gpu: &Gpu,
    spec: &Spec,
    batch: usize,
    x: impl Into<Examples<'a>>,
) -> (Vec<f32>, Vec<f32>) {
    let x = x.into();
    let params = ParamLayout::new(spec).init(11);
    let model = CpcModel::new(gpu, spec, batch, &params, AdamConfig::default()).unwrap();
    for t in [&model.z, &model.c, &model.stats]
        .into_iter()
        .chain(&model.scores)
    {
        t.fill(gpu, f32::NAN).unwrap();
    }
    model.set_inputs(gpu, x, 1, 0.0, 0).unwrap();
    model.run(gpu, |m, pass| m.record_forward(pass)).unwrap();
    let (z, c) = cpu::model::context(spec, &params, x, batch, 0);
    let want = cpu::model::loss(spec, &params, x, batch, 0);
    let (rows, steps) = (spec.sequences(batch).rows(), spec.sequences(1).steps);
    assert_eq!(
        (z.len(), c.len()),
        (rows * spec.dim(), rows * spec.hidden())
    );
    assert_near("z", &model.z.read(gpu).unwrap(), &z, 1e-4);
    assert_near("c", &model.c.read(gpu).unwrap(), &c, 1e-4);
    for (k, scores) in model.scores.iter().enumerate() {
        let w: Vec<f32> = want.scores[k].iter().map(|&v| v as f32).collect();
        assert_near(&format!("scores {k}"), &scores.read(gpu).unwrap(), &w, 1e-4);
    }
    let stats = model.read_stats(gpu).unwrap();
    assert!((stats.loss - want.loss as f32).abs() <= 1e-4 * want.loss as f32);
    for (k, &o) in spec.offsets().iter().enumerate() {
        let one_query = 1.0 / (batch * (steps - o)) as f32 + 1e-6;
        assert!((stats.loss_k[k] - want.loss_k[k] as f32).abs() <= 1e-4 * want.loss_k[k] as f32);
        assert!((stats.accuracy_k[k] - want.accuracy_k[k] as f32).abs() <= one_query);
    }
    // frames() reads z and c again through the blocking path.
    let (fz, fc) = model.frames(gpu, x).unwrap();
    assert_near("frames z", &fz, &z, 1e-4);
    assert_near("frames c", &fc, &c, 1e-4);
    (z, c)
}

/// The audio model's forward on `gpu` against the CPU reference ([`check_forward`]): the
/// frames z after the frame norm, where there is one. With the frame norm
/// each frame of z has mean 0 over its D channels and variance v / (v + eps), v the frame's
/// own variance before the norm (gain 1, bias 0 at initialisation; above 0.9 for frames of
/// v > 9e-5, 0 for constant frames): from the definition rather than the reference.
fn check_audio_forward(gpu: &Gpu, spec: &AudioSpec) {
    let batch = 3;
    let x = inputs(&spec.into(), batch, 12);
    let (z, _) = check_forward(gpu, &spec.into(), batch, &x);
    let (t, d) = (spec.frames(), spec.dim());
    if spec.frame_norm {
        // A frame whose D channels were all equal (every ReLU off: the He-initialised
        // convs have no bias) normalises to zeros; most frames are not such.
        let mut normal = 0;
        for frame in z.chunks(d) {
            let mean = frame.iter().sum::<f32>() / d as f32;
            let var = frame.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / d as f32;
            assert!(
                mean.abs() < 1e-5 && (var < 1e-6 || (0.9..1.0 + 1e-5).contains(&var)),
                "{mean} {var}"
            );
            normal += (var > 0.9) as usize;
        }
        assert!(
            2 * normal > batch * t,
            "{normal} of {} frames normalised",
            batch * t
        );
    }
}

#[test]
fn audio_model_forward_matches_the_reference_on_both_kernel_paths() {
    for kernels in [Kernels::Cpu, Kernels::Gpu] {
        for frame_norm in [false, true] {
            check_audio_forward(gpu_on(kernels), &small_audio(frame_norm));
        }
    }
}

/// The whole audio model's gradients (convs, frame norm, GRU, heads) against central
/// differences of the CPU reference's loss, as for vision: B * T = 48 candidate frames.
#[test]
fn audio_model_with_frame_norm_gradients_match_finite_differences() {
    check_model(gpu(), &small_audio(true), 3, 3);
}

#[test]
fn an_audio_model_sliced_into_single_clips_computes_the_same() {
    use cpc::model::cpc::slice_images;
    let (spec, batch) = (small_audio(true), 3);
    assert_eq!(slice_images(&gpu().limits, &spec, batch), batch);
    let params = ParamLayout::new(&spec).init(5);
    let x = inputs(&(&spec).into(), batch, 6);
    let cfg = AdamConfig::default();
    let model = CpcModel::sliced(gpu(), &spec, batch, &params, cfg, Some(1)).unwrap();
    assert_eq!(model.slice_allocs.len(), batch);
    model.set_inputs(gpu(), &x, 1, 0.0, 0).unwrap();
    model
        .run(gpu(), |m, pass| m.record_gradients(pass))
        .unwrap();
    let (want_stats, want_grads) = gpu_step(gpu(), &spec, batch, &params, &x, 0);
    assert_near(
        "stats",
        &model.stats.read(gpu()).unwrap(),
        &want_stats,
        1e-5,
    );
    let grads = model.buffers.grads.read(gpu()).unwrap();
    assert_near("gradients", &grads, &want_grads, 1e-5);
}

/// frames: z and c at every position (a clip's frames, an image's patches); pooled: their
/// means over each example's positions; features: pooled's z. Against the CPU reference
/// (which, as features, runs without jitter), into NaN-filled buffers.
#[test]
fn pooled_features_are_the_mean_vector_and_context_of_each_clip_or_image() {
    let vision = ModelSpec {
        jitter: 0,
        ..narrow_with_norm()
    };
    for spec in [Spec::Audio(small_audio(true)), Spec::Vision(vision)] {
        let batch = 3;
        let params = ParamLayout::new(&spec).init(3);
        let x = inputs(&spec, batch, 4);
        let model = CpcModel::new(gpu(), &spec, batch, &params, AdamConfig::default()).unwrap();
        model.z.fill(gpu(), f32::NAN).unwrap();
        model.c.fill(gpu(), f32::NAN).unwrap();
        let (z, c) = model.frames(gpu(), &x).unwrap();
        let (want_z, want_c) = cpu::model::context(&spec, &params, &x, batch, 0);
        assert_near("z", &z, &want_z, 1e-4);
        assert_near("c", &c, &want_c, 1e-4);
        let mean = |rows: &[f32], width: usize| -> Vec<f32> {
            let t = spec.positions();
            let mut out = vec![0.0; batch * width];
            for (i, v) in rows.iter().enumerate() {
                out[i / width / t * width + i % width] += v / t as f32;
            }
            out
        };
        let pooled = model.pooled(gpu(), &x).unwrap();
        assert_near("pooled z", &pooled.z, &mean(&want_z, spec.dim()), 1e-4);
        assert_near("pooled c", &pooled.c, &mean(&want_c, spec.hidden()), 1e-4);
        assert_eq!(model.features(gpu(), &x).unwrap(), pooled.z);
    }
}

/// The paper's speech model with the frame norm: its parameters ([D] gain and bias after the
/// convs, before the GRU, ones and zeros) and its forward FLOPs counted by hand (every frame
/// of the batch a candidate).
#[test]
fn the_papers_audio_model_with_frame_norm_counts_its_parameters_and_flops() {
    let spec = AudioSpec {
        frame_norm: true,
        ..AudioSpec::paper()
    };
    let layout = ParamLayout::new(&spec);
    // The paper's 7 414 784 and a gain and a bias of 512.
    assert_eq!(layout.count(), 7_414_784 + 2 * 512);
    let names: Vec<&str> = layout.views.iter().map(|v| v.name.as_str()).collect();
    let at = names
        .iter()
        .position(|&n| n == "encoder.frame_norm.weight")
        .unwrap();
    assert_eq!(
        names[at - 1..at + 3],
        [
            "encoder.convs.4.bias",
            "encoder.frame_norm.weight",
            "encoder.frame_norm.bias",
            "gru.weight_ih_l0"
        ]
    );
    let init = layout.init(0);
    assert!(layout
        .slice(&init, "encoder.frame_norm.weight")
        .iter()
        .all(|&v| v == 1.0));
    assert!(layout
        .slice(&init, "encoder.frame_norm.bias")
        .iter()
        .all(|&v| v == 0.0));
    // Per clip at batch 8: the convs' multiply-adds, the ReLUs' and the norm's elements, the
    // GRU's 128 steps, and per offset o its 128 - o queries' predictions (512 x 256) and
    // scores against the batch's 8 * 128 frames (512 each).
    let convs = 2 * (4096 * 512 * 10 + 1024 * 512 * 512 * 8 + (512 + 256 + 128) * 512 * 512 * 4);
    let relus = (4096 + 1024 + 512 + 256 + 128) * 512;
    let norm = 128 * 512;
    let gru = 2 * 128 * 3 * (512 * 256 + 256 * 256);
    let heads: u64 = (1..=12u64)
        .map(|o| 2 * (128 - o) * (512 * 256 + 8 * 128 * 512))
        .sum();
    let want = (convs + relus + norm + gru + heads) as f64;
    assert_eq!(Spec::from(&spec).forward_flops_per_example(8), want);
}

#[test]
fn an_absurd_audio_spec_is_an_error_not_a_panic() {
    let paper = AudioSpec::paper;
    let wide = Conv1dSpec {
        kernel: 4,
        stride: 2,
        pad: 1,
        channels: 1 << 16,
    };
    let absurd = [
        (
            AudioSpec {
                window: usize::MAX,
                ..paper()
            },
            "window",
        ),
        (
            AudioSpec {
                hidden: usize::MAX,
                ..paper()
            },
            "hidden",
        ),
        (
            AudioSpec {
                convs: vec![],
                ..paper()
            },
            "at least one conv",
        ),
        (
            AudioSpec {
                convs: vec![Conv1dSpec {
                    pad: usize::MAX,
                    ..wide
                }],
                ..paper()
            },
            "pad",
        ),
        (
            AudioSpec {
                convs: vec![wide; 3],
                ..paper()
            },
            "parameters",
        ),
    ];
    for (spec, what) in absurd {
        let text = spec.validate().unwrap_err().to_string();
        assert!(text.contains(what), "{text}");
        assert!(CpcModel::new(gpu(), &spec, 1, &[], AdamConfig::default()).is_err());
    }
}

// ---------------------------------------------------------------- text

/// A small text model: 13 words (PAD and UNK included) of E = 5, sentences of up to 5
/// words, a word conv of width 3 to D = 6, passages of 4 sentences, H = 7, offsets 1 and 2.
fn small_text() -> TextSpec {
    TextSpec {
        vocab: 13,
        max_words: 5,
        embedding: 5,
        kernel: 3,
        channels: 6,
        sentences: 4,
        hidden: 7,
        offsets: vec![1, 2],
    }
}

/// `batch` passages of the spec's L sentences, their lengths cycling through 0 (empty), 1,
/// W and values between, words drawn from a few (so that sentences repeat words) and
/// spread over the vocabulary but PAD.
fn passages(spec: &TextSpec, batch: usize, seed: u64) -> PaddedSentences {
    let mut r = common::rng(seed);
    let (w, n) = (spec.max_words, batch * spec.sentences);
    let lengths = (0..n).map(|i| [0, 1, w, 3, 2, w - 1, 1][i % 7]);
    let mut tokens = Vec::new();
    let mut offsets = vec![0u32];
    for len in lengths {
        tokens.extend((0..len).map(|_| r.random_range(1..spec.vocab as u32)));
        offsets.push(tokens.len() as u32);
    }
    PaddedSentences::from_offsets(&tokens, &offsets, w, spec.vocab).unwrap()
}

/// The text model's forward on `gpu` against the CPU reference ([`check_forward`]), and
/// the sentence vectors z zero exactly for the empty sentences (and only for them: every
/// other sentence has a ReLU on).
fn check_text_forward(gpu: &Gpu, spec: &TextSpec) {
    let batch = 3;
    let x = passages(spec, batch, 12);
    assert!(x.lengths().contains(&0) && x.lengths().contains(&1));
    let (z, _) = check_forward(gpu, &spec.into(), batch, &x);
    let d = spec.dim();
    for (n, &len) in x.lengths().iter().enumerate() {
        let row = &z[n * d..(n + 1) * d];
        assert_eq!(
            len == 0,
            row.iter().all(|&v| v == 0.0),
            "sentence {n} of {len} words: {row:?}"
        );
    }
}

#[test]
fn text_model_forward_matches_the_reference_on_both_kernel_paths() {
    for kernels in [Kernels::Cpu, Kernels::Gpu] {
        check_text_forward(gpu_on(kernels), &small_text());
    }
}

/// The whole text model's gradients (the embedding table through its CSR backward, the
/// word conv, the GRU, the heads) against central differences of the CPU reference's
/// loss: 3 passages of 4 sentences, empty and one-word sentences among them.
#[test]
fn text_model_gradients_match_finite_differences() {
    let spec = small_text();
    let x = passages(&spec, 3, 8);
    check_model_on(gpu(), &(&spec).into(), 3, &x, 4);
}

/// The lookup's, its backward's and the masked mean's work depend on the batch's words:
/// before any upload their counts are the plan's (every position a word), after one the
/// batch's, each encoder slice's masked mean its own sentences' (what `cpc profile` shows).
#[test]
fn text_kernel_costs_count_the_words_of_the_batch_last_uploaded() {
    use cpc::gpu::Cost;
    let spec = small_text();
    let (batch, l, w) = (3, spec.sentences, spec.max_words);
    let (e, c) = (spec.embedding, spec.channels);
    let init = ParamLayout::new(&spec).init(0);
    // One passage a slice: three masked means over 4 sentences each.
    let model =
        CpcModel::sliced(gpu(), &spec, batch, &init, AdamConfig::default(), Some(1)).unwrap();
    let costs = |name: &str| -> Vec<(Cost, Cost)> {
        (model.step_launches().iter())
            .filter(|l| l.name == name)
            .map(|l| (l.cost, l.cost_now()))
            .collect()
    };
    let flops_now = |name: &str| costs(name).iter().map(|c| c.1.flops).collect::<Vec<_>>();
    let positions = batch * l * w;
    // Before an upload: the worst case, P' = P words, min(P, V - 1) distinct.
    let distinct_max = positions.min(spec.vocab - 1);
    let worst = ((positions + distinct_max) * e) as u64;
    assert_eq!(flops_now("embedding.backward"), [worst]);
    assert_eq!(
        flops_now("masked_mean.forward"),
        [(c * (l * w + l)) as u64; 3]
    );
    let x = passages(&spec, batch, 5);
    model.set_inputs(gpu(), &x, 1, 1e-3, 0).unwrap();
    let words: usize = x.lengths().iter().map(|&v| v as usize).sum();
    let distinct = (x.ids().iter().filter(|&&id| id != 0))
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    assert!(
        words < positions && distinct < distinct_max,
        "{words} {distinct}"
    );
    // The backward adds each word's E gradients, then each distinct word's row; reads the
    // index, the words' gradients, and reads and writes the distinct rows.
    let bytes = 4 * (2 * distinct + words + 2 + words * e + 2 * distinct * e) as u64;
    assert_eq!(
        costs("embedding.backward")[0].1,
        Cost {
            flops: ((words + distinct) * e) as u64,
            bytes
        }
    );
    // The lookup: no FLOPs; the ids, a row per word, all of out.
    let bytes = 4 * (positions + words * e + positions * e) as u64;
    assert_eq!(costs("embedding.forward")[0].1, Cost { flops: 0, bytes });
    // Each slice's masked mean: C adds a word of its passage and a division a row; its
    // backward a division per word's gradient.
    let per_passage: Vec<usize> = (x.lengths().chunks(l))
        .map(|p| p.iter().map(|&v| v as usize).sum())
        .collect();
    let want: Vec<u64> = per_passage.iter().map(|&p| (c * (p + l)) as u64).collect();
    assert_eq!(flops_now("masked_mean.forward"), want);
    let want: Vec<u64> = per_passage.iter().map(|&p| (c * p) as u64).collect();
    assert_eq!(flops_now("masked_mean.backward"), want);
    // The plan's counts stay the worst case; the other kernels' do not depend on the batch.
    for (plan, now) in costs("embedding.backward") {
        assert_eq!(plan.flops, worst);
        assert!(now.flops < plan.flops);
    }
    for l in model.step_launches() {
        if !l.name.starts_with("embedding") && !l.name.starts_with("masked_mean") {
            assert_eq!(l.cost, l.cost_now(), "{}", l.name);
        }
    }
}

#[test]
fn a_text_model_takes_sentences_and_an_image_model_values() {
    let spec = small_text();
    let params = ParamLayout::new(&spec).init(1);
    let model = CpcModel::new(gpu(), &spec, 2, &params, AdamConfig::default()).unwrap();
    let values = vec![0.0f32; 40];
    let err = model
        .set_inputs(gpu(), &values, 1, 0.0, 0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("takes sentences"), "{err}");
    // A batch of the wrong number of sentences is refused by the upload.
    let err = model
        .set_inputs(gpu(), &passages(&spec, 3, 1), 1, 0.0, 0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("12 sentences") && err.contains("8"), "{err}");
    let vision = tiny();
    let params = ParamLayout::new(&vision).init(1);
    let model = CpcModel::new(gpu(), &vision, 1, &params, AdamConfig::default()).unwrap();
    let err = (model.set_inputs(gpu(), &passages(&spec, 1, 1), 1, 0.0, 0))
        .unwrap_err()
        .to_string();
    assert!(err.contains("takes f32 examples, not sentences"), "{err}");
}

#[test]
fn the_text_presets_count_their_parameters() {
    // Table V x E, conv D x E x K + D, GRU 3H (D + H) + 6H, heads 3 x D x H.
    let count = |v: usize, e: usize, d: usize, h: usize| {
        v * e + (d * e * 3 + d) + (3 * h * (d + h) + 6 * h) + 3 * d * h
    };
    for (name, want) in [
        ("text", count(20000, 620, 2400, 2400)),
        ("text-small", count(20000, 256, 1024, 1024)),
        ("text-tiny", count(2048, 32, 64, 64)),
    ] {
        let config = cpc::train::Config::preset(name).unwrap();
        let layout = config.model.layout();
        assert_eq!(layout.count(), want, "{name}");
        let spec = Spec::from(&config.model);
        let text = spec.text().unwrap();
        assert_eq!(
            (text.kernel, spec.steps(), spec.offsets()[0]),
            (3, 3, 1),
            "{name}"
        );
        println!("{name}: {} parameters; {}", layout.count(), spec.describe());
    }
    // The forward's FLOPs per passage at batch b: the word conv's multiply-adds and its
    // ReLU's elements at the W positions of the L sentences, the GRU's L steps, and per
    // offset o its L - o queries' predictions (D x H) and scores against the b L sentences.
    for (name, [w, l, e, d, h]) in [
        ("text", [32, 8, 620, 2400, 2400]),
        ("text-small", [32, 8, 256, 1024, 1024]),
        ("text-tiny", [16, 6, 32, 64, 64]),
    ] {
        let spec = Spec::from(&cpc::train::Config::preset(name).unwrap().model);
        let b = 5;
        let conv = 2 * d * e * 3 * w * l + d * w * l;
        let gru = 2 * l * 3 * (d * h + h * h);
        let heads: usize = (1..=3).map(|o| 2 * (l - o) * (d * h + b * l * d)).sum();
        let want = (conv + gru + heads) as f64;
        assert_eq!(spec.forward_flops_per_example(b), want, "{name}");
    }
    assert_eq!(count(20000, 620, 2400, 2400), 68_720_800);
    assert_eq!(count(20000, 256, 1024, 1024), 15_350_784);
    assert_eq!(count(2048, 32, 64, 64), 108_992);
    // PAD's row of the table starts at zero, the other rows N(0, 1).
    let layout = ParamLayout::new(&small_text());
    let init = layout.init(3);
    let table = layout.slice(&init, "encoder.embedding.weight");
    assert!(table[..5].iter().all(|&v| v == 0.0));
    let rest = &table[5..];
    let var = rest.iter().map(|v| v * v).sum::<f32>() / rest.len() as f32;
    assert!((0.4..2.0).contains(&var), "{var}");
}

#[test]
fn text_configurations_round_trip_and_bad_fields_are_named() {
    use cpc::model::ModelConfig;
    let tiny = cpc::train::Config::preset("text-tiny").unwrap();
    let text = toml::to_string(&tiny.model).unwrap();
    assert!(text.contains("modality = \"text\""), "{text}");
    let back: ModelConfig = toml::from_str(&text).unwrap();
    assert_eq!(back, tiny.model);
    let fingerprints: std::collections::HashSet<String> =
        ["text", "text-small", "text-tiny", "audio-tiny", "tiny"]
            .iter()
            .map(|p| cpc::train::Config::preset(p).unwrap().model.fingerprint())
            .collect();
    assert_eq!(fingerprints.len(), 5);
    for (toml, field) in [
        ("[model.encoder]\nkernel = 4", "model.encoder.kernel"),
        ("[model]\nsteps = 6", "model.sentences"),
        ("[model]\nvocab_size = 2000000", "model.vocab_size"),
        ("[model]\nvocab_size = 1", "model.vocab_size"),
        ("[model]\nmax_words = 0", "model.max_words"),
        ("[model]\nembedding = 100000", "model.embedding"),
        ("[model]\nsentences = 1", "model.sentences"),
        ("[model.encoder]\nchannels = 0", "model.encoder.channels"),
    ] {
        let err = cpc::train::Config::from_toml_overrides("text-tiny", toml)
            .unwrap_err()
            .to_string();
        assert!(err.contains(field), "{toml}: {err}");
    }
}

// ---------------------------------------------------------------- micro-batches

/// Zeroing once, then the forward and backward of batch `a` and, in a second submission
/// with its input written between, of batch `b` (as `--accumulate 2` runs a step) leaves in
/// the gradient buffer the sum of `a`'s and `b`'s gradients, each computed alone, for every
/// entry of every parameter tensor: no backward kernel overwrites what an earlier batch
/// left. Summation order differs where a parameter's gradient gathers from several
/// launches (the GRU's steps), so the sum is exact only to f32 rounding: 1e-5 of the
/// tensor's largest entry.
fn check_micro_batches_add_up(gpu: &Gpu, spec: &Spec, batch: usize, a: Examples, b: Examples) {
    let layout = ParamLayout::new(spec);
    let params = layout.init(3);
    let model = CpcModel::new(gpu, spec, batch, &params, AdamConfig::default()).unwrap();
    let alone = |x: Examples| {
        model.set_inputs(gpu, x, 1, 0.0, 5).unwrap();
        model.run(gpu, |m, pass| m.record_gradients(pass)).unwrap();
        model.buffers.grads.read(gpu).unwrap()
    };
    let (ga, gb) = (alone(a), alone(b));
    model.set_inputs(gpu, a, 1, 0.0, 5).unwrap();
    model.run(gpu, |m, pass| m.record_gradients(pass)).unwrap();
    model.set_inputs(gpu, b, 1, 0.0, 5).unwrap();
    model
        .run(gpu, |m, pass| m.record_forward_backward(pass))
        .unwrap();
    let summed = model.buffers.grads.read(gpu).unwrap();
    for v in &layout.views {
        let range = v.offset..v.offset + v.len();
        let (sa, sb, s) = (&ga[range.clone()], &gb[range.clone()], &summed[range]);
        let scale = sa.iter().chain(sb).fold(0.0f32, |m, x| m.max(x.abs()));
        assert!(
            scale > 0.0 && scale.is_finite(),
            "{}: gradient {scale}",
            v.name
        );
        // The two batches' gradients differ, so a buffer holding only one of them fails.
        let apart = sa
            .iter()
            .zip(sb)
            .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(
            apart > 1e-3 * scale,
            "{}: the batches' gradients agree",
            v.name
        );
        for (i, ((x, y), got)) in sa.iter().zip(sb).zip(s).enumerate() {
            assert!(
                (got - (x + y)).abs() <= 1e-5 * scale,
                "{}[{i}]: accumulated {got}, alone {x} + {y}",
                v.name
            );
        }
    }
}

#[test]
fn the_gradients_of_micro_batches_add_up_for_every_modality() {
    let gpu = gpu();
    for (spec, batch) in [
        (Spec::from(&tiny()), 2),
        (Spec::from(&narrow_with_norm()), 3),
        (Spec::from(&small_audio(true)), 3),
    ] {
        let (a, b) = (inputs(&spec, batch, 21), inputs(&spec, batch, 22));
        check_micro_batches_add_up(gpu, &spec, batch, (&a).into(), (&b).into());
    }
    let text = small_text();
    let (a, b) = (passages(&text, 3, 21), passages(&text, 3, 22));
    check_micro_batches_add_up(gpu, &(&text).into(), 3, (&a).into(), (&b).into());
}
