//! The `cpc` command line: one module per subcommand.

pub mod debug_step;
pub mod embed;
pub mod info;
pub mod neighbours;
pub mod pretrain;
pub mod probe;
pub mod profile;

use std::path::PathBuf;

use clap::Args;

use crate::error::{Error, Result};
pub use crate::eval::open_eval_data;
use crate::gpu::{AdapterChoice, Kernels, LimitsChoice, Subgroups};
use crate::ops::tune::Tune;
use crate::train::Config;
use crate::train::ModelCheckpoint;

/// The preset, with the fields of the TOML file at `config` (if any) overriding it; what
/// was adjusted (a warm-up shortened to the run) is printed as a note.
pub fn load_config(preset: &str, config: Option<&std::path::Path>) -> Result<Config> {
    let (config, notes) = load_config_noted(preset, config)?;
    print_notes(&notes);
    Ok(config)
}

/// [`load_config`], returning the notes instead of printing them.
pub fn load_config_noted(
    preset: &str,
    config: Option<&std::path::Path>,
) -> Result<(Config, Vec<String>)> {
    match config {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
                path: path.to_path_buf(),
                source,
            })?;
            Config::from_toml_overrides_noted(preset, &text)
        }
        None => Ok((Config::preset(preset)?, Vec::new())),
    }
}

/// Notes on a configuration, one `note:` line each on stderr.
pub fn print_notes(notes: &[String]) {
    for note in notes {
        eprintln!("note: {note}");
    }
}

/// "preset NAME: N parameters, <the spec in a line>": the first line `cpc pretrain`,
/// `--plan` and `cpc profile` print.
pub fn model_line(preset: &str, spec: &crate::model::Spec) -> String {
    let count = crate::model::ParamLayout::new(spec).count();
    format!("preset {preset}: {count} parameters, {}", spec.describe())
}

/// clap parser of a count that must be at least 1: a flag of 0 images, queries, threads or
/// iterations makes no sense, and taking it as 1 would hide the mistake.
pub fn at_least_one() -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::new().range(1..)
}

/// Adapter choice shared by every subcommand that touches the GPU.
#[derive(Args, Clone, Debug, Default)]
pub struct AdapterArgs {
    /// Use only this backend: vulkan, metal, dx12 or gl (default: WGPU_BACKEND, else all).
    #[arg(long)]
    pub backend: Option<String>,
    /// Use the adapter whose name contains this (default: WGPU_ADAPTER_NAME).
    #[arg(long)]
    pub adapter: Option<String>,
    /// Use the software (CPU) adapter, e.g. Mesa's lavapipe.
    #[arg(long)]
    pub software: bool,
    /// Open the device with the adapter's own limits, WebGPU's baseline, or the downlevel
    /// (GL ES class) ones.
    #[arg(long, value_enum, env = "CPC_LIMITS", default_value = "adapter")]
    pub limits: LimitsChoice,
    /// Kernel path: auto (CPU-tuned kernels on a CPU adapter, GPU-tuned ones elsewhere),
    /// gpu or cpu, on any adapter (default: CPC_KERNELS, else auto).
    #[arg(long, value_parser = choice_parser::<Kernels>(&["auto", "gpu", "cpu"]))]
    pub kernels: Option<Kernels>,
    /// Tune the GPU path's tile sizes the first time each shape class runs on this adapter,
    /// remembered in a cache file (`cpc info` shows it), or run the fixed defaults for
    /// reproducible runs (default: CPC_TUNE, else on).
    #[arg(long, value_parser = tune_parser())]
    pub tune: Option<Tune>,
    /// Reductions: auto (subgroup operations where the adapter offers them) or off (the
    /// portable kernels on any adapter) (default: CPC_SUBGROUPS, else auto).
    #[arg(long, value_parser = choice_parser::<Subgroups>(&["auto", "off"]))]
    pub subgroups: Option<Subgroups>,
}

/// clap parser of a choice (`--kernels`, `--subgroups`): the values listed in `--help`,
/// parsed by `T` ([`Kernels`], [`Subgroups`]).
fn choice_parser<T>(
    values: &'static [&'static str],
) -> impl clap::builder::TypedValueParser<Value = T>
where
    T: std::str::FromStr + Clone + Send + Sync + 'static,
    T::Err: std::fmt::Debug,
{
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(values)
        .map(|s| s.parse::<T>().expect("one of the possible values"))
}

/// clap parser of `--tune`: the values listed in `--help`, parsed by [`Tune`].
fn tune_parser() -> impl clap::builder::TypedValueParser<Value = Tune> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(["on", "off"])
        .map(|s| s.parse::<Tune>().expect("one of the possible values"))
}

impl From<&AdapterArgs> for AdapterChoice {
    fn from(a: &AdapterArgs) -> Self {
        AdapterChoice {
            backend: a.backend.clone(),
            name: a.adapter.clone(),
            software: a.software,
            index: None,
            limits: a.limits,
            custom_limits: None,
            kernels: a.kernels,
            tune: a.tune,
            cache_dir: None,
            subgroups: a.subgroups,
        }
    }
}

/// What `embed` and `neighbours` share: the checkpoint's encoder run over every image of a
/// data set. Returns the checkpoint, the set, a description of where it came from, and
/// the features.
pub fn encode_set(
    checkpoint: &CheckpointArgs,
    data: Option<&std::path::Path>,
    format: crate::data::Format,
    split: crate::data::Split,
    limit: Option<usize>,
    on_bad_image: crate::data::OnBadFile,
    adapter: &AdapterArgs,
) -> Result<(
    ModelCheckpoint,
    Box<dyn crate::data::Dataset>,
    String,
    crate::eval::features::Features,
)> {
    let pretrained = checkpoint.load()?;
    let (set, source) = open_eval_data(data, format, split, limit, on_bad_image)?;
    let gpu = crate::gpu::Gpu::new(&adapter.into())?;
    eprintln!("adapter: {}; data: {}", gpu.info.name, set.describe());
    let encoder = crate::eval::Encoder::new(
        &gpu,
        &pretrained.config,
        &pretrained.params,
        checkpoint.batch(&pretrained),
    )?;
    let features = encoder.extract(&gpu, set.as_ref())?;
    Ok((pretrained, set, source, features))
}

/// The checkpoint an evaluation reads, and optionally the model it must hold.
#[derive(Args, Clone, Debug)]
pub struct CheckpointArgs {
    /// A checkpoint written by `cpc pretrain`; the model's configuration is read from it.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Refuse the checkpoint unless its model is this preset's (with --config's overrides).
    #[arg(long)]
    pub preset: Option<String>,
    /// A TOML file of overrides the checkpoint's model must match (on --preset, default tiny).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Images per encoder pass (default: the checkpoint's training batch).
    #[arg(long, value_parser = at_least_one())]
    pub batch: Option<usize>,
}

impl CheckpointArgs {
    /// The configuration --preset and --config ask for, if either was given.
    pub fn expected(&self) -> Result<Option<Config>> {
        let preset = self.preset.as_deref().unwrap_or("tiny");
        match (&self.preset, &self.config) {
            (None, None) => Ok(None),
            (_, Some(path)) => {
                let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
                    path: path.clone(),
                    source,
                })?;
                Config::from_toml_overrides(preset, &text).map(Some)
            }
            (Some(_), None) => Config::preset(preset).map(Some),
        }
    }

    /// Read and check the checkpoint.
    pub fn load(&self) -> Result<ModelCheckpoint> {
        ModelCheckpoint::read(&self.checkpoint, self.expected()?.as_ref())
    }

    /// Images per encoder pass for this checkpoint: at least 1, the flag by its parser and
    /// the checkpoint's batch by its configuration's validation.
    pub fn batch(&self, pretrained: &ModelCheckpoint) -> usize {
        self.batch.unwrap_or(pretrained.config.train.batch as usize)
    }
}
