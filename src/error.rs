//! The crate's error type: every failure names what it was about (kernel, shape, limit, file).

use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    /// No adapter matched; the message says how to get the software one.
    #[error("{0}")]
    NoAdapter(String),
    #[error("could not open a device on adapter {adapter}: {source}")]
    RequestDevice {
        adapter: String,
        #[source]
        source: wgpu::RequestDeviceError,
    },
    /// A launch whose buffers do not fit the shape it was asked for.
    #[error("{kernel}: {message}")]
    Shape {
        kernel: &'static str,
        message: String,
    },
    /// A launch that would exceed a device limit.
    #[error("{kernel}: {message} (device limit {limit} = {value})")]
    Limit {
        kernel: &'static str,
        message: String,
        limit: &'static str,
        value: u64,
    },
    /// wgpu reported a validation or out-of-memory error for something we submitted.
    #[error("GPU error in {what}: {message}")]
    Gpu { what: String, message: String },
    /// A data set that cannot be read as asked: missing or empty folder, wrong file size,
    /// unknown layout, a split the set does not have.
    #[error("{path}: {message}")]
    Data { path: String, message: String },
    /// One file that cannot be decoded: an image (or one smaller than the minimum side), an
    /// audio file (or one over its sample limit). Readers skip these under
    /// `data::OnBadFile::Skip`. (The name is from before audio; it covers every file.)
    #[error("{path}: {message}")]
    BadImage { path: String, message: String },
    /// A file operation that failed, with the file it was about.
    #[error("{}: {source}", path.display())]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A checkpoint that could not be written or read (missing, not safetensors, wrong dtype,
    /// from another configuration).
    #[error("checkpoint {}: {message}", path.display())]
    Checkpoint {
        path: std::path::PathBuf,
        message: String,
    },
    /// A metrics log (metrics.jsonl) that could not be read or rewritten.
    #[error("metrics log {}: {message}", path.display())]
    Metrics {
        path: std::path::PathBuf,
        message: String,
    },
    /// A plot that could not be drawn or written.
    #[error("plot {}: {message}", path.display())]
    Plot {
        path: std::path::PathBuf,
        message: String,
    },
    /// A configuration that does not parse or does not make sense (unknown preset or field,
    /// crop that gives no even patch size, ...).
    #[error("configuration: {0}")]
    Config(String),
    /// Training stopped because the loss, or the parameters after an update, stopped being
    /// numbers. `checkpoint`: the newest checkpoint this run knows good (path, step), if any.
    #[error("{what} became NaN or infinite at step {step}; stopped. {}", last_good(.checkpoint))]
    NonFinite {
        step: u64,
        what: String,
        checkpoint: Option<(std::path::PathBuf, u64)>,
    },
    #[error("{0}")]
    Other(String),
}

fn last_good(checkpoint: &Option<(std::path::PathBuf, u64)>) -> String {
    match checkpoint {
        Some((path, step)) => format!(
            "The last good checkpoint is {} (step {step}); `--resume` continues from it.",
            path.display()
        ),
        None => "No checkpoint was written before it.".into(),
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Shorthand for an I/O error that names its file.
pub(crate) fn io_err(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Shorthand for a shape error from inside an op.
pub(crate) fn shape_err<T>(kernel: &'static str, message: impl Into<String>) -> Result<T> {
    Err(Error::Shape {
        kernel,
        message: message.into(),
    })
}
