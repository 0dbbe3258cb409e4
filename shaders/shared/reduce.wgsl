// shared/reduce.wgsl: what the reduction kernels (infonce, softmax_xent, sum_channels, adam,
// layer_norm) share. The host prepends it to each of them with one of two implementations
// (gpu::kernels::Shader::source), which define the same names with the same meaning:
//   shared/reduce_workgroup.wgsl  portable, for adapters without subgroups (GL, many
//                                 browsers): a row per thread, sums as trees in workgroup
//                                 memory.
//   shared/reduce_subgroup.wgsl   subgroup operations (wgpu's SUBGROUP feature): a row per
//                                 subgroup, sums within each subgroup, then across them.
// Each defines:
//   struct Lanes    an entry point's input: where the invocation sits in its workgroup
//                   (`index`, its local_invocation_index, in both).
//   fn team_of(l: Lanes) -> Team   the team of a row kernel's invocation (below).
//   fn team_max(v: f32) -> f32, team_sum(v: f32) -> f32, team_sum_u32(v: u32) -> u32:
//                   the max or sum of v over the team, to every member. Call with the whole
//                   team (control flow uniform in the team).
//   fn workgroup_sum2(l: Lanes, v: vec2<f32>) -> vec2<f32>: the sum of v over a workgroup of
//                   REDUCE_WG, to every invocation. Call from uniform control flow.
// Neither assumes a subgroup size: any size wgpu may report (4 to 128) gives the same sums,
// and a subgroup the workgroup fills only in part still counts each invocation once.

// Invocations in a workgroup of the kernels that sum over their workgroup.
const REDUCE_WG: u32 = 256u;
// Invocations in a workgroup of the row kernels (infonce_rows, softmax_xent): one row per
// team. Rust twin: gpu::kernels::ROW_WORKGROUP.
const ROW_WG: u32 = 64u;
// Rows one workgroup of a row kernel takes, set by the host (Gpu::rows_per_workgroup): as
// many as the workgroup has teams. Any value >= 1 computes the same; teams past the rows
// idle, teams fewer than the rows take several each.
override ROWS_PER_GROUP: u32 = ROW_WG;

// The team that shares a row: there are `count` teams in the workgroup and this is number
// `id`; it has `size` members and this invocation is member `lane`, so a team walks its row
// as j = lane, lane + size, ...
struct Team {
    id: u32,
    count: u32,
    lane: u32,
    size: u32,
}

// The rows [first, end) of a row kernel's workgroup `group` among `rows`; its team `id`
// takes rows first + id, first + id + count, ... below end.
fn group_rows(group: u32, rows: u32) -> vec2<u32> {
    let first = group * ROWS_PER_GROUP;
    return vec2<u32>(first, min(first + ROWS_PER_GROUP, rows));
}

// The sum of v over a workgroup of REDUCE_WG, to every invocation (see workgroup_sum2).
fn workgroup_sum(l: Lanes, v: f32) -> f32 {
    return workgroup_sum2(l, vec2<f32>(v, 0.0)).x;
}
