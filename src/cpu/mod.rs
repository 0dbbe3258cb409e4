//! Plain-Rust references of every kernel, under the names of the ops they mirror, written
//! for clarity (f64 accumulation where sums are long). Tests compare the GPU against these
//! and check their backwards by finite differences.

pub mod adam;
pub mod conv2d;
pub mod copy_rows;
pub mod elementwise;
pub mod embedding;
pub mod gru;
pub mod infonce;
pub mod layer_norm;
pub mod masked_mean;
pub mod matmul;
pub mod mean_pool;
pub mod model;
pub mod patches;
pub mod probe;
pub mod softmax_xent;
pub mod sum_channels;
pub mod transpose;
