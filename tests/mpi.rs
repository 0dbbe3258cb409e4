//! Data-parallel runs over MPI (feature `mpi`): `mpirun -np N` on this machine.
//!
//! The ranks of the collective tests are this very test binary, started by mpirun with
//! `rank_main --exact --ignored` and the role in CPC_MPI_ROLE: `rank_main` is a no-op
//! (ignored) test otherwise. Run as root, OpenMPI needs OMPI_ALLOW_RUN_AS_ROOT(_CONFIRM);
//! `--oversubscribe` lets it start more ranks than the machine has cores.
#![cfg(feature = "mpi")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use std::sync::atomic::AtomicBool;

use cpc::dist::Ranks;
use cpc::train::model_checkpoint::ModelCheckpoint;
use cpc::train::pretrain::{pretrain, CHECKPOINT};
use cpc::train::{read_metrics, Config};
use cpc::Error;

mod common;
use common::{gpu, pretrain_options, run, tiny_run, TestDir};

/// `mpirun -np <np> <program> <args>` with `env`, killed (and the test failed) if it runs
/// past `limit`: a hang is a failure here, not a stuck CI.
fn mpirun(
    np: usize,
    program: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    limit: Duration,
) -> Output {
    let mut cmd = Command::new("mpirun");
    cmd.args(["--oversubscribe", "-np", &np.to_string()])
        .arg(program)
        .args(args)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .spawn()
        .expect("cannot start mpirun: is openmpi-bin installed?");
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "mpirun -np {np} still running after {limit:?} (a hang); stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// This test binary run as `np` ranks in `role`, writing under `out`.
fn ranks_of_this_test(np: usize, role: &str, out: &Path, limit: Duration) -> Output {
    ranks_with(
        np,
        &[
            ("CPC_MPI_ROLE", role),
            ("CPC_MPI_OUT", out.to_str().unwrap()),
        ],
        limit,
    )
}

fn ranks_with(np: usize, env: &[(&str, &str)], limit: Duration) -> Output {
    let exe = std::env::current_exe().unwrap();
    mpirun(
        np,
        &exe,
        &[
            "rank_main",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ],
        env,
        limit,
    )
}

/// The run the pretraining tests make: tiny at batch 4, `steps` steps of `micros`
/// micro-batches, a checkpoint after every step.
fn tiny(steps: u64, micros: u32) -> Config {
    let mut config = tiny_run(4, steps);
    config.train.accumulate = micros;
    config.train.checkpoint_every = 1;
    config
}

/// STEPS of the pretraining tests, and where the interrupted run stops.
const STEPS: u64 = 3;
const STOP_AT: u64 = 2;

/// Rank `rank`'s values: magnitudes over 12 decades and both signs, so that sums in
/// different orders differ in their last bits.
fn rank_values(rank: usize, len: usize) -> Vec<f32> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ (rank as u64 + 1).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mantissa = (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
            let decade = ((x >> 8) % 13) as i32 - 6;
            mantissa * 10f32.powi(decade)
        })
        .collect()
}

/// Lengths summed: a few values (MPI's small-message algorithms) and many (its segmented,
/// large-message ones).
const LENGTHS: [usize; 2] = [7, 300_001];

fn rank_file(out: &Path, rank: usize, len: usize) -> PathBuf {
    out.join(format!("rank{rank}-{len}.f32"))
}

fn read_f32(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

/// One rank's part, as CPC_MPI_ROLE says; nothing when mpirun did not start it.
#[test]
#[ignore = "a rank of the tests below, started by mpirun"]
fn rank_main() {
    let Ok(role) = std::env::var("CPC_MPI_ROLE") else {
        return;
    };
    let out = PathBuf::from(std::env::var("CPC_MPI_OUT").unwrap());
    let ranks = std::sync::Arc::new(Ranks::from_env().unwrap());
    let (rank, size) = (ranks.rank(), ranks.size());
    match role.as_str() {
        "sum" => {
            for len in LENGTHS {
                let mut values = rank_values(rank, len);
                ranks.all_reduce_sum(&mut values).unwrap();
                let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
                std::fs::write(rank_file(&out, rank, len), bytes).unwrap();
            }
            let none = ranks.any(false).unwrap();
            let one = ranks.any(rank == size - 1).unwrap();
            std::fs::write(out.join(format!("any{rank}")), format!("{none} {one}")).unwrap();
            ranks.agree("a value", 7).unwrap();
            let e = ranks.agree("a rank's value", rank as u64).unwrap_err();
            std::fs::write(out.join(format!("agree{rank}")), e.to_string()).unwrap();
        }
        "fail" => {
            // Rank 1 fails after one sum; rank 0 waits for sums that never come.
            let mut values = vec![1.0f32; 16];
            ranks.all_reduce_sum(&mut values).unwrap();
            if rank == 1 {
                let failed: cpc::Result<()> = Err(Error::Other("the step went wrong".into()));
                ranks.abort_on_error(failed).unwrap();
                unreachable!("abort_on_error returned on a failing rank of two");
            }
            loop {
                ranks.all_reduce_sum(&mut values).unwrap();
            }
        }
        "killed" => {
            let mut values = vec![1.0f32; 16];
            ranks.all_reduce_sum(&mut values).unwrap();
            if rank == 1 {
                let pid = std::process::id().to_string();
                let _ = Command::new("kill").args(["-KILL", &pid]).status();
                std::thread::sleep(Duration::from_secs(60));
            }
            loop {
                ranks.all_reduce_sum(&mut values).unwrap();
            }
        }
        "pretrain" => {
            // tiny for STEPS steps (stopped at CPC_MPI_STOP_AT, resumed with CPC_MPI_RESUME).
            let mut opts = pretrain_options(tiny(STEPS, 1), &out);
            opts.stop_at = std::env::var("CPC_MPI_STOP_AT")
                .ok()
                .map(|s| s.parse().unwrap());
            opts.resume = std::env::var_os("CPC_MPI_RESUME").is_some();
            opts.ranks = Some(ranks.clone());
            let run = pretrain(gpu(), &opts, &AtomicBool::new(false));
            ranks.abort_on_error(run).unwrap();
        }
        other => panic!("unknown CPC_MPI_ROLE {other:?}"),
    }
}

/// Every rank ends with the same bits, the element-wise sum (exact for two ranks, where
/// a + b is one rounding in any order; within rounding of the f64 sum for three); `any`
/// is false when no rank raises its flag and true on every rank when one does; `agree`
/// passes a value every rank has and fails on every rank, naming the range, otherwise.
#[test]
fn every_rank_ends_with_the_same_sum() {
    for np in [2, 3] {
        let out = tempfile::tempdir().unwrap();
        let run = ranks_of_this_test(np, "sum", out.path(), Duration::from_secs(120));
        assert!(
            run.status.success(),
            "mpirun -np {np} failed: {}",
            String::from_utf8_lossy(&run.stderr)
        );
        for len in LENGTHS {
            let on: Vec<Vec<f32>> = (0..np)
                .map(|r| read_f32(&rank_file(out.path(), r, len)))
                .collect();
            let parts: Vec<Vec<f32>> = (0..np).map(|r| rank_values(r, len)).collect();
            for (r, values) in on.iter().enumerate() {
                assert_eq!(values.len(), len);
                let same = values
                    .iter()
                    .zip(&on[0])
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "np {np}, {len} values: rank {r} differs from rank 0");
            }
            for (i, &got) in on[0].iter().enumerate() {
                if np == 2 {
                    assert_eq!(
                        got.to_bits(),
                        (parts[0][i] + parts[1][i]).to_bits(),
                        "value {i}"
                    );
                } else {
                    let exact: f64 = parts.iter().map(|p| p[i] as f64).sum();
                    let scale: f64 = parts.iter().map(|p| (p[i] as f64).abs()).sum();
                    assert!(
                        (got as f64 - exact).abs() <= 4.0 * f32::EPSILON as f64 * scale,
                        "np {np}, value {i}: {got} against {exact}"
                    );
                }
            }
        }
        for r in 0..np {
            let any = std::fs::read_to_string(out.path().join(format!("any{r}"))).unwrap();
            assert_eq!(any, "false true", "rank {r} of {np}");
            let agree = std::fs::read_to_string(out.path().join(format!("agree{r}"))).unwrap();
            let told = format!("disagree on a rank's value: rank {r} has {r:#x}, the ranks range from 0x0 to {:#x}", np - 1);
            assert!(agree.contains(&told), "rank {r} of {np}: {agree}");
        }
    }
}

/// A rank whose work fails ends the whole run: mpirun exits non-zero, promptly, with the
/// failing rank's message, though rank 0 was waiting in a collective for it.
#[test]
fn a_failing_rank_ends_every_rank() {
    let out = tempfile::tempdir().unwrap();
    let run = ranks_of_this_test(2, "fail", out.path(), Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "mpirun succeeded: {stderr}");
    assert!(
        stderr.contains("error on rank 1 of 2: the step went wrong; ending every rank"),
        "{stderr}"
    );
}

/// A rank killed from outside ends the run too: mpirun notices and kills the rest.
#[test]
fn a_killed_rank_ends_every_rank() {
    let out = tempfile::tempdir().unwrap();
    let run = ranks_of_this_test(2, "killed", out.path(), Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "mpirun succeeded: {stderr}");
    assert!(
        stderr.contains("rank 1") && stderr.contains("signal 9"),
        "{stderr}"
    );
}

/// Two ranks at batch 4 train as one process of `--accumulate 2` at batch 4 does: rank r
/// takes micro-batch r of each step, with its jitter seed, and the gradient sum is the
/// one the accumulating process makes in its gradient buffer. The ranks end with the same
/// bits (the run checks it: `Ranks::agree` on the final parameters, else it fails), and
/// rank 0's checkpoint holds the accumulating run's parameters and moments to the bit, its
/// metrics the same losses: every backward kernel adds a batch's gradient into the buffer
/// with one rounding per element, so g0 + g1 there is the ranks' g0 + g1, and the mean of
/// two losses is exact either way. A two-rank run stopped after step STOP_AT and resumed
/// ends with the uninterrupted one's parameters, moments and losses, to the bit.
#[test]
fn two_ranks_train_as_two_accumulated_micro_batches_and_resume_exactly() {
    let dir = TestDir::new("mpi-pretrain");
    let limit = Duration::from_secs(300);
    let ranks = |out: &Path, extra: &[(&str, &str)]| {
        let mut env = vec![
            ("CPC_MPI_ROLE", "pretrain"),
            ("CPC_MPI_OUT", out.to_str().unwrap()),
        ];
        env.extend_from_slice(extra);
        let run = ranks_with(2, &env, limit);
        assert!(
            run.status.success(),
            "mpirun failed: {}",
            String::from_utf8_lossy(&run.stderr)
        );
    };
    let whole = dir.join("whole");
    ranks(&whole, &[]);
    let split = dir.join("split");
    let stop_at = STOP_AT.to_string();
    ranks(&split, &[("CPC_MPI_STOP_AT", &stop_at)]);
    ranks(&split, &[("CPC_MPI_RESUME", "1")]);
    let accumulated = dir.join("accumulated");
    run(&pretrain_options(tiny(STEPS, 2), &accumulated)).unwrap();

    let read = |out: &Path| {
        let ck = ModelCheckpoint::read(&out.join(CHECKPOINT), None).unwrap();
        assert_eq!(ck.step, STEPS, "{}", out.display());
        let moments = ck.moments.unwrap();
        let losses: Vec<(u64, f32)> = (read_metrics(out.join("metrics.jsonl")).unwrap())
            .iter()
            .map(|r| (r.step, r.loss))
            .collect();
        (ck.params, moments.exp_avg, moments.exp_avg_sq, losses)
    };
    let (w, s, a) = (read(&whole), read(&split), read(&accumulated));
    assert_eq!(w.3.len(), STEPS as usize);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    for (other, run) in [("the resumed run", &s), ("--accumulate 2", &a)] {
        for (what, x, y) in [
            ("parameters", &w.0, &run.0),
            ("m", &w.1, &run.1),
            ("v", &w.2, &run.2),
        ] {
            assert!(
                bits(x) == bits(y),
                "{what} of two ranks differ from {other}'s"
            );
        }
        assert_eq!(w.3, run.3, "losses of two ranks and of {other}");
    }
}
