//! One module per kernel family; each plans launches of its shaders/<name>.wgsl, forward and
//! backward, and checks shapes before anything reaches wgpu.
//!
//! Convention (as in llm.c): parameter gradients accumulate (+=), activation gradients are
//! overwritten (=) unless the launch says otherwise.

pub mod conv2d;
pub mod elementwise;
pub mod matmul;
pub mod sum_channels;

use crate::gpu::{layout_of, UniformLayout};

/// Every uniform struct with its Rust layout, for the test that compares them with naga's.
pub fn uniform_layouts() -> Vec<UniformLayout> {
    vec![
        layout_of::<matmul::MatmulParams>(),
        layout_of::<elementwise::ElementwiseParams>(),
        layout_of::<sum_channels::SumChannelsParams>(),
        layout_of::<conv2d::Conv2dForwardParams>(),
        layout_of::<conv2d::Conv2dBackwardInputParams>(),
        layout_of::<conv2d::Conv2dBackwardWeightParams>(),
    ]
}
