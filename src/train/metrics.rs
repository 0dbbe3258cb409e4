//! `metrics.jsonl`: one JSON object per logged step, one line each, flushed as written, so a
//! run that dies keeps every line it logged and `tail -f` shows progress.
//!
//! A row (field names are the JSON keys):
//!
//! ```json
//! {"step":120,"loss":5.91,"accuracy":0.031,"loss_k":[5.8,6.0],"accuracy_k":[0.04,0.022],
//!  "images_per_second":210.5,"lr":0.001,"grad_norm":1.7}
//! ```
//!
//! `loss_k[k]` and `accuracy_k[k]` belong to the k-th prediction offset (offset
//! `prediction_skip + k`). `grad_norm` and `probe_top1` are written only when present.
//! A NaN or infinite value is written as `null` (JSON has no NaN) and read back as NaN.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};

use super::atomic::write_atomically;
use crate::error::{io_err, Error, Result};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricsRow {
    /// 0-based optimiser step this row describes.
    pub step: u64,
    /// Mean of `loss_k` over the offsets.
    #[serde(deserialize_with = "f32_or_nan")]
    pub loss: f32,
    /// Mean of `accuracy_k` over the offsets.
    #[serde(deserialize_with = "f32_or_nan")]
    pub accuracy: f32,
    /// InfoNCE loss per prediction offset.
    #[serde(deserialize_with = "vec_f32_or_nan")]
    pub loss_k: Vec<f32>,
    /// Share of queries whose true candidate scored highest, per prediction offset.
    #[serde(deserialize_with = "vec_f32_or_nan")]
    pub accuracy_k: Vec<f32>,
    /// Training throughput over the steps since the previous row.
    #[serde(deserialize_with = "f32_or_nan")]
    pub images_per_second: f32,
    /// Learning rate used at this step.
    #[serde(deserialize_with = "f32_or_nan")]
    pub lr: f32,
    /// Global gradient norm before clipping.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "opt_f32_or_nan"
    )]
    pub grad_norm: Option<f32>,
    /// Linear-probe top-1 accuracy, on the rows where a probe ran.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "opt_f32_or_nan"
    )]
    pub probe_top1: Option<f32>,
}

/// JSON `null` (how serde_json writes NaN and infinities) reads back as NaN.
fn f32_or_nan<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<f32, D::Error> {
    Ok(Option::<f32>::deserialize(d)?.unwrap_or(f32::NAN))
}

fn vec_f32_or_nan<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Vec<f32>, D::Error> {
    let values = Vec::<Option<f32>>::deserialize(d)?;
    Ok(values.into_iter().map(|v| v.unwrap_or(f32::NAN)).collect())
}

/// For optional fields: absent is `None`, `null` is `Some(NaN)` (it was written, as NaN).
fn opt_f32_or_nan<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<f32>, D::Error> {
    Ok(Some(Option::<f32>::deserialize(d)?.unwrap_or(f32::NAN)))
}

fn metrics_err(path: &Path, message: impl Into<String>) -> Error {
    Error::Metrics {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Appends rows to a metrics.jsonl file, one flushed line per row.
pub struct MetricsWriter {
    path: PathBuf,
    file: File,
}

impl MetricsWriter {
    /// Opens the log at `path` (usually `<out>/metrics.jsonl`).
    ///
    /// - `resume_at = None`: a fresh run; an existing file is truncated.
    /// - `resume_at = Some(step)`: a run resumed from the checkpoint of `step`, written after
    ///   steps 0..step - 1: the run trains step `step` next. Rows with `row.step >= step`
    ///   were logged after that checkpoint and will be logged again, so they are dropped (the file is rewritten atomically, see [`super::atomic`]); new rows
    ///   are appended after the rest. A missing file is created.
    pub fn create(path: impl AsRef<Path>, resume_at: Option<u64>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let mut options = OpenOptions::new();
        match resume_at {
            None => {
                options.write(true).create(true).truncate(true);
            }
            Some(step) => {
                if path.exists() {
                    let kept: Vec<MetricsRow> = read_metrics(&path)?
                        .into_iter()
                        .filter(|row| row.step < step)
                        .collect();
                    write_atomically(&path, |w| {
                        for row in &kept {
                            write_row(w, row)?;
                        }
                        Ok(())
                    })?;
                }
                options.append(true).create(true);
            }
        }
        let file = options.open(&path).map_err(io_err(&path))?;
        Ok(Self { path, file })
    }

    /// Appends one row as one line and flushes it to the operating system.
    pub fn write(&mut self, row: &MetricsRow) -> Result<()> {
        write_row(&mut self.file, row)
            .and_then(|()| self.file.flush())
            .map_err(io_err(&self.path))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// One row as one line. The line is built first and written with one call, so a crash
/// leaves at most one unterminated line at the end of the file.
fn write_row(w: &mut dyn Write, row: &MetricsRow) -> io::Result<()> {
    let mut line = serde_json::to_string(row).map_err(io::Error::other)?;
    line.push('\n');
    w.write_all(line.as_bytes())
}

/// Reads every row of a metrics.jsonl file. Blank lines are skipped; a last line that has no
/// newline and does not parse (a run killed while writing it) is ignored; any other line that
/// does not parse is an error naming the file and the line number.
pub fn read_metrics(path: impl AsRef<Path>) -> Result<Vec<MetricsRow>> {
    let path = path.as_ref();
    let file = File::open(path).map_err(io_err(path))?;
    let mut reader = BufReader::new(file);
    let mut rows = Vec::new();
    let mut line = String::new();
    let mut number = 0;
    loop {
        line.clear();
        let read = reader.read_line(&mut line).map_err(io_err(path))?;
        if read == 0 {
            break;
        }
        number += 1;
        let terminated = line.ends_with('\n');
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        match serde_json::from_str::<MetricsRow>(text) {
            Ok(row) => rows.push(row),
            Err(_) if !terminated => break,
            Err(e) => return Err(metrics_err(path, format!("line {number}: {e}"))),
        }
    }
    Ok(rows)
}
