//! The PyTorch hand-off (python/cpc_torch) against this build's `cpc` binary: runs the
//! Python suite python/tests/ (unittest), which pretrains the tiny, audio-tiny and
//! text-tiny presets for 2 steps, compares the torch module's loss, activations and every
//! gradient with `cpc debug-step`'s, and loads torch-written files back into debug-step and
//! `pretrain --resume` (its module doc states the tolerances).
//!
//! The interpreter is `$CPC_PYTHON` (default `python3`), which must import torch, numpy and
//! safetensors; `.ci/run` makes a venv with them and sets it. The package is tested from
//! this checkout's python/ (PYTHONPATH), not from an installed copy. Without torch the test
//! fails where CI is set and says why and skips elsewhere.

use std::path::Path;
use std::process::Command;

#[test]
fn cpc_torch_matches_debug_step_and_loads_back_into_cpc() {
    let python = std::env::var("CPC_PYTHON").unwrap_or_else(|_| "python3".into());
    let probe = Command::new(&python)
        .args([
            "-c",
            "import torch, numpy, safetensors; print(torch.__version__)",
        ])
        .output();
    let version = match probe {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_string(),
        other => {
            let why = match other {
                Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_string(),
                Err(e) => e.to_string(),
            };
            let msg = format!(
                "{python} cannot import torch, numpy and safetensors ({why}); set CPC_PYTHON to \
                 an interpreter that can (`.ci/run` makes one: pip install ./python)"
            );
            assert!(std::env::var_os("CI").is_none(), "{msg}, and CI is set");
            eprintln!("{msg}; the PyTorch tests are skipped");
            return;
        }
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(&python)
        .args(["-m", "unittest", "discover", "-v", "-s"])
        .arg(root.join("python/tests"))
        .env("PYTHONPATH", root.join("python"))
        .env("CPC_BIN", env!("CARGO_BIN_EXE_cpc"))
        .env("CPC_TUNE", "off")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("run the Python tests");
    let log = String::from_utf8_lossy(&out.stderr);
    eprintln!("torch {version}:\n{log}");
    assert!(out.status.success(), "the PyTorch tests failed:\n{log}");
    // Tests were found, and every one ran: a skip (CPC_BIN unset) would not be a pass.
    let ran = (log.lines()).find_map(|l| {
        l.strip_prefix("Ran ")?
            .split(' ')
            .next()?
            .parse::<usize>()
            .ok()
    });
    assert!(ran.is_some_and(|n| n > 0), "no PyTorch test ran:\n{log}");
    assert!(
        !log.contains("skipped"),
        "a PyTorch test was skipped:\n{log}"
    );
}
