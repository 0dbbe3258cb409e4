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
    /// A configuration that cannot be built: names the fields and values.
    #[error("configuration: {0}")]
    Config(String),
    /// A data set that cannot be read as asked: missing or empty folder, wrong file size,
    /// unknown layout, a split the set does not have.
    #[error("{path}: {message}")]
    Data { path: String, message: String },
    /// One image that cannot be decoded or is smaller than the minimum side; readers skip
    /// these under `data::OnBadImage::Skip`.
    #[error("{path}: {message}")]
    BadImage { path: String, message: String },
    #[error("{0}")]
    Other(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Shorthand for a shape error from inside an op.
pub(crate) fn shape_err<T>(kernel: &'static str, message: impl Into<String>) -> Result<T> {
    Err(Error::Shape {
        kernel,
        message: message.into(),
    })
}
