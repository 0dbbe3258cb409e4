//! Element-wise kernels and their backwards (shaders/elementwise.wgsl):
//! ReLU, residual add, scale, product. out (+)= alpha * f(a, b).

use crate::error::{shape_err, Result};
use crate::gpu::{rel_offset, spread, Gpu, Launch, Shader, Tensor};

crate::uniform_struct! {
    /// WGSL twin: ElementwiseParams in shaders/elementwise.wgsl.
    pub struct ElementwiseParams {
        pub n: u32,
        pub op: u32,
        pub a_offset: u32,
        pub b_offset: u32,
        pub out_offset: u32,
        pub accumulate: u32,
        pub alpha: f32,
        pub _pad: u32,
    }
}

/// The function applied element by element; the numbers are the shader's op codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// max(a, 0)
    Relu = 0,
    /// b where a > 0, else 0 (a: the ReLU's output, b: its output gradient)
    ReluBackward = 1,
    /// a + b
    Add = 2,
    /// a (times alpha)
    Scale = 3,
    /// a * b
    Mul = 4,
}

impl Op {
    fn binary(self) -> bool {
        !matches!(self, Op::Relu | Op::Scale)
    }
}

/// Plan out (+)= alpha * op(a, b). `b` is ignored (pass None) for unary ops.
pub fn launch(
    gpu: &Gpu,
    op: Op,
    a: &Tensor,
    b: Option<&Tensor>,
    out: &Tensor,
    alpha: f32,
    accumulate: bool,
) -> Result<Launch> {
    let kernel = "elementwise";
    let n = out.len();
    let b = match (op.binary(), b) {
        (true, Some(b)) => b,
        (true, None) => return shape_err(kernel, format!("{op:?} needs a second operand")),
        (false, _) => a,
    };
    for (name, t) in [("a", a), ("b", b)] {
        if t.len() != n {
            return shape_err(
                kernel,
                format!(
                    "{op:?}: operand {name} has shape {:?} but out has shape {:?}",
                    t.shape, out.shape
                ),
            );
        }
    }
    let params = ElementwiseParams {
        n: n as u32,
        op: op as u32,
        a_offset: rel_offset(gpu, a),
        b_offset: rel_offset(gpu, b),
        out_offset: rel_offset(gpu, out),
        accumulate: accumulate as u32,
        alpha,
        _pad: 0,
    };
    // Four elements a thread through vec4 loads where the sizes allow (nearly always).
    let vec4 = n > 0
        && n.is_multiple_of(4)
        && [params.a_offset, params.b_offset, params.out_offset]
            .iter()
            .all(|o| o % 4 == 0);
    let (entry, per_thread) = if vec4 { ("main_vec4", 4) } else { ("main", 1) };
    let wg = spread(gpu, kernel, n.div_ceil(256 * per_thread) as u64)?;
    Launch::new(
        gpu,
        Shader::Elementwise,
        entry,
        &[],
        &params,
        &[a, b, out],
        wg,
    )
    .map(|l| {
        let moved = n * (2 + op.binary() as usize + accumulate as usize);
        l.cost(n as u64, moved as u64).reference(move || {
            let mut out = vec![0.0; n];
            crate::cpu::elementwise::launch(
                op,
                &vec![0.5; n],
                &vec![0.5; n],
                &mut out,
                alpha,
                accumulate,
            );
        })
    })
}

/// y = relu(x).
pub fn relu_forward(gpu: &Gpu, x: &Tensor, y: &Tensor) -> Result<Launch> {
    launch(gpu, Op::Relu, x, None, y, 1.0, false)
}

/// dx (+)= dy where y > 0. Saves nothing but the forward's output y.
pub fn relu_backward(
    gpu: &Gpu,
    y: &Tensor,
    dy: &Tensor,
    dx: &Tensor,
    accumulate: bool,
) -> Result<Launch> {
    launch(gpu, Op::ReluBackward, y, Some(dy), dx, 1.0, accumulate)
}

/// y = a + b (residual add). Its backward sends dy unchanged to both inputs: [`scale`]
/// with alpha 1, accumulating into each input's gradient.
pub fn add(gpu: &Gpu, a: &Tensor, b: &Tensor, y: &Tensor) -> Result<Launch> {
    launch(gpu, Op::Add, a, Some(b), y, 1.0, false)
}

/// y (+)= alpha * x. Also the backward of itself: dx (+)= alpha * dy.
pub fn scale(gpu: &Gpu, x: &Tensor, y: &Tensor, alpha: f32, accumulate: bool) -> Result<Launch> {
    launch(gpu, Op::Scale, x, None, y, alpha, accumulate)
}
