//! Every kernel against its CPU reference on the software adapter, and every backward by
//! finite differences. One test binary, so the device and pipelines are shared.

mod common;

mod conv2d;
mod elementwise;
mod matmul;
mod shaders;
mod sum_channels;
