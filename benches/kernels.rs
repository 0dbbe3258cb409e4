//! Kernel benchmarks, timed on the GPU: matrix product (squares up to 4096^3 and CPC
//! shapes), convolution forward and both backwards (the tiny preset's layer shapes and every
//! one of the paper preset's), GRU forward and backward, InfoNCE, Adam, and one whole
//! training step per preset.
//!
//! Each iteration records the launches once more into a single compute pass, so the time is
//! GPU time, not submission round trips. Throughput is in "elements" per second where one
//! element is one FLOP (criterion's Gelem/s reads as GFLOP/s), or in bytes per second for
//! kernels that only move memory.
//!
//! `cargo bench --bench kernels` uses the default adapter (WGPU_ADAPTER_NAME etc. apply)
//! and its kernel path (CPC_KERNELS=gpu|cpu forces one; the matmul entries are named after
//! the kernel that ran, so both paths' figures can sit side by side) and reductions
//! (CPC_SUBGROUPS=off for the portable ones). On the GPU path each shape gets its tuned
//! tiling, as in training (CPC_TUNE=off: the default). CPC_BENCH_QUICK=1
//! keeps to small shapes and short runs, for the software adapter. Criterion's filter (a
//! regular expression over `group/name/shape`) picks entries: `cargo bench --bench kernels
//! -- 'matmul/square.*/2048x'`, `-- 'conv2d/.*/paper_'`; scripts/gpu-check.sh runs those.

use std::time::{Duration, Instant};

use criterion::{
    criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, Throughput,
};

use cpc::gpu::{AdapterChoice, Gpu, Launch, Tensor};
use cpc::model::{CpcModel, ModelSpec, ParamLayout};
use cpc::ops::adam::{Adam, AdamConfig};
use cpc::ops::conv2d::{self, Activation, Conv2d};
use cpc::ops::gru::{self, Gru, GruWeights};
use cpc::ops::infonce::{self, Infonce};
use cpc::ops::matmul::{self, Matmul, MatmulKernel};
use cpc::ops::sequences::Sequences;
use cpc::train::Config;

fn quick() -> bool {
    std::env::var("CPC_BENCH_QUICK").is_ok_and(|v| v != "0")
}

fn gpu() -> &'static Gpu {
    static GPU: std::sync::OnceLock<Gpu> = std::sync::OnceLock::new();
    GPU.get_or_init(|| {
        let g = Gpu::new(&AdapterChoice::default()).expect("an adapter");
        eprintln!(
            "adapter: {} ({:?}, {:?}); {:?} kernel path ({}); reductions: {}",
            g.info.name,
            g.info.backend,
            g.info.device_type,
            g.kernels,
            g.kernels_reason,
            g.reductions()
        );
        g
    })
}

/// Time `iters` repetitions of `launches` recorded back to back, at most 64 repetitions per
/// submission.
fn time_launches(launches: &[&Launch], iters: u64) -> Duration {
    let gpu = gpu();
    let start = Instant::now();
    let mut left = iters;
    while left > 0 {
        let n = left.min(64);
        let mut enc = gpu.device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            for _ in 0..n {
                for l in launches {
                    l.record(&mut pass);
                }
            }
        }
        gpu.queue.submit([enc.finish()]);
        left -= n;
    }
    gpu.sync("bench").unwrap();
    start.elapsed()
}

fn group<'a>(
    c: &'a mut Criterion,
    name: &str,
) -> BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(10).warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(if quick() { 2 } else { 5 }));
    g
}

/// Bench a list of launches as one unit, reporting FLOPs (or bytes where there are none).
fn bench(
    g: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    param: String,
    launches: &[&Launch],
) {
    time_launches(launches, 1); // compile the pipelines before the clock starts
    let flops: u64 = launches.iter().map(|l| l.cost.flops).sum();
    let bytes: u64 = launches.iter().map(|l| l.cost.bytes).sum();
    g.throughput(if flops > 0 {
        Throughput::Elements(flops)
    } else {
        Throughput::Bytes(bytes)
    });
    g.bench_function(BenchmarkId::new(name, param), |b| {
        b.iter_custom(|iters| time_launches(launches, iters))
    });
}

fn random_tensor(shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    let data: Vec<f32> = (0..n)
        .map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0)
        .collect();
    Tensor::from_slice(gpu(), "bench", shape, &data).unwrap()
}

fn bench_matmul(c: &mut Criterion) {
    let mut g = group(c, "matmul");
    // (name, M, N, K, trans_a, trans_b): squares, then the InfoNCE score matrix of the paper
    // geometry (560 queries x 784 candidates x D 1024) and the products of its backward.
    let mut shapes = vec![
        ("square", 128, 128, 128, false, false),
        ("square", 256, 256, 256, false, false),
    ];
    if quick() {
        shapes.push(("scores_tiny", 160, 784, 64, false, true));
    } else {
        shapes.extend([
            ("square", 512, 512, 512, false, false),
            ("square", 1024, 1024, 1024, false, false),
            ("square", 2048, 2048, 2048, false, false),
            ("square", 4096, 4096, 4096, false, false),
            ("scores_paper", 560, 784, 1024, false, true),
            ("scores_grad_z_paper", 784, 1024, 560, true, false),
        ]);
    }
    for (name, m, n, k, ta, tb) in shapes {
        let mm = Matmul::new(1, m, n, k).trans_a(ta).trans_b(tb);
        let (a, b, out) = (
            random_tensor(&[m * k]),
            random_tensor(&[k * n]),
            random_tensor(&[m * n]),
        );
        // The kernel matmul::forward plans: on the GPU path, the tiling tuned for the shape.
        let kernel = match MatmulKernel::tuned(gpu(), &mm, &a, &b) {
            MatmulKernel::RegisterBlock => "register_block".to_string(),
            MatmulKernel::Tiled(t) => format!("tiled_{}x{}x{}_{}x{}", t.bm, t.bn, t.bk, t.tm, t.tn),
        };
        let l = matmul::forward(gpu(), &mm, &a, &b, &out).unwrap();
        bench(
            &mut g,
            &format!("{name}.{kernel}"),
            format!("{m}x{n}x{k}"),
            &[&l],
        );
    }
}

fn bench_conv2d(c: &mut Criterion) {
    let mut g = group(c, "conv2d");
    // The tiny preset's layers at batch 16 (784 patches of 8 x 8), then every layer shape of
    // the paper preset (784 patches of 64 x 64: the stem, then per stage its stride-2 conv
    // and its residual convs), then a 1-D audio encoder's five convs (kernels 1 x 10, 8, 4,
    // 4, 4 at strides 1 x 5, 4, 2, 2, 2, unpadded) on 8 clips of 20480 samples, 512 channels.
    let square = Conv2d::square;
    let mut shapes = vec![
        ("tiny_stem".to_string(), square(784, 3, 8, 32, 3, 1)),
        ("tiny_down".to_string(), square(784, 32, 8, 64, 3, 2)),
        ("tiny_res".to_string(), square(784, 64, 4, 64, 3, 1)),
    ];
    if !quick() {
        shapes.extend([
            ("paper_stem".to_string(), square(784, 3, 64, 64, 3, 2)),
            ("paper_down_128".to_string(), square(784, 64, 32, 128, 3, 2)),
            ("paper_res_128".to_string(), square(784, 128, 16, 128, 3, 1)),
            (
                "paper_down_256".to_string(),
                square(784, 128, 16, 256, 3, 2),
            ),
            ("paper_res_256".to_string(), square(784, 256, 8, 256, 3, 1)),
            (
                "paper_down_1024".to_string(),
                square(784, 256, 8, 1024, 3, 2),
            ),
            (
                "paper_res_1024".to_string(),
                square(784, 1024, 4, 1024, 3, 1),
            ),
        ]);
        let (mut width, mut cin) = (20480, 1);
        for (i, (k, s)) in [(10, 5), (8, 4), (4, 2), (4, 2), (4, 2)]
            .into_iter()
            .enumerate()
        {
            let conv = Conv2d {
                n: 8,
                cin,
                h: 1,
                w: width,
                cout: 512,
                kh: 1,
                kw: k,
                sh: 1,
                sw: s,
                ph: 0,
                pw: 0,
            };
            (width, cin) = (conv.out_hw().1, 512);
            shapes.push((format!("audio_{i}"), conv));
        }
    }
    for (name, conv) in shapes {
        let (x, w, b) = (
            random_tensor(&conv.x_shape()),
            random_tensor(&conv.w_shape()),
            random_tensor(&[conv.cout]),
        );
        let (y, dx, dw, db) = (
            random_tensor(&conv.y_shape()),
            random_tensor(&conv.x_shape()),
            random_tensor(&conv.w_shape()),
            random_tensor(&[conv.cout]),
        );
        let param = format!(
            "{}x{}x{}x{}->{},{}x{}/{}x{}",
            conv.n, conv.cin, conv.h, conv.w, conv.cout, conv.kh, conv.kw, conv.sh, conv.sw
        );
        let fwd = conv2d::forward(gpu(), &conv, &x, &w, &b, &y, Activation::Identity).unwrap();
        bench(
            &mut g,
            &format!("forward/{name}"),
            param.clone(),
            &fwd.iter().collect::<Vec<_>>(),
        );
        let bi = conv2d::backward_input(gpu(), &conv, &y, &w, &dx, false, None).unwrap();
        bench(
            &mut g,
            &format!("backward_input/{name}"),
            param.clone(),
            &bi.iter().collect::<Vec<_>>(),
        );
        let bw = conv2d::backward_weight(gpu(), &conv, &x, &y, &dw, &db).unwrap();
        bench(
            &mut g,
            &format!("backward_weight/{name}"),
            param,
            &bw.iter().collect::<Vec<_>>(),
        );
    }
}

fn bench_gru_infonce_adam(c: &mut Criterion) {
    let mut g = group(c, "sequence_and_loss");
    let presets: &[(&str, usize, usize, usize)] = if quick() {
        &[("tiny", 16, 64, 64)]
    } else {
        &[("tiny", 16, 64, 64), ("paper", 16, 1024, 1024)]
    };
    for &(name, batch, d, h) in presets {
        let gru_shape = Gru {
            seq: Sequences::grid(batch, 7),
            input: d,
            hidden: h,
        };
        let n = gru_shape.rows();
        let weights = || GruWeights {
            weight_ih: random_tensor(&[3 * h, d]),
            weight_hh: random_tensor(&[3 * h, h]),
            bias_ih: random_tensor(&[3 * h]),
            bias_hh: random_tensor(&[3 * h]),
        };
        let (w, dw) = (weights(), weights());
        let (z, c_out, dc, dz) = (
            random_tensor(&[n, d]),
            random_tensor(&[n, h]),
            random_tensor(&[n, h]),
            random_tensor(&[n, d]),
        );
        let fwd = gru::forward(gpu(), &gru_shape, &z, &w, &c_out).unwrap();
        bench(
            &mut g,
            &format!("gru_forward/{name}"),
            format!("B{batch}_D{d}_H{h}"),
            &fwd.launches.iter().collect::<Vec<_>>(),
        );
        let bwd = gru::backward(gpu(), &fwd, &z, &w, &dc, &dw, &dz, false).unwrap();
        bench(
            &mut g,
            &format!("gru_backward/{name}"),
            format!("B{batch}_D{d}_H{h}"),
            &bwd.launches.iter().collect::<Vec<_>>(),
        );

        let inf = Infonce::new(
            Sequences::grid(batch, 7),
            d,
            Infonce::default_offsets(if name == "tiny" { 2 } else { 5 }),
        );
        let preds: Vec<Tensor> = (0..inf.steps())
            .map(|k| random_tensor(&[inf.queries(k), d]))
            .collect();
        let dpreds: Vec<Tensor> = (0..inf.steps())
            .map(|k| random_tensor(&[inf.queries(k), d]))
            .collect();
        let stats = random_tensor(&[inf.stats_len()]);
        let f = infonce::forward(gpu(), &inf, &preds, &z, &stats).unwrap();
        bench(
            &mut g,
            &format!("infonce_forward/{name}"),
            format!("B{batch}_D{d}_K{}", inf.steps()),
            &f.launches.iter().collect::<Vec<_>>(),
        );
        let b = infonce::backward(gpu(), &f, &preds, &z, &dpreds, &dz, false).unwrap();
        bench(
            &mut g,
            &format!("infonce_backward/{name}"),
            format!("B{batch}_D{d}_K{}", inf.steps()),
            &b.iter().collect::<Vec<_>>(),
        );
    }
    for n in if quick() {
        vec![1 << 20]
    } else {
        vec![1 << 20, 1 << 24]
    } {
        let (p, gr, m, v) = (
            random_tensor(&[n]),
            random_tensor(&[n]),
            random_tensor(&[n]),
            random_tensor(&[n]),
        );
        let adam = Adam::new(
            gpu(),
            AdamConfig {
                max_norm: 1.0,
                ..AdamConfig::default()
            },
            &p,
            &gr,
            &m,
            &v,
        )
        .unwrap();
        adam.set_step(gpu(), 1, 1e-4);
        bench(
            &mut g,
            "adam_step_with_norm",
            format!("{n}"),
            &adam.launches(),
        );
    }
}

fn bench_training_step(c: &mut Criterion) {
    let mut g = group(c, "training_step");
    let presets: &[&str] = if quick() {
        &["tiny"]
    } else {
        &["tiny", "small", "laptop", "paper"]
    };
    for &preset in presets {
        let cfg = Config::preset(preset).unwrap();
        let spec = ModelSpec::from(cfg.model.vision().unwrap());
        let batch = cfg.train.batch as usize;
        let model = CpcModel::new(
            gpu(),
            &spec,
            batch,
            &ParamLayout::new(&spec).init(0),
            AdamConfig::default(),
        )
        .unwrap();
        let crops: Vec<f32> = (0..batch * 3 * spec.crop * spec.crop)
            .map(|i| ((i * 31 % 200) as f32 / 100.0) - 1.0)
            .collect();
        model.set_inputs(gpu(), &crops, 1, 1e-4, 1).unwrap();
        let launches = model.step_launches();
        bench(&mut g, preset, format!("batch{batch}"), &launches);
    }
}

criterion_group!(
    benches,
    bench_matmul,
    bench_conv2d,
    bench_gru_infonce_adam,
    bench_training_step
);
criterion_main!(benches);
