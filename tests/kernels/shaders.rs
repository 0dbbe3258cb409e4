//! Every shaders/*.wgsl parses and validates with naga as the crate builds it (the reduction
//! kernels with shaders/shared/reduce*.wgsl prepended; errors point at the WGSL line), is in
//! the crate's shader table, and its uniform struct matches the Rust twin byte for byte; the
//! row kernels' workgroup is the one the launchers count by, and the subgroup choice follows
//! the flag, then the adapter.

use std::collections::HashMap;

use cpc::gpu::Shader;

fn module(file: &str, source: &str) -> naga::Module {
    let module = naga::front::wgsl::parse_str(source)
        .unwrap_or_else(|e| panic!("{}", e.emit_to_string_with_path(source, file)));
    naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::all(),
    )
    .validate(&module)
    .unwrap_or_else(|e| panic!("{}", e.emit_to_string_with_path(source, file)));
    module
}

#[test]
fn every_shader_validates_and_is_in_the_table() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/shaders");
    let mut on_disk: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".wgsl"))
        .collect();
    on_disk.sort();
    let mut in_table: Vec<String> = Shader::ALL.iter().map(|s| s.file().to_string()).collect();
    in_table.sort();
    in_table.dedup(); // the conv Storage and the Subgroup variants share their files
    assert_eq!(
        on_disk, in_table,
        "shaders/ and gpu::kernels::Shader disagree"
    );
    // Every source as built: the files, the variants derived by swapping a declaration, and
    // the reduction kernels with shaders/shared/reduce*.wgsl prepended.
    for shader in Shader::ALL {
        module(shader.file(), &shader.source());
    }
}

#[test]
fn row_kernels_workgroup_size_matches_rust() {
    // ROW_WG in shaders/shared/reduce.wgsl is the workgroup the launchers count rows by
    // (Gpu::row_dispatch), and the workgroup size of both row kernels.
    for (shader, entry) in [
        (Shader::Infonce, "infonce_rows"),
        (Shader::SoftmaxXent, "main"),
    ] {
        for variant in [shader, shader.with_subgroups().unwrap()] {
            let m = module(variant.file(), &variant.source());
            let ep = m.entry_points.iter().find(|e| e.name == entry).unwrap();
            assert_eq!(
                ep.workgroup_size,
                [cpc::gpu::ROW_WORKGROUP as u32, 1, 1],
                "{variant:?} {entry}"
            );
        }
    }
}

#[test]
fn uniform_structs_match_rust() {
    let rust: HashMap<_, _> = cpc::ops::uniform_layouts()
        .into_iter()
        .map(|l| (l.name, l))
        .collect();
    let mut seen = 0;
    for shader in Shader::ALL {
        let m = module(shader.file(), &shader.source());
        for (_, var) in m.global_variables.iter() {
            if var.space != naga::AddressSpace::Uniform {
                continue;
            }
            let ty = &m.types[var.ty];
            let name = ty.name.as_deref().unwrap_or("?");
            let naga::TypeInner::Struct { members, span } = &ty.inner else {
                // Data read through a uniform binding (the conv forward's weight windows)
                // has no Rust twin: only parameter structs do.
                if let naga::TypeInner::Array { stride, size, .. } = ty.inner {
                    // Its size is the launchers' window: ops::conv2d::WEIGHT_WINDOW floats.
                    let naga::ArraySize::Constant(n) = size else {
                        panic!("{}: uniform array {name} without a size", shader.file())
                    };
                    assert_eq!(
                        (n.get() * stride) as usize,
                        4 * cpc::ops::conv2d::WEIGHT_WINDOW,
                        "{}: bytes of the uniform weight window",
                        shader.file()
                    );
                    continue;
                }
                panic!(
                    "{}: uniform {name} is neither a struct nor an array",
                    shader.file()
                )
            };
            let r = rust.get(name).unwrap_or_else(|| {
                panic!(
                    "{}: uniform struct {name} has no Rust twin in ops::uniform_layouts",
                    shader.file()
                )
            });
            assert_eq!(*span as usize, r.size, "{}: size of {name}", shader.file());
            let wgsl: Vec<(&str, usize)> = members
                .iter()
                .map(|mb| (mb.name.as_deref().unwrap_or("?"), mb.offset as usize))
                .collect();
            assert_eq!(
                wgsl,
                r.fields,
                "{}: members of {name} (name, byte offset)",
                shader.file()
            );
            seen += 1;
        }
    }
    assert!(
        seen >= Shader::ALL.len(),
        "every shader has a uniform struct"
    );
}

#[test]
fn every_kernel_fits_webgpu_and_downlevel_limits_are_refused_naming_kernel_and_limit() {
    use cpc::gpu::check_kernels_fit;
    for device in [wgpu::DeviceType::Cpu, wgpu::DeviceType::DiscreteGpu] {
        check_kernels_fit(&wgpu::Limits::default(), device).unwrap();
        let e = check_kernels_fit(&wgpu::Limits::downlevel_defaults(), device)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(
                "adam.wgsl step binds 5 storage buffers; this device allows 4 \
                 (max_storage_buffers_per_shader_stage)"
            ),
            "{e}"
        );
        // The conv uniform windows only where a CPU adapter would bind them.
        let window = "conv2d_forward.wgsl main binds a uniform buffer of 65536 bytes";
        assert_eq!(e.contains(window), device == wgpu::DeviceType::Cpu, "{e}");
    }
    // Opening a device under them is refused at once, before anything is planned.
    let opened = cpc::gpu::Gpu::software_with(cpc::gpu::LimitsChoice::Downlevel);
    let e = opened.err().expect("downlevel limits refused").to_string();
    assert!(e.contains("max_storage_buffers_per_shader_stage"), "{e}");
}

#[test]
fn subgroups_follow_the_choice_then_the_adapter() {
    use cpc::gpu::{Reductions, Subgroups, Tensor};
    let info = wgpu::AdapterInfo::new(wgpu::DeviceType::DiscreteGpu, wgpu::Backend::Vulkan);
    let used = |asked, features| Subgroups::choose(Some(asked), &info, features).unwrap().0;
    assert!(used(Subgroups::Auto, wgpu::Features::SUBGROUP));
    assert!(!used(Subgroups::Auto, wgpu::Features::empty()));
    assert!(!used(Subgroups::Off, wgpu::Features::SUBGROUP));
    assert_eq!("OFF".parse::<Subgroups>().unwrap(), Subgroups::Off);
    assert!("on".parse::<Subgroups>().is_err());
    // Each device has the feature only where it uses subgroups, and builds the reduction
    // kernels' variant its choice asks for under the name the launchers use.
    for on in [true, false] {
        let g = crate::shared::gpu_subgroups(on);
        assert_eq!(g.features.contains(wgpu::Features::SUBGROUP), on);
        let x = Tensor::zeros(g, "x", &[3, 2, 100]).unwrap();
        let out = Tensor::zeros(g, "out", &[2]).unwrap();
        cpc::ops::sum_channels::launch(g, &x, [3, 2, 100], &out, 1.0, false).unwrap();
        let want = if on {
            Reductions::Subgroup
        } else {
            Reductions::Workgroup
        };
        let built: Vec<_> = g
            .built_pipelines()
            .into_iter()
            .filter_map(|k| k.shader.reductions())
            .collect();
        assert!(
            !built.is_empty() && built.iter().all(|&r| r == want),
            "{built:?}"
        );
    }
}
