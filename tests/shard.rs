//! Data-parallel reading: each rank takes its share of one stream and skips the rest
//! (`TrainingData::skip_input`, `Shard`), for images, audio and text. No GPU.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use cpc::data::audio::{AudioLoader, AudioLoaderConfig, SyntheticConfig, SyntheticSpeech};
use cpc::data::text::{self, PassageConfig, Vocabulary};
use cpc::data::{
    Builtin, BuiltinConfig, Dataset, Image, Input, Loader, LoaderConfig, LoaderState, Shard, Split,
    TrainingData,
};

/// Ranks and micro-batches per rank of the run the tests split the stream for: a step
/// takes RANKS * PER_RANK batches.
const RANKS: usize = 2;
const PER_RANK: usize = 2;
/// Steps read: enough to cross two epochs of every set below.
const STEPS: usize = 5;
const PER_STEP: usize = RANKS * PER_RANK;

/// A loader of one modality starting at `state`, its workers told `shard`.
type Make<'a> = dyn Fn(LoaderState, Shard) -> Box<dyn TrainingData> + 'a;

/// The whole stream, and the state after each of its batches (states[k]: before batch k).
fn unsharded(make: &Make, batches: usize) -> (Vec<Input>, Vec<LoaderState>) {
    let mut data = make(LoaderState::default(), Shard::ALL);
    let mut states = vec![data.state()];
    let inputs = (0..batches)
        .map(|_| {
            let input = data.next_input().unwrap();
            states.push(data.state());
            input
        })
        .collect();
    (inputs, states)
}

/// Reads batches `from..to` of the stream on `data` as rank `rank` does (its own taken,
/// the others skipped), checking each taken one and the state after every batch.
fn read_as_rank(
    data: &mut dyn TrainingData,
    rank: usize,
    from: usize,
    to: usize,
    stream: &(Vec<Input>, Vec<LoaderState>),
    what: &str,
) {
    let mine = Shard::rank(rank, RANKS, PER_RANK).unwrap();
    for k in from..to {
        if mine.takes(k as u64) {
            assert!(
                data.next_input().unwrap() == stream.0[k],
                "{what}: batch {k} differs"
            );
        } else {
            data.skip_input().unwrap();
        }
        assert_eq!(
            data.state(),
            stream.1[k + 1],
            "{what}: state after batch {k}"
        );
    }
}

/// Each rank, its workers told its shard, reads exactly its batches of the stream and ends
/// every batch at the stream's state; workers told another shard (or none) change the work,
/// not the batches; and a rank started at a step's state (a resume) goes on the same.
fn ranks_split_the_stream(make: &Make, modality: &str) {
    let batches = STEPS * PER_STEP;
    let stream = unsharded(make, batches);
    assert!(
        stream.1[batches].epoch >= 2,
        "{modality}: the test should cross two epochs"
    );
    for rank in 0..RANKS {
        let shard = Shard::rank(rank, RANKS, PER_RANK).unwrap();
        let what = format!("{modality}, rank {rank}");
        read_as_rank(
            &mut *make(LoaderState::default(), shard),
            rank,
            0,
            batches,
            &stream,
            &what,
        );
        // Resumed after step 2, from the state a checkpoint saves.
        let at = 2 * PER_STEP;
        let mut resumed = make(stream.1[at], shard);
        read_as_rank(
            &mut *resumed,
            rank,
            at,
            batches,
            &stream,
            &format!("{what}, resumed"),
        );
        // Workers that make every batch, and workers that make the other rank's.
        let other = Shard::rank(RANKS - 1 - rank, RANKS, PER_RANK).unwrap();
        for hint in [Shard::ALL, other] {
            let mut data = make(LoaderState::default(), hint);
            read_as_rank(
                &mut *data,
                rank,
                0,
                batches,
                &stream,
                &format!("{what}, {hint:?}"),
            );
        }
    }
}

#[test]
fn shards_take_every_batch_once_in_turn() {
    let shard = Shard::rank(1, 3, 2).unwrap();
    let taken: Vec<u64> = (0..14).filter(|&k| shard.takes(k)).collect();
    assert_eq!(taken, [2, 3, 8, 9]);
    let all: Vec<u64> = (0..5).filter(|&k| Shard::ALL.takes(k)).collect();
    assert_eq!(all, [0, 1, 2, 3, 4]);
    for (rank, ranks, per) in [(2, 2, 1), (0, 0, 1), (0, 1, 0)] {
        let e = Shard::rank(rank, ranks, per).unwrap_err().to_string();
        assert!(e.contains(&format!("rank {rank} of {ranks}")), "{e}");
    }
}

/// The built-in images, counting the images decoded.
struct Counted {
    set: Builtin,
    decoded: Arc<AtomicUsize>,
}

impl Dataset for Counted {
    fn len(&self) -> usize {
        self.set.len()
    }
    fn image(&self, i: usize) -> cpc::Result<Image> {
        self.decoded.fetch_add(1, Ordering::Relaxed);
        self.set.image(i)
    }
    fn label(&self, i: usize) -> Option<u32> {
        self.set.label(i)
    }
    fn num_classes(&self) -> Option<usize> {
        self.set.num_classes()
    }
    fn name(&self, i: usize) -> String {
        self.set.name(i)
    }
    fn describe(&self) -> String {
        self.set.describe()
    }
}

fn images(decoded: &Arc<AtomicUsize>) -> Arc<dyn Dataset> {
    let config = BuiltinConfig {
        seed: 9,
        train_len: 26,
        test_len: 4,
        side: 20,
    };
    Arc::new(Counted {
        set: Builtin::new(config, Split::Train).unwrap(),
        decoded: decoded.clone(),
    })
}

/// B of the image tests; 26 images make 4 batches an epoch.
const IMAGE_BATCH: usize = 6;

fn image_loader(set: &Arc<dyn Dataset>, state: LoaderState, shard: Shard) -> Box<dyn TrainingData> {
    let config = LoaderConfig {
        workers: 2,
        prefetch: 2,
        shard,
        ..LoaderConfig::new(IMAGE_BATCH, 16, 5)
    };
    Box::new(Loader::new(set.clone(), config, state).unwrap())
}

#[test]
fn image_ranks_split_the_stream() {
    let set = images(&Arc::new(AtomicUsize::new(0)));
    ranks_split_the_stream(&|state, shard| image_loader(&set, state, shard), "images");
}

/// A rank decodes its own batches and at most the workers' look-ahead more: skipped
/// batches cost nothing.
#[test]
fn skipped_image_batches_are_not_decoded() {
    let batches = STEPS * PER_STEP;
    let decoded = |shard: Shard, rank: usize| {
        let count = Arc::new(AtomicUsize::new(0));
        let set = images(&count);
        let mine = Shard::rank(rank, RANKS, PER_RANK).unwrap();
        let mut data = image_loader(&set, LoaderState::default(), shard);
        for k in 0..batches as u64 {
            if mine.takes(k) {
                data.next_input().unwrap();
            } else {
                data.skip_input().unwrap();
            }
        }
        drop(data); // joins the workers
        count.load(Ordering::Relaxed) / IMAGE_BATCH
    };
    // Look-ahead: each of the 2 workers holds 1 batch in its channel and makes 1 more.
    let ahead = 4;
    for rank in 0..RANKS {
        let sharded = decoded(Shard::rank(rank, RANKS, PER_RANK).unwrap(), rank);
        assert!(
            (batches / RANKS..=batches / RANKS + ahead).contains(&sharded),
            "rank {rank}: {sharded} batches decoded for {} taken",
            batches / RANKS
        );
        let all = decoded(Shard::ALL, rank);
        assert!(
            all >= batches,
            "rank {rank}, no shard: {all} batches decoded"
        );
    }
}

#[test]
fn audio_ranks_split_the_stream() {
    let config = SyntheticConfig {
        seed: 2,
        speakers: 3,
        train_utterances: 3,
        test_utterances: 1,
        seconds: 0.3,
    };
    let set: Arc<dyn cpc::data::audio::AudioSet> =
        Arc::new(SyntheticSpeech::new(config, Split::Train).unwrap());
    let make = |state, shard| -> Box<dyn TrainingData> {
        let config = AudioLoaderConfig {
            workers: 3,
            prefetch: 3,
            shard,
            ..AudioLoaderConfig::new(2, 1_024, 7)
        };
        Box::new(AudioLoader::new(set.clone(), config, state).unwrap())
    };
    ranks_split_the_stream(&make, "audio");
}

#[test]
fn text_ranks_split_the_stream() {
    let set = text::SyntheticText::new(
        text::SyntheticConfig {
            seed: 4,
            train_documents: 6,
            ..Default::default()
        },
        Split::Train,
        text::segment::TokenizerConfig { lowercase: true },
    )
    .unwrap();
    let vocab = Vocabulary::build(&set, 300).unwrap();
    let passage = PassageConfig {
        sentences: 4,
        max_words: 12,
    };
    let make = |state, _shard| -> Box<dyn TrainingData> {
        Box::new(text::TextLoader::new(&set, &vocab, &passage, 5, 3, state).unwrap())
    };
    ranks_split_the_stream(&make, "text");
}
