//! The `cpc` command line: one module per subcommand.

pub mod debug_step;
pub mod info;
pub mod pretrain;
pub mod profile;

use clap::Args;

use crate::error::{Error, Result};
use crate::gpu::AdapterChoice;
use crate::train::Config;

/// The preset, with the fields of the TOML file at `config` (if any) overriding it.
pub fn load_config(preset: &str, config: Option<&std::path::Path>) -> Result<Config> {
    match config {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
                path: path.to_path_buf(),
                source,
            })?;
            Config::from_toml_overrides(preset, &text)
        }
        None => Config::preset(preset),
    }
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
}

impl From<&AdapterArgs> for AdapterChoice {
    fn from(a: &AdapterArgs) -> Self {
        AdapterChoice {
            backend: a.backend.clone(),
            name: a.adapter.clone(),
            software: a.software,
        }
    }
}
