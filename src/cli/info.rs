//! `cpc info`: every adapter wgpu finds, the one that will be used and why, and the
//! features and limits that matter to the kernels; for each adapter, the tilings its cache
//! file holds per shape class (ops::tune).

use crate::error::Result;
use crate::gpu::{list_adapters, wanted_features, AdapterChoice, Gpu};
use crate::ops::tune::{cache, AdapterKey};

fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / (1 << 20) as f64)
}

pub fn run(choice: &AdapterChoice) -> Result<()> {
    let all = list_adapters(&AdapterChoice {
        backend: choice.backend.clone(),
        ..Default::default()
    })?;
    println!("adapters found: {}", all.len());
    for (i, a) in all.iter().enumerate() {
        let info = &a.info;
        println!(
            "  [{i}] {} | {:?} | {:?} | driver: {} {}",
            info.name, info.backend, info.device_type, info.driver, info.driver_info
        );
        let dir = cache::dir(choice.cache_dir.as_deref());
        for line in cache::describe(dir.as_deref(), &AdapterKey::of(info)) {
            println!("      {line}");
        }
    }
    let gpu = Gpu::new(choice)?;
    let (info, l, f) = (&gpu.info, &gpu.limits, gpu.features);
    println!(
        "\nusing: {} ({:?}, {:?})",
        info.name, info.backend, info.device_type
    );
    println!("why:   {}", gpu.reason);
    println!("kernels: {:?} path ({})", gpu.kernels, gpu.kernels_reason);
    println!("tuning:  {}", gpu.tilings.reason());
    println!("reductions: {}", gpu.reductions());
    println!("\nfeatures:");
    for (name, feat) in [
        ("timestamp queries", wgpu::Features::TIMESTAMP_QUERY),
        (
            "timestamps inside passes",
            wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES,
        ),
        ("f16 in shaders", wgpu::Features::SHADER_F16),
        ("subgroups", wgpu::Features::SUBGROUP),
    ] {
        let yes = f.contains(feat);
        debug_assert!(wanted_features().contains(feat));
        println!("  {name:<26} {}", if yes { "yes" } else { "no" });
    }
    println!("\nlimits:");
    let rows: [(&str, String); 9] = [
        ("max buffer size", mib(l.max_buffer_size)),
        (
            "max storage binding size",
            mib(l.max_storage_buffer_binding_size),
        ),
        (
            "max uniform binding size",
            format!("{} KiB", l.max_uniform_buffer_binding_size / 1024),
        ),
        (
            "storage buffers per stage",
            l.max_storage_buffers_per_shader_stage.to_string(),
        ),
        (
            "workgroup storage",
            format!("{} bytes", l.max_compute_workgroup_storage_size),
        ),
        (
            "invocations per workgroup",
            l.max_compute_invocations_per_workgroup.to_string(),
        ),
        (
            "workgroup size x, y, z",
            format!(
                "{}, {}, {}",
                l.max_compute_workgroup_size_x,
                l.max_compute_workgroup_size_y,
                l.max_compute_workgroup_size_z
            ),
        ),
        (
            "workgroups per dimension",
            l.max_compute_workgroups_per_dimension.to_string(),
        ),
        (
            "storage offset alignment",
            format!("{} bytes", l.min_storage_buffer_offset_alignment),
        ),
    ];
    for (k, v) in rows {
        println!("  {k:<26} {v}");
    }
    Ok(())
}
