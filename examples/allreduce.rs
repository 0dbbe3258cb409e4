//! The gradient sum of a data-parallel run, timed for every preset's gradient buffer:
//! `mpirun -np N target/release/examples/allreduce [REPEATS]` (feature `mpi`). Rank 0
//! prints, per preset, the bytes each rank sums a step (4 per value of the flat buffer,
//! padding included) and the median of REPEATS sums (default 5) over N ranks.

use std::time::Instant;

use cpc::dist::Ranks;
use cpc::train::config::PRESETS;
use cpc::train::Config;

fn main() -> cpc::Result<()> {
    let repeats: usize = match std::env::args().nth(1) {
        Some(n) => n
            .parse()
            .map_err(|_| cpc::Error::Config(format!("REPEATS {n:?} is not a count")))?,
        None => 5,
    };
    let ranks = Ranks::from_env()?;
    if ranks.size() == 1 {
        println!("one rank: nothing to sum (start it with mpirun -np 2 or more)");
        return Ok(());
    }
    for preset in PRESETS {
        let values = Config::preset(preset)?.model.layout().total;
        let mut buffer = vec![ranks.rank() as f32 + 0.5; values];
        let mut times: Vec<f64> = (0..repeats.max(1))
            .map(|_| {
                let clock = Instant::now();
                ranks
                    .all_reduce_sum(&mut buffer)
                    .map(|()| clock.elapsed().as_secs_f64())
            })
            .collect::<cpc::Result<_>>()?;
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        if ranks.is_root() {
            println!(
                "{preset:12} {values:>9} values {:>8.1} MB a step: {:>8.2} ms over {} ranks ({:.2} GB/s)",
                4.0 * values as f64 / 1e6,
                1e3 * median,
                ranks.size(),
                4.0 * values as f64 / median / 1e9
            );
        }
    }
    Ok(())
}
