//! The tuner's cache: one small JSON file per adapter and driver under the user's cache
//! folder ([`dir`]), holding the tiling chosen for each shape class and what it was chosen
//! from. The file names its adapter (name, vendor, device, driver, driver information,
//! backend) and the tiled shaders it was timed with ([`shaders_version`]); a file for
//! another adapter or other shaders, a corrupt or unreadable one, is a warning and tuning
//! again, never an error. Written whole and atomically (train::atomic) after each class.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::gpu::Shader;
use crate::ops::matmul::Tiling;
use crate::ops::tune::{Choice, ShapeClass};

/// The layout of the file; another number is read as a foreign file.
const FORMAT: u32 = 1;

/// What identifies an adapter and its driver: a change of any of these is another cache.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AdapterKey {
    pub name: String,
    pub vendor: u32,
    pub device: u32,
    pub driver: String,
    pub driver_info: String,
    /// wgpu's backend, as it prints it: Vulkan, Metal, Dx12, Gl.
    pub backend: String,
}

impl AdapterKey {
    pub fn of(info: &wgpu::AdapterInfo) -> AdapterKey {
        AdapterKey {
            name: info.name.clone(),
            vendor: info.vendor,
            device: info.device,
            driver: info.driver.clone(),
            driver_info: info.driver_info.clone(),
            backend: format!("{:?}", info.backend),
        }
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct CacheFile {
    format: u32,
    adapter: AdapterKey,
    /// [`shaders_version`] when the tilings were timed.
    shaders: String,
    classes: Vec<Entry>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Entry {
    class: ShapeClass,
    #[serde(flatten)]
    choice: Choice,
}

/// 64-bit FNV-1a: a hash that stays the same across builds and Rust versions (std's
/// hasher promises neither), for file names and shader versions.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The crate's version and a hash of what a cached tiling depends on: the two tiled
/// shaders' sources and the candidates. A change to either invalidates every cache file.
pub fn shaders_version() -> String {
    let mut text = String::new();
    for shader in [Shader::MatmulTiled, Shader::Conv2dTiled] {
        text.push_str(&shader.source());
    }
    text.push_str(&format!("{:?}", Tiling::CANDIDATES));
    format!(
        "cpc {} shaders {:016x}",
        env!("CARGO_PKG_VERSION"),
        fnv1a(text.as_bytes())
    )
}

/// The cache folder: `asked` (tests), else CPC_CACHE_DIR, else $XDG_CACHE_HOME/cpc, else
/// ~/.cache/cpc (%LOCALAPPDATA%\cpc on Windows, where HOME is usually unset); None where
/// none of these is set.
pub fn dir(asked: Option<&Path>) -> Option<PathBuf> {
    let var = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    asked
        .map(Path::to_path_buf)
        .or_else(|| var("CPC_CACHE_DIR"))
        .or_else(|| {
            var("XDG_CACHE_HOME")
                .filter(|p| p.is_absolute())
                .map(|p| p.join("cpc"))
        })
        .or_else(|| var("HOME").map(|h| h.join(".cache").join("cpc")))
        .or_else(|| var("LOCALAPPDATA").map(|p| p.join("cpc")))
}

/// The file of adapter `key` under `dir`: `tilings-<adapter name>-<hash of the key>.json`.
pub fn file_for(dir: &Path, key: &AdapterKey) -> PathBuf {
    // The name's letters and digits, lower case, in words joined by dashes.
    let slug = key
        .name
        .to_ascii_lowercase()
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join("-");
    let slug: String = slug.chars().take(40).collect();
    let id = serde_json::to_string(key).expect("an adapter key serializes");
    dir.join(format!("tilings-{slug}-{:016x}.json", fnv1a(id.as_bytes())))
}

/// The choices in `path` for adapter `key`, and a warning for each thing that made
/// (part of) it unusable. A missing file is no warning: nothing has been tuned yet.
pub fn read(path: &Path, key: &AdapterKey) -> (BTreeMap<ShapeClass, Choice>, Vec<String>) {
    let mut warnings = Vec::new();
    let again = |why: String| format!("tiling cache {}: {why}; tuning again", path.display());
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (BTreeMap::new(), warnings),
        Err(e) => {
            return (
                BTreeMap::new(),
                vec![again(format!("cannot be read ({e})"))],
            )
        }
    };
    let file: CacheFile = match serde_json::from_str(&text) {
        Ok(f) => f,
        Err(e) => {
            return (
                BTreeMap::new(),
                vec![again(format!("not a tiling cache ({e})"))],
            )
        }
    };
    let foreign = if file.format != FORMAT {
        Some(format!(
            "format {} (this build reads {FORMAT})",
            file.format
        ))
    } else if file.adapter != *key {
        Some(format!(
            "written for another adapter or driver ({} / {} {} / {})",
            file.adapter.name, file.adapter.driver, file.adapter.driver_info, file.adapter.backend
        ))
    } else if file.shaders != shaders_version() {
        Some(format!(
            "written for other shaders ({}; these are {})",
            file.shaders,
            shaders_version()
        ))
    } else {
        None
    };
    if let Some(why) = foreign {
        return (BTreeMap::new(), vec![again(why)]);
    }
    let mut chosen = BTreeMap::new();
    for Entry { class, choice } in file.classes {
        // A tiling the kernels are not tested with (a hand-edited file) never runs.
        if Tiling::CANDIDATES.contains(&choice.tiling) {
            chosen.insert(class, choice);
        } else {
            warnings.push(again(format!(
                "{class} holds {:?}, not a candidate",
                choice.tiling
            )));
        }
    }
    (chosen, warnings)
}

/// Write `chosen` as adapter `key`'s cache file at `path`, creating its folder.
pub fn write(path: &Path, key: &AdapterKey, chosen: &BTreeMap<ShapeClass, Choice>) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|source| crate::error::Error::Io {
            path: parent.to_path_buf(),
            source,
        })?;
    }
    let file = CacheFile {
        format: FORMAT,
        adapter: key.clone(),
        shaders: shaders_version(),
        classes: chosen
            .iter()
            .map(|(class, choice)| Entry {
                class: class.clone(),
                choice: choice.clone(),
            })
            .collect(),
    };
    let json = serde_json::to_string_pretty(&file).expect("a cache file serializes");
    crate::train::atomic::write_atomically(path, |w| w.write_all(json.as_bytes()))
}

/// Lines for `cpc info`: where adapter `key`'s cache file is and the tiling cached for
/// each shape class, or why there is none.
pub fn describe(dir: Option<&Path>, key: &AdapterKey) -> Vec<String> {
    let Some(dir) = dir else {
        return vec!["tilings: no cache folder (CPC_CACHE_DIR, XDG_CACHE_HOME, HOME unset)".into()];
    };
    let path = file_for(dir, key);
    if !path.exists() {
        return vec![format!("tilings: none cached yet ({})", path.display())];
    }
    let (chosen, warnings) = read(&path, key);
    let mut lines = vec![format!(
        "tilings: {} shape classes cached in {}",
        chosen.len(),
        path.display()
    )];
    lines.extend(warnings.into_iter().map(|w| format!("  warning: {w}")));
    lines.extend(
        chosen
            .iter()
            .map(|(class, choice)| format!("  {class} -> {}", choice.describe())),
    );
    lines
}
