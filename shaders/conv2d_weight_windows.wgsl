// conv2d_weight_windows.wgsl: copies conv weights [Cout, Cin, KH, KW] into windows of
// `window` floats, each bound whole by conv2d_forward (rows: output channels, columns: input
// channels) or conv2d_backward_input (transposed: rows are input channels, columns output
// channels). On a CPU adapter the windows are 16384 floats (64 KiB), bound as uniform
// buffers: on lavapipe a uniform load costs a tenth of a storage load, and every thread of
// those kernels' workgroups reads the same weight at once. On a GPU there is one window
// holding every row and column, bound as storage (ops::conv2d::WeightBinding).
//
// Window win = row_block * col_ranges + col_range holds rows row_block * rows .. + rows and
// columns col_range * cols .. + cols, as [row][column][ky][kx], rows cols * KH * KW (kk) floats
// apart; entries past the last row or column (and past rows * cols * kk) are zero.
//
// Bindings: 0 WeightWindowsParams (uniform), 1 weight [Cout, Cin, KH, KW] (read),
// 2 windows [windows, window] (read_write).
// Dispatch: one thread per window float, workgroups of 256, spread over x and y.
// Writes: overwrites windows.

// Rust twin: ops::conv2d::WeightWindowsParams.
struct WeightWindowsParams {
    cout: u32,
    cin: u32,
    kk: u32,
    w_offset: u32,
    rows: u32,
    cols: u32,
    col_ranges: u32,
    windows: u32,
    transpose: u32,
    windows_offset: u32,
    window: u32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> p: WeightWindowsParams;
@group(0) @binding(1) var<storage, read> weight: array<f32>;
@group(0) @binding(2) var<storage, read_write> windows: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let e = (wid.x + wid.y * nwg.x) * 256u + li;
    if (e >= p.windows * p.window) {
        return;
    }
    let win = e / p.window;
    let i = e - win * p.window;
    let row_len = p.cols * p.kk;
    let r = i / row_len;
    let j = i - r * row_len;
    let row = (win / p.col_ranges) * p.rows + r;
    let col = (win % p.col_ranges) * p.cols + j / p.kk;
    var co = row;
    var ci = col;
    if (p.transpose != 0u) {
        co = col;
        ci = row;
    }
    var v = 0.0;
    if (r < p.rows && co < p.cout && ci < p.cin) {
        v = weight[p.w_offset + (co * p.cin + ci) * p.kk + j % p.kk];
    }
    windows[p.windows_offset + e] = v;
}
