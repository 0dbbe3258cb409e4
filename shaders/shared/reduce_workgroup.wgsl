// shared/reduce_workgroup.wgsl: the portable reductions of shared/reduce.wgsl, for adapters
// without subgroup operations. A team is one thread; a workgroup sum is a tree in
// workgroup memory (log2(REDUCE_WG) barriers).

struct Lanes {
    @builtin(local_invocation_index) index: u32,
}

// A row kernel's thread is a team of its own: workgroups of ROW_WG teams.
fn team_of(l: Lanes) -> Team {
    return Team(l.index, ROW_WG, 0u, 1u);
}

fn team_max(v: f32) -> f32 {
    return v;
}

fn team_sum(v: f32) -> f32 {
    return v;
}

fn team_sum_u32(v: u32) -> u32 {
    return v;
}

var<workgroup> partial: array<vec2<f32>, REDUCE_WG>;

fn workgroup_sum2(l: Lanes, v: vec2<f32>) -> vec2<f32> {
    partial[l.index] = v;
    workgroupBarrier();
    for (var half = REDUCE_WG / 2u; half > 0u; half >>= 1u) {
        if (l.index < half) {
            partial[l.index] += partial[l.index + half];
        }
        workgroupBarrier();
    }
    let total = partial[0];
    // Every invocation has read the total before a next call overwrites it.
    workgroupBarrier();
    return total;
}
