// shared/reduce_subgroup.wgsl: the reductions of shared/reduce.wgsl with subgroup
// operations (wgpu's SUBGROUP feature). A team is one subgroup; a workgroup sum adds within
// each subgroup, then across the subgroups' sums through workgroup memory (two barriers,
// however large the workgroup).
//
// No `enable subgroups;`: naga 30 rejects the directive as not yet implemented
// (gfx-rs/wgpu#5555) and allows the operations where the device has the feature instead.
//
// No subgroup size is assumed, nor that subgroups are full: a team counts and ranks its
// active invocations itself, so a workgroup smaller than the subgroup (64 invocations on an
// adapter with subgroups of 128) or not a multiple of it still walks every element of its
// row once; subgroup_size and subgroup_invocation_id would count lanes that do not run.

struct Lanes {
    @builtin(local_invocation_index) index: u32,
    @builtin(subgroup_id) subgroup: u32,
    @builtin(num_subgroups) subgroups: u32,
}

// A subgroup is a team; its members are ranked among the active invocations. Call from
// control flow uniform in the subgroup.
fn team_of(l: Lanes) -> Team {
    return Team(l.subgroup, l.subgroups, subgroupExclusiveAdd(1u), subgroupAdd(1u));
}

fn team_max(v: f32) -> f32 {
    return subgroupMax(v);
}

fn team_sum(v: f32) -> f32 {
    return subgroupAdd(v);
}

fn team_sum_u32(v: u32) -> u32 {
    return subgroupAdd(v);
}

// One sum per subgroup: as many as a REDUCE_WG workgroup has subgroups of the smallest
// size (4).
var<workgroup> partial: array<vec2<f32>, REDUCE_WG / 4u>;

fn workgroup_sum2(l: Lanes, v: vec2<f32>) -> vec2<f32> {
    let team = team_of(l);
    let s = subgroupAdd(v);
    if (team.lane == 0u) {
        partial[team.id] = s;
    }
    workgroupBarrier();
    // Every subgroup adds up all the subgroups' sums, its members taking every team.size-th:
    // each gets the total without a second barrier, the same in every full subgroup. Each
    // invocation reading them all in turn was up to 2x slower on lavapipe.
    var t = vec2<f32>(0.0);
    for (var i = team.lane; i < team.count; i += team.size) {
        t += partial[i];
    }
    let total = subgroupAdd(t);
    // Every invocation has read the sums before a next call overwrites them.
    workgroupBarrier();
    return total;
}
