//! Every kernel against its CPU reference on the software adapter, and every backward by
//! finite differences. One test binary, so the device and pipelines are shared.

#[path = "../common/mod.rs"]
mod shared;

mod common;

mod adam;
mod conv2d;
mod copy_rows;
mod elementwise;
mod embedding;
mod gru;
mod infonce;
mod layer_norm;
mod masked_mean;
mod matmul;
mod mean_pool;
mod patches;
mod shaders;
mod softmax_xent;
mod sum_channels;
mod translate;
mod transpose;
mod tune;
