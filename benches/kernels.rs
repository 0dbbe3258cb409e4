//! Kernel benchmarks: matrix product and convolution forward, timed on the GPU.
//!
//! Each iteration records the launch once more into a single compute pass, so the time per
//! iteration is the GPU time of one dispatch, not of a submission round trip. Throughput is
//! reported in "elements" per second where one element is one FLOP: criterion's Gelem/s
//! reads as GFLOP/s.
//!
//! `cargo bench --bench kernels` uses the default adapter (WGPU_ADAPTER_NAME etc. apply);
//! CPC_BENCH_QUICK=1 keeps to small shapes and short runs, for the software adapter.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use cpc::gpu::{AdapterChoice, Gpu, Launch, Tensor};
use cpc::ops::conv2d::{self, Conv2d};
use cpc::ops::matmul::{self, Matmul};

fn quick() -> bool {
    std::env::var("CPC_BENCH_QUICK").is_ok_and(|v| v != "0")
}

fn gpu() -> Gpu {
    let g = Gpu::new(&AdapterChoice::default()).expect("an adapter");
    eprintln!(
        "adapter: {} ({:?}, {:?})",
        g.info.name, g.info.backend, g.info.device_type
    );
    g
}

/// Time `iters` dispatches of `launch` recorded back to back, in chunks of at most 64 per
/// submission; the pipeline is warmed (compiled) before the clock starts.
fn time_launch(gpu: &Gpu, launch: &Launch, iters: u64) -> Duration {
    let submit = |n: u64| {
        let mut enc = gpu.device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            for _ in 0..n {
                launch.record(&mut pass);
            }
        }
        gpu.queue.submit([enc.finish()]);
    };
    let start = Instant::now();
    let mut left = iters;
    while left > 0 {
        let n = left.min(64);
        submit(n);
        left -= n;
    }
    gpu.sync("bench").unwrap();
    start.elapsed()
}

fn random_tensor(gpu: &Gpu, shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    let data: Vec<f32> = (0..n)
        .map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0)
        .collect();
    Tensor::from_slice(gpu, "bench", shape, &data).unwrap()
}

fn bench_matmul(c: &mut Criterion) {
    let gpu = gpu();
    let mut group = c.benchmark_group("matmul");
    group.sample_size(10).warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(if quick() { 2 } else { 5 }));
    // (name, batch, M, N, K, trans_a, trans_b): squares, then the InfoNCE score matrix of the
    // paper geometry (560 queries x 784 candidates x D 1024) and its two backward products.
    let mut shapes = vec![
        ("square", 1, 128, 128, 128, false, false),
        ("square", 1, 256, 256, 256, false, false),
    ];
    if quick() {
        shapes.push(("scores_tiny", 1, 160, 784, 64, false, true));
    } else {
        shapes.extend([
            ("square", 1, 512, 512, 512, false, false),
            ("square", 1, 1024, 1024, 1024, false, false),
            ("square", 1, 2048, 2048, 2048, false, false),
            ("scores_paper", 1, 560, 784, 1024, false, true),
            ("scores_grad_z", 1, 784, 1024, 560, true, false),
        ]);
    }
    for (name, batch, m, n, k, ta, tb) in shapes {
        let mm = Matmul::new(batch, m, n, k).trans_a(ta).trans_b(tb);
        let a = random_tensor(&gpu, &[batch, m * k]);
        let b = random_tensor(&gpu, &[batch, k * n]);
        let out = Tensor::zeros(&gpu, "c", &[batch, m * n]).unwrap();
        let launch = matmul::forward(&gpu, &mm, &a, &b, &out).unwrap();
        time_launch(&gpu, &launch, 1);
        group.throughput(Throughput::Elements(mm.flops()));
        group.bench_function(BenchmarkId::new(name, format!("{m}x{n}x{k}")), |bch| {
            bch.iter_custom(|iters| time_launch(&gpu, &launch, iters))
        });
    }
    group.finish();
}

fn bench_conv2d_forward(c: &mut Criterion) {
    let gpu = gpu();
    let mut group = c.benchmark_group("conv2d_forward");
    group.sample_size(10).warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(if quick() { 2 } else { 5 }));
    // (name, N, Cin, side, Cout, k, stride): the tiny preset's layers at batch 16 (784 patches
    // of 8 x 8), then layers of the paper geometry (784 patches of 64 x 64).
    let mut shapes = vec![
        ("tiny_stem", 784, 3, 8, 32, 3, 1),
        ("tiny_down", 784, 32, 8, 64, 3, 2),
        ("tiny_res", 784, 64, 4, 64, 3, 1),
    ];
    if !quick() {
        shapes.extend([
            ("paper_stem_7x7s2", 784, 3, 64, 64, 7, 2),
            ("paper_res_64", 784, 64, 32, 64, 3, 1),
            ("paper_down_128", 784, 64, 32, 128, 3, 2),
            ("paper_res_256", 784, 256, 8, 256, 3, 1),
        ]);
    }
    for (name, n, cin, side, cout, k, stride) in shapes {
        let conv = Conv2d {
            n,
            cin,
            h: side,
            w: side,
            cout,
            k,
            stride,
            pad: k / 2,
        };
        let x = random_tensor(&gpu, &conv.x_shape());
        let w = random_tensor(&gpu, &conv.w_shape());
        let b = random_tensor(&gpu, &[cout]);
        let y = Tensor::zeros(&gpu, "y", &conv.y_shape()).unwrap();
        let launch = conv2d::forward(&gpu, &conv, &x, &w, &b, &y).unwrap();
        time_launch(&gpu, &launch, 1);
        group.throughput(Throughput::Elements(conv.flops()));
        group.bench_function(
            BenchmarkId::new(name, format!("{n}x{cin}x{side}x{side}->{cout}")),
            |bch| bch.iter_custom(|iters| time_launch(&gpu, &launch, iters)),
        );
    }
    group.finish();
}

criterion_group!(benches, bench_matmul, bench_conv2d_forward);
criterion_main!(benches);
