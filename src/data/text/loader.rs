//! Batches of passages for training: B passages of L consecutive sentences a step.
//!
//! [`TextLoader`] holds the training set cut into passages ([`cut_passages`]) as token ids
//! in memory (4 bytes a word: a corpus of 10^8 words is 400 MB) and serves them in the
//! image loader's schedule ([`crate::data::loader`]): epoch e visits the passages in a
//! shuffle drawn from (seed, e), its batches start at positions 0, B, 2B, ... and the last
//! n mod B passages of the shuffle are left out. So batch j is a function of (seed, j)
//! alone, and [`LoaderState`] (epoch, position of the next batch) is all a resumed run needs
//! to continue with the same batches. Gathering a batch copies B L sentences, far less work
//! than the step it feeds, so there are no worker threads.

use super::passages::{cut_passages, PassageConfig, Passages};
use super::{TextSet, Vocabulary};
use crate::data::loader::{shuffled, Schedule};
use crate::data::{Input, LoaderState, TrainingData};
use crate::error::{Error, Result};

pub struct TextLoader {
    passages: Passages,
    vocabulary: Vocabulary,
    batch: usize,
    seed: u64,
    state: LoaderState,
    /// The current epoch's order of passages.
    order: Vec<usize>,
    /// Sentences in no passage (each document's last count mod L) and sentences truncated
    /// to the word limit, for the log.
    dropped: usize,
    truncated: usize,
    skipped: usize,
    describe: String,
}

impl TextLoader {
    /// Cuts `set` into passages of `passage.sentences` sentences, encoded with `vocab`; the
    /// first batch is the one at `state` (Default: the very start). An error names the set
    /// when it has fewer passages than one batch.
    pub fn new(
        set: &dyn TextSet,
        vocab: &Vocabulary,
        passage: &PassageConfig,
        batch: usize,
        seed: u64,
        state: LoaderState,
    ) -> Result<TextLoader> {
        let cut = cut_passages(set, vocab, passage)?;
        let n = cut.passages.len();
        if batch == 0 || n < batch {
            return Err(Error::Data {
                path: set.describe(),
                message: format!(
                    "{n} passages of {} sentences, fewer than one batch of {batch}",
                    passage.sentences
                ),
            });
        }
        let schedule = Schedule {
            n: n as u64,
            batch: batch as u64,
        };
        let state = schedule.settle(state);
        let describe = format!(
            "{}; {n} passages of {} sentences ({} words at most a sentence)",
            set.describe(),
            passage.sentences,
            passage.max_words
        );
        Ok(TextLoader {
            order: shuffled((0..n).collect(), true, seed, state.epoch),
            passages: cut.passages,
            vocabulary: vocab.clone(),
            batch,
            seed,
            state,
            dropped: cut.dropped,
            truncated: cut.truncated,
            skipped: set.skipped(),
            describe,
        })
    }

    fn schedule(&self) -> Schedule {
        Schedule {
            n: self.passages.len() as u64,
            batch: self.batch as u64,
        }
    }

    /// The batch at the current state, B passages (their sentences p L + s, offsets from
    /// 0), and the state moves on.
    pub fn next_batch(&mut self) -> Result<Passages> {
        let at = self.state.position as usize;
        let batch = self.passages.gather(&self.order[at..at + self.batch])?;
        self.skip_batch();
        Ok(batch)
    }

    /// Moves past the batch at the current state without gathering it.
    pub fn skip_batch(&mut self) {
        let next = self.schedule().next(self.state);
        if next.epoch != self.state.epoch {
            self.order = shuffled(
                (0..self.passages.len()).collect(),
                true,
                self.seed,
                next.epoch,
            );
        }
        self.state = next;
    }

    /// Where the next batch starts.
    pub fn state(&self) -> LoaderState {
        self.state
    }

    pub fn batches_per_epoch(&self) -> u64 {
        (self.passages.len() / self.batch) as u64
    }

    /// Passages an epoch draws from.
    pub fn passages(&self) -> usize {
        self.passages.len()
    }

    /// Sentences in no passage, and sentences cut to the word limit.
    pub fn left_out(&self) -> (usize, usize) {
        (self.dropped, self.truncated)
    }

    pub fn describe(&self) -> String {
        self.describe.clone()
    }
}

impl TrainingData for TextLoader {
    fn next_input(&mut self) -> Result<Input> {
        Ok(Input::Sentences(self.next_batch()?.sentences))
    }

    fn skip_input(&mut self) -> Result<()> {
        self.skip_batch();
        Ok(())
    }

    fn vocabulary(&self) -> Option<&Vocabulary> {
        Some(&self.vocabulary)
    }

    fn state(&self) -> LoaderState {
        TextLoader::state(self)
    }

    /// Bad files skipped when the set was read.
    fn skipped(&self) -> usize {
        self.skipped
    }

    fn describe(&self) -> String {
        TextLoader::describe(self)
    }
}
