//! Plain-Rust references of every kernel, under the names of the ops they mirror, written
//! for clarity (f64 accumulation where sums are long). Tests compare the GPU against these
//! and check their backwards by finite differences.

pub mod conv2d;
pub mod elementwise;
pub mod matmul;
pub mod sum_channels;
