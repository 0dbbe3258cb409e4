//! The processes of one data-parallel run ([`Ranks`]): one per adapter, each training on its
//! share of every step's batches, their gradients summed so that every one takes the same
//! optimiser step.
//!
//! Without the `mpi` feature (the default) a run is one process: [`Ranks::single`], rank 0
//! of 1, whose sum of one is the values themselves. With it, a process that `mpirun` (or any
//! launcher that sets the MPI environment) started joins MPI's world: rank and size are
//! MPI's, and
//!
//! - [`Ranks::all_reduce_sum`] sums f32 values over the ranks as MPI_Reduce to rank 0 then
//!   MPI_Bcast of rank 0's result: one summation, done once, so every rank ends with the
//!   same bits whatever the MPI library's algorithms (an MPI_Allreduce may associate the
//!   sum differently on different ranks, and ranks that start a step with parameters a bit
//!   apart drift further apart);
//! - [`Ranks::any`] tells every rank whether any rank raised a flag (a stop asked for on
//!   one of them), so that all stop after the same step;
//! - [`Ranks::abort_on_error`] ends every rank when one fails: the error is printed with
//!   the rank's number and MPI_Abort kills the whole job. Nothing is left half-written by
//!   that: rank 0 alone writes checkpoints, each replaced atomically ([`crate::train::atomic`]),
//!   so the last one written stays whole. A rank that dies on its own (killed, crashed) is
//!   handled by the launcher: OpenMPI's mpirun kills the other ranks and exits non-zero
//!   (tests/mpi.rs shows it, no hang).
//!
//! A process started by an MPI launcher (OMPI_COMM_WORLD_SIZE, PMI_SIZE or PMIX_RANK set)
//! in a build without the feature refuses to run rather than train alone N times.

use crate::error::{Error, Result};
use crate::train::replicas::AllReduce;

/// The environment variables that tell a process an MPI launcher started it, and how many
/// processes it started (where the variable says).
const LAUNCHER_VARS: [&str; 3] = ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"];

/// This process's place among the processes of the run.
pub struct Ranks {
    #[cfg(feature = "mpi")]
    mpi: Option<mpi_world::World>,
}

impl Ranks {
    /// One process alone: rank 0 of 1.
    pub fn single() -> Ranks {
        Ranks {
            #[cfg(feature = "mpi")]
            mpi: None,
        }
    }

    /// MPI's world where an MPI launcher started this process (feature `mpi`), else
    /// [`Ranks::single`]. Without the feature, a process an MPI launcher started is an
    /// error. Call it once per process: MPI is initialised once.
    pub fn from_env() -> Result<Ranks> {
        let launched = LAUNCHER_VARS.iter().find(|v| std::env::var_os(v).is_some());
        let Some(&var) = launched else {
            return Ok(Ranks::single());
        };
        #[cfg(feature = "mpi")]
        {
            let _ = var;
            Ok(Ranks {
                mpi: Some(mpi_world::World::initialize()?),
            })
        }
        #[cfg(not(feature = "mpi"))]
        {
            let size = std::env::var(var).unwrap_or_default();
            Err(Error::Config(format!(
                "an MPI launcher started this process ({var}={size}) but this cpc was built \
                 without the `mpi` feature, so each process would train alone; build it with \
                 `cargo build --release --features mpi`"
            )))
        }
    }

    /// This process's rank, 0..size.
    pub fn rank(&self) -> usize {
        #[cfg(feature = "mpi")]
        if let Some(world) = &self.mpi {
            return world.rank();
        }
        0
    }

    /// The number of processes.
    pub fn size(&self) -> usize {
        #[cfg(feature = "mpi")]
        if let Some(world) = &self.mpi {
            return world.size();
        }
        1
    }

    /// Rank 0: the one that writes checkpoints, metrics, plots and the progress bar.
    pub fn is_root(&self) -> bool {
        self.rank() == 0
    }

    /// `values` summed element-wise over the ranks, in place, the same bits on every rank
    /// (every rank passes a slice of the same length).
    pub fn all_reduce_sum(&self, values: &mut [f32]) -> Result<()> {
        #[cfg(feature = "mpi")]
        if let Some(world) = &self.mpi {
            return world.sum(values);
        }
        let _ = values;
        Ok(())
    }

    /// Whether `flag` is true on any rank (every rank calls it, each with its own flag).
    pub fn any(&self, flag: bool) -> Result<bool> {
        #[cfg(feature = "mpi")]
        if let Some(world) = &self.mpi {
            return world.any(flag);
        }
        Ok(flag)
    }

    /// An error naming `what` unless `value` is the same on every rank (every rank calls
    /// it): a check that the ranks start from, and end with, the same state.
    pub fn agree(&self, what: &str, value: u64) -> Result<()> {
        #[cfg(feature = "mpi")]
        if let Some(world) = &self.mpi {
            let (low, high) = world.min_max(value)?;
            if low != high {
                return Err(Error::Other(format!(
                    "the ranks disagree on {what}: rank {} has {value:#x}, the ranks range \
                     from {low:#x} to {high:#x}",
                    world.rank()
                )));
            }
        }
        let _ = (what, value);
        Ok(())
    }

    /// `result` itself in a run of one process; where there are several and it is an
    /// error, prints the error with this rank's number and ends every rank (MPI_Abort, exit
    /// status 1): the others, waiting in a collective for this one, would otherwise hang.
    pub fn abort_on_error<T>(&self, result: Result<T>) -> Result<T> {
        #[cfg(feature = "mpi")]
        if let (Some(world), Err(e)) = (&self.mpi, &result) {
            if world.size() > 1 {
                eprintln!(
                    "error on rank {} of {}: {e}; ending every rank",
                    world.rank(),
                    world.size()
                );
                world.abort(1);
            }
        }
        result
    }

    /// One line for logs: "rank 1 of 4 (MPI)", "one process".
    pub fn describe(&self) -> String {
        #[cfg(feature = "mpi")]
        if self.mpi.is_some() {
            return format!("rank {} of {} (MPI)", self.rank(), self.size());
        }
        "one process".into()
    }
}

impl std::fmt::Debug for Ranks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

/// The training loop's hook for the processes of a run.
impl AllReduce for Ranks {
    fn rank(&self) -> usize {
        Ranks::rank(self)
    }
    fn ranks(&self) -> usize {
        self.size()
    }
    fn sum(&self, values: &mut [f32]) -> Result<()> {
        self.all_reduce_sum(values)
    }
    fn any(&self, flag: bool) -> Result<bool> {
        Ranks::any(self, flag)
    }
    fn agree(&self, what: &str, value: u64) -> Result<()> {
        Ranks::agree(self, what, value)
    }
}

/// A hash of `values`' bits (FNV-1a), for [`Ranks::agree`].
pub fn fingerprint(values: &[f32]) -> u64 {
    values.iter().fold(0xcbf2_9ce4_8422_2325, |h, v| {
        (h ^ v.to_bits() as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// A length that does not fit MPI's int count.
#[cfg_attr(not(feature = "mpi"), allow(dead_code))]
fn count_err(len: usize) -> Error {
    Error::Other(format!(
        "cannot sum {len} values over MPI: more than {} in one call",
        i32::MAX
    ))
}

#[cfg(feature = "mpi")]
mod mpi_world {
    use mpi::collective::SystemOperation;
    use mpi::environment::{Threading, Universe};
    use mpi::topology::SimpleCommunicator;
    use mpi::traits::*;

    use crate::error::{Error, Result};

    pub struct World {
        world: SimpleCommunicator,
        /// Rank 0's copy of what it sends to the sum (MPI_Reduce has no in-place form in
        /// the mpi crate): grown once to the gradient's length, then reused every step.
        send: std::sync::Mutex<Vec<f32>>,
        /// Finalises MPI when dropped; kept after `world`, which it outlives.
        _universe: Universe,
    }

    // SAFETY: MPI was initialised with MPI_THREAD_MULTIPLE (checked in `initialize`), under
    // which any thread may call MPI on the world communicator, also concurrently; the
    // handles are plain MPI handles, valid in every thread until MPI is finalised, which
    // happens only when this World (and its Universe) is dropped.
    unsafe impl Send for World {}
    unsafe impl Sync for World {}

    impl World {
        /// MPI with MPI_THREAD_MULTIPLE, which makes calls from any thread safe (the
        /// training loop's hook is Send + Sync): a library that offers less is an error.
        pub fn initialize() -> Result<World> {
            let (universe, threading) = mpi::initialize_with_threading(Threading::Multiple)
                .ok_or_else(|| Error::Other("MPI is already initialised in this process".into()))?;
            if threading != Threading::Multiple {
                return Err(Error::Other(format!(
                    "this MPI library offers threads {threading:?}, and a data-parallel run \
                     needs MPI_THREAD_MULTIPLE"
                )));
            }
            Ok(World {
                world: universe.world(),
                send: Default::default(),
                _universe: universe,
            })
        }

        pub fn rank(&self) -> usize {
            self.world.rank() as usize
        }

        pub fn size(&self) -> usize {
            self.world.size() as usize
        }

        pub fn sum(&self, values: &mut [f32]) -> Result<()> {
            if values.len() > i32::MAX as usize {
                return Err(super::count_err(values.len()));
            }
            if self.size() == 1 {
                return Ok(());
            }
            let root = self.world.process_at_rank(0);
            if self.rank() == 0 {
                let mut send = self.send.lock().unwrap_or_else(|e| e.into_inner());
                send.clear();
                send.extend_from_slice(values);
                root.reduce_into_root(&send[..], values, SystemOperation::sum());
            } else {
                root.reduce_into(&values[..], SystemOperation::sum());
            }
            root.broadcast_into(values);
            Ok(())
        }

        pub fn any(&self, flag: bool) -> Result<bool> {
            let send = flag as u8;
            let mut any = 0u8;
            self.world
                .all_reduce_into(&send, &mut any, SystemOperation::max());
            Ok(any != 0)
        }

        pub fn min_max(&self, value: u64) -> Result<(u64, u64)> {
            let (mut low, mut high) = (0u64, 0u64);
            self.world
                .all_reduce_into(&value, &mut low, SystemOperation::min());
            self.world
                .all_reduce_into(&value, &mut high, SystemOperation::max());
            Ok((low, high))
        }

        pub fn abort(&self, code: i32) -> ! {
            self.world.abort(code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_process_is_rank_0_of_1_and_its_sum_is_its_own_values() {
        let ranks = Ranks::single();
        assert_eq!((ranks.rank(), ranks.size(), ranks.is_root()), (0, 1, true));
        let mut values = vec![1.5f32, -2.25, f32::MIN_POSITIVE, 3e30];
        let before = values.clone();
        ranks.all_reduce_sum(&mut values).unwrap();
        assert_eq!(values, before);
        assert!(ranks.any(true).unwrap());
        assert!(!ranks.any(false).unwrap());
        ranks.agree("a value", 7).unwrap();
        assert_eq!(ranks.describe(), "one process");
    }

    #[test]
    fn a_single_process_passes_its_errors_back_instead_of_aborting() {
        let ranks = Ranks::single();
        let e = ranks
            .abort_on_error::<()>(Err(Error::Other("disk full".into())))
            .unwrap_err();
        assert!(e.to_string().contains("disk full"));
        assert_eq!(ranks.abort_on_error(Ok(7)).unwrap(), 7);
    }

    #[test]
    fn fingerprints_tell_apart_one_bit() {
        let a = [1.0f32, 2.0, 3.0];
        let mut b = a;
        b[2] = f32::from_bits(b[2].to_bits() ^ 1);
        assert_eq!(fingerprint(&a), fingerprint(&[1.0, 2.0, 3.0]));
        assert_ne!(fingerprint(&a), fingerprint(&b));
        assert_ne!(fingerprint(&[0.0]), fingerprint(&[-0.0]));
    }

    /// Without the feature a process that mpirun started stops with a message saying how to
    /// build; without a launcher's variables it is one process.
    #[cfg(not(feature = "mpi"))]
    #[test]
    fn without_the_feature_a_launched_process_is_an_error_naming_the_feature() {
        assert!(LAUNCHER_VARS.iter().all(|v| std::env::var_os(v).is_none()));
        assert_eq!(Ranks::from_env().unwrap().size(), 1);
        // SAFETY: no other test of this crate reads or writes this variable.
        std::env::set_var("OMPI_COMM_WORLD_SIZE", "2");
        let e = Ranks::from_env().err().map(|e| e.to_string());
        std::env::remove_var("OMPI_COMM_WORLD_SIZE");
        let e = e.expect("a launched process without the feature must fail");
        assert!(
            e.contains("OMPI_COMM_WORLD_SIZE=2") && e.contains("--features mpi"),
            "{e}"
        );
    }
}
