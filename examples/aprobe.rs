use cpc::data::audio::{self, fixed_windows, AudioOptions, Clips, OnShort};
use cpc::data::Split;
use cpc::eval::features::Features;
use cpc::eval::probe::{probe, ProbeConfig};
use cpc::gpu::Gpu;
use cpc::model::{CpcModel, Spec};
use cpc::train::ModelCheckpoint;

fn feats(gpu: &Gpu, model: &CpcModel, split: Split, window: usize, which: usize) -> Features {
    let set = audio::open(
        None,
        &AudioOptions {
            split,
            ..Default::default()
        },
    )
    .unwrap();
    let (mut data, mut labels, mut names, mut idx) = (vec![], vec![], vec![], vec![]);
    let b = model.batch;
    let mut dim = 0;
    for group in Clips::new(set.as_ref(), 1) {
        for clip in group.unwrap() {
            let w = fixed_windows(&clip.samples, window, OnShort::Pad);
            let n = w.len() / window;
            let mut acc: Vec<f32> = vec![];
            let mut count = 0;
            for chunk in w.chunks(b * window) {
                let k = chunk.len() / window;
                let mut input = chunk.to_vec();
                input.resize(b * window, 0.0);
                let p = model.pooled(gpu, &input).unwrap();
                let v = if which == 0 { p.z } else { p.c };
                dim = v.len() / b;
                if acc.is_empty() {
                    acc = vec![0.0; dim];
                }
                for j in 0..k {
                    for d in 0..dim {
                        acc[d] += v[j * dim + d];
                    }
                }
                count += k;
            }
            let _ = n;
            data.extend(acc.iter().map(|x| x / count as f32));
            labels.push(clip.label.unwrap());
            names.push(format!("{}", clip.index));
            idx.push(clip.index);
        }
    }
    Features {
        dim,
        data,
        labels: Some(labels),
        names,
        class_names: None,
        indices: idx,
    }
}

fn main() {
    let path = std::env::args().nth(1).unwrap();
    let gpu = Gpu::software_with(cpc::gpu::LimitsChoice::Webgpu).unwrap();
    let ck = ModelCheckpoint::read(std::path::Path::new(&path), None).unwrap();
    let spec = Spec::from(&ck.config.model);
    let window = match &spec {
        Spec::Audio(a) => a.window,
        _ => panic!(),
    };
    for (name, params) in [
        ("pretrained", ck.params.clone()),
        ("random", ck.random_params()),
    ] {
        let model = CpcModel::new(&gpu, &spec, 16, &params, Default::default()).unwrap();
        for which in 0..2 {
            let tr = feats(&gpu, &model, Split::Train, window, which);
            let te = feats(&gpu, &model, Split::Test, window, which);
            let r = probe(&gpu, &ProbeConfig::default(), (&tr, "train"), (&te, "test")).unwrap();
            println!(
                "{name} {} top1 {:.3}",
                if which == 0 { "z" } else { "c" },
                r.test.top1
            );
        }
    }
}
