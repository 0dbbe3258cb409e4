#!/usr/bin/env bash
# The measurements issue 10 asks of a machine with a real GPU, in one run:
#
#   scripts/gpu-check.sh [--quick] [OUT]
#
# builds in release, then writes into OUT (default runs/gpu-check-<date>):
#   info.txt                 `cpc info`: adapters, the one chosen, its kernel path
#   matmul.txt               the matrix product at 1024^3, 2048^3 and 4096^3 (benches/kernels.rs)
#   conv2d.txt               each convolution (forward, input and weight gradient) at every
#                            layer shape of the paper preset
#   profile-<preset>.txt     `cpc profile` of the laptop and paper presets at batch 16
#   summary.txt              the GFLOP/s of every bench entry, each profile's whole step and
#                            GPU idle time, and the targets to read them against
#
# PEAK_GFLOPS=X (the adapter's fp32 peak, from its data sheet) is handed to `cpc profile
# --peak-gflops`; CPC_KERNELS, WGPU_BACKEND and WGPU_ADAPTER_NAME reach every command as
# usual. --quick runs every command on small shapes (CPC_BENCH_QUICK=1, the tiny preset at
# batch 2, one step): a check on the software adapter that the script works, not a
# measurement.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

quick=0
out=""
for arg in "$@"; do
    case "$arg" in
        --quick) quick=1 ;;
        -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "gpu-check.sh: unknown option $arg (use --quick, OUT)" >&2; exit 2 ;;
        *) out="$arg" ;;
    esac
done
out="${out:-runs/gpu-check-$(date +%Y-%m-%d-%H%M%S)}"
mkdir -p "$out"

if [ "$quick" = 1 ]; then
    export CPC_BENCH_QUICK=1
    squares='matmul/square\..*/(128|256)x'
    convs='conv2d/.*/tiny_stem/'
    presets="tiny"
    profile_args=(--batch 2 --steps 1 --warmup 0)
else
    squares='matmul/square\..*/(1024|2048|4096)x'
    convs='conv2d/.*/paper_'
    presets="laptop paper"
    profile_args=(--batch 16 --steps 5 --warmup 2)
fi
if [ -n "${PEAK_GFLOPS:-}" ]; then
    profile_args+=(--peak-gflops "$PEAK_GFLOPS")
fi
cpc="${CARGO_TARGET_DIR:-target}/release/cpc"

# Each step's command goes first into its file, then everything it prints.
step() {
    local file="$out/$1"
    shift
    local cmd
    cmd="$(printf '%q ' "$@")"
    echo "== $cmd> $file"
    { echo "\$ $cmd"; "$@"; } >"$file" 2>&1 || {
        echo "gpu-check.sh: failed, see $file" >&2
        tail -n 20 "$file" >&2
        exit 1
    }
}

step build.txt cargo build --release --bins --benches
step info.txt "$cpc" info
step matmul.txt cargo bench --bench kernels -- "$squares"
step conv2d.txt cargo bench --bench kernels -- "$convs"
for p in $presets; do
    step "profile-$p.txt" "$cpc" profile --preset "$p" "${profile_args[@]}"
done

# Criterion prints an entry's name on a line of its own (or before its "time:" when short),
# then "thrpt: [low median high unit]": keep the name and the median. A second "thrpt:"
# follows when an earlier run left figures to compare with (the change in %): skip it.
throughput() {
    awk '/^(matmul|conv2d)\// { name = $1 }
         /thrpt:/ && name != "" { gsub(/[\[\]]/, ""); print "  " name ": " $4 " " $5; name = "" }' "$1"
}
{
    echo "gpu-check $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')$([ "$quick" = 1 ] && echo ', QUICK: small shapes, not a measurement')"
    grep -m1 '^using' "$out/info.txt" || true
    grep -m1 '^kernels' "$out/info.txt" || true
    echo
    echo "matrix product (Gelem/s = GFLOP/s):"
    throughput "$out/matmul.txt"
    echo "convolutions (GFLOP/s):"
    throughput "$out/conv2d.txt"
    for p in $presets; do
        echo
        echo "profile $p:"
        grep -E '^(kernels|whole step|share of|GPU idle)' "$out/profile-$p.txt" | sed 's/^/  /'
    done
    echo
    echo "targets (issue 10): matmul at 2048^3 >= 50 % of the fp32 peak; each convolution within"
    echo "1.5x of the matmul's GFLOP/s at the same work; GPU idle < 5 % of a step."
} >"$out/summary.txt"
cat "$out/summary.txt"
echo "all output in $out"
