//! One module per kernel family; each plans launches of its shaders/<name>.wgsl, forward and
//! backward, and checks shapes before anything reaches wgpu.
//!
//! Convention (as in llm.c): parameter gradients accumulate (+=), activation gradients are
//! overwritten (=) unless the launch says otherwise.

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
pub mod patches;
pub mod sequences;
pub mod softmax_xent;
pub mod sum_channels;
pub mod transpose;
pub mod tune;

use crate::gpu::{layout_of, UniformLayout};

/// Every uniform struct with its Rust layout, for the test that compares them with naga's.
pub fn uniform_layouts() -> Vec<UniformLayout> {
    vec![
        layout_of::<matmul::MatmulParams>(),
        layout_of::<elementwise::ElementwiseParams>(),
        layout_of::<sum_channels::SumChannelsParams>(),
        layout_of::<layer_norm::LayerNormParams>(),
        layout_of::<mean_pool::MeanPoolParams>(),
        layout_of::<patches::PatchesParams>(),
        layout_of::<adam::AdamParams>(),
        layout_of::<copy_rows::CopyRowsParams>(),
        layout_of::<infonce::InfonceParams>(),
        layout_of::<gru::GruForwardParams>(),
        layout_of::<gru::GruBackwardParams>(),
        layout_of::<conv2d::Conv2dForwardParams>(),
        layout_of::<conv2d::Conv2dBackwardInputParams>(),
        layout_of::<conv2d::Conv2dBackwardWeightParams>(),
        layout_of::<conv2d::WeightWindowsParams>(),
        layout_of::<conv2d::Conv2dTiledParams>(),
        layout_of::<softmax_xent::SoftmaxXentParams>(),
        layout_of::<transpose::TransposeParams>(),
        layout_of::<embedding::EmbeddingParams>(),
        layout_of::<masked_mean::MaskedMeanParams>(),
    ]
}
