//! The built-in text corpus: synthetic documents whose sentences are labelled by topic,
//! generated on the fly from (seed, split, index) as English-looking text, then read by the
//! same segmenter as any file; no files.
//!
//! **Words.** Eight topics (sea, forest, city, kitchen, war, school, space, farm), each with
//! 24 topic words ranked by how typical they are; 36 shared content words (man, day, old,
//! went, ...) and 30 function words (the, of, and, ...) that every topic uses alike. A few
//! words belong to two topics (salt: sea and kitchen; milk: kitchen and farm; station: city
//! and space), and a few are not ASCII (café, crème, école), to exercise lower-casing.
//!
//! **Documents.** Document i of a split is drawn from (seed, split, i): `paragraphs`
//! paragraphs of 3 to 8 sentences. Its first topic is i mod `topics` (so each split is
//! balanced); at each new paragraph the topic changes, with probability 0.2, to another
//! drawn uniformly. Every sentence has its paragraph's topic, its label.
//!
//! **Sentences.** One sentence in 20 is a single content word ("Harbour."); the others have
//! 2 to 18 words (2 plus two draws of 0..=8: a triangle peaking at 10). Each word is a
//! function word with probability 0.4, else a content word: a topic word of the sentence's
//! topic with probability 0.3 (Zipf-distributed over the topic's ranked list: word r with
//! weight 1 / (r + 1)), else a shared word (uniform). The first word is capitalised; one
//! word in 16 (not the last) is followed by a comma; a sentence ends in '.' (80 %), '!' or
//! '?' (10 % each). A paragraph's sentences are joined by spaces and wrapped at 72
//! columns; paragraphs are separated by blank lines.
//!
//! So a sentence's topic shows in its topic words, which a long sentence has several of and
//! a short one may have none of: a bag-of-words nearest-centroid classifier names the topic
//! of the test split's sentences far above chance (1/8) but well short of all of them
//! (tests/text_data.rs, `synthetic_topics_separate_by_bag_of_words`), leaving a probe room;
//! and neighbouring sentences share their topic, which is what CPC's context can learn.

use rand::Rng;

use super::{segment, Document, TextSet, TokenizerConfig};
use crate::data::rng::{rng_for, tag, DataRng};
use crate::data::Split;
use crate::error::{Error, Result};

#[derive(Clone, Debug, PartialEq)]
pub struct SyntheticConfig {
    pub seed: u64,
    /// Topics, the labels: 2 to [`TOPICS`].len().
    pub topics: usize,
    /// Documents in the train split.
    pub train_documents: usize,
    /// Documents in the test split.
    pub test_documents: usize,
    /// Paragraphs per document, 1 to [`MAX_PARAGRAPHS`].
    pub paragraphs: usize,
}

impl Default for SyntheticConfig {
    /// 8 topics, 256 + 64 documents of 3 paragraphs: about 4200 train sentences, 1050 test.
    fn default() -> Self {
        SyntheticConfig {
            seed: 0,
            topics: 8,
            train_documents: 256,
            test_documents: 64,
            paragraphs: 3,
        }
    }
}

/// The most paragraphs a document is generated with.
pub const MAX_PARAGRAPHS: usize = 1000;

/// Each topic's name and its words, most typical first.
pub const TOPICS: [(&str, [&str; 24]); 8] = [
    (
        "sea",
        [
            "ship",
            "sail",
            "wave",
            "harbour",
            "captain",
            "deck",
            "anchor",
            "tide",
            "shore",
            "storm",
            "island",
            "crew",
            "fish",
            "net",
            "boat",
            "salt",
            "gull",
            "mast",
            "rope",
            "lighthouse",
            "sailor",
            "reef",
            "current",
            "voyage",
        ],
    ),
    (
        "forest",
        [
            "tree", "leaf", "branch", "moss", "deer", "oak", "pine", "path", "root", "bark", "owl",
            "fern", "mushroom", "wolf", "stream", "clearing", "hunter", "bough", "acorn", "fox",
            "thicket", "trail", "timber", "berry",
        ],
    ),
    (
        "city",
        [
            "street", "car", "tower", "bus", "traffic", "office", "crowd", "bridge", "train",
            "station", "market", "shop", "lamp", "noise", "corner", "taxi", "subway", "window",
            "building", "avenue", "square", "sign", "pavement", "rent",
        ],
    ),
    (
        "kitchen",
        [
            "bread", "oven", "soup", "pan", "knife", "butter", "flour", "sugar", "café", "crème",
            "onion", "garlic", "pot", "spoon", "recipe", "dinner", "cook", "plate", "egg", "milk",
            "kettle", "tea", "cheese", "salt",
        ],
    ),
    (
        "war",
        [
            "soldier", "army", "battle", "sword", "general", "enemy", "fort", "gun", "march",
            "camp", "flag", "siege", "wound", "horse", "officer", "cannon", "trench", "victory",
            "retreat", "rifle", "helmet", "regiment", "border", "peace",
        ],
    ),
    (
        "school",
        [
            "teacher",
            "lesson",
            "book",
            "pupil",
            "desk",
            "exam",
            "chalk",
            "class",
            "homework",
            "grammar",
            "library",
            "pencil",
            "page",
            "essay",
            "student",
            "bell",
            "lecture",
            "notebook",
            "spelling",
            "science",
            "école",
            "professor",
            "test",
            "grade",
        ],
    ),
    (
        "space",
        [
            "star",
            "planet",
            "rocket",
            "moon",
            "orbit",
            "comet",
            "astronaut",
            "galaxy",
            "launch",
            "gravity",
            "telescope",
            "satellite",
            "alien",
            "crater",
            "nebula",
            "asteroid",
            "mars",
            "engine",
            "signal",
            "void",
            "pilot",
            "module",
            "station",
            "capsule",
        ],
    ),
    (
        "farm",
        [
            "cow", "barn", "field", "wheat", "tractor", "hay", "sheep", "pig", "plough", "harvest",
            "fence", "goat", "hen", "milk", "corn", "farmer", "meadow", "seed", "orchard", "apple",
            "mud", "rain", "calf", "pasture",
        ],
    ),
];

/// Content words every topic uses alike.
const SHARED: [&str; 36] = [
    "man", "woman", "day", "time", "way", "thing", "night", "year", "place", "hand", "eye", "old",
    "little", "long", "good", "great", "small", "dark", "bright", "cold", "went", "came", "saw",
    "found", "took", "made", "knew", "looked", "thought", "said", "felt", "walked", "stood",
    "turned", "left", "gave",
];

/// Function words every topic uses alike.
const FUNCTION: [&str; 30] = [
    "the", "a", "of", "and", "to", "in", "was", "it", "that", "on", "with", "as", "at", "by",
    "for", "from", "but", "not", "his", "her", "they", "we", "there", "then", "so", "had", "were",
    "all", "one", "this",
];

/// Chance that a new paragraph changes the topic.
const TOPIC_CHANGE: f32 = 0.2;
/// Sentences per paragraph.
const SENTENCES: std::ops::RangeInclusive<usize> = 3..=8;
/// Chance that a sentence is one content word.
const ONE_WORD: f32 = 0.05;
/// Chance that a word is a function word.
const FUNCTION_SHARE: f32 = 0.4;
/// Chance that a content word is a topic word.
const TOPIC_SHARE: f32 = 0.3;
/// Chance of a comma after a word (not the last).
const COMMA: f32 = 1.0 / 16.0;
/// Columns a paragraph is wrapped at.
const WRAP: usize = 72;

/// One generated document: its text and each sentence's topic.
#[derive(Clone, Debug, PartialEq)]
pub struct Generated {
    pub text: String,
    /// One topic per sentence, in order.
    pub topics: Vec<u32>,
}

pub struct SyntheticText {
    config: SyntheticConfig,
    split: Split,
    len: usize,
    tokenizer: TokenizerConfig,
    /// Cumulative Zipf weights over a topic's ranked words.
    zipf: Vec<f32>,
}

impl SyntheticText {
    pub fn new(
        config: SyntheticConfig,
        split: Split,
        tokenizer: TokenizerConfig,
    ) -> Result<SyntheticText> {
        let err = |message: String| Error::Data {
            path: "synthetic text".into(),
            message,
        };
        let len = match split {
            Split::Train => config.train_documents,
            Split::Test => config.test_documents,
            Split::Unlabeled => {
                return Err(err(
                    "the synthetic set has train and test splits only".into()
                ))
            }
        };
        if !(2..=TOPICS.len()).contains(&config.topics) {
            return Err(err(format!(
                "{} topics; 2 to {} are generated",
                config.topics,
                TOPICS.len()
            )));
        }
        if len == 0 {
            return Err(err(format!("the {split} split has no documents")));
        }
        if !(1..=MAX_PARAGRAPHS).contains(&config.paragraphs) {
            return Err(err(format!(
                "{} paragraphs a document; 1 to {MAX_PARAGRAPHS} are generated",
                config.paragraphs
            )));
        }
        let zipf = (0..TOPICS[0].1.len())
            .scan(0.0, |sum, r| {
                *sum += 1.0 / (r as f32 + 1.0);
                Some(*sum)
            })
            .collect();
        Ok(SyntheticText {
            config,
            split,
            len,
            tokenizer,
            zipf,
        })
    }

    pub fn config(&self) -> &SyntheticConfig {
        &self.config
    }

    /// Document `i`'s text and its sentences' topics: a pure function of (seed, split, i).
    pub fn generate(&self, i: usize) -> Generated {
        assert!(
            i < self.len,
            "synthetic index {i} out of range 0..{}",
            self.len
        );
        let c = &self.config;
        let mut rng = rng_for(&[tag::TEXT_DOCUMENT, c.seed, self.split.seed_part(), i as u64]);
        let mut topic = i % c.topics;
        let mut paragraphs = Vec::with_capacity(c.paragraphs);
        let mut topics = Vec::new();
        for p in 0..c.paragraphs {
            if p > 0 && rng.random::<f32>() < TOPIC_CHANGE {
                topic = (topic + rng.random_range(1..c.topics)) % c.topics;
            }
            let count = rng.random_range(SENTENCES);
            let sentences: Vec<String> =
                (0..count).map(|_| self.sentence(topic, &mut rng)).collect();
            topics.extend(std::iter::repeat_n(topic as u32, count));
            paragraphs.push(wrap(&sentences.join(" ")));
        }
        Generated {
            text: paragraphs.join("\n\n"),
            topics,
        }
    }

    /// One sentence on `topic`, capitalised and punctuated.
    fn sentence(&self, topic: usize, rng: &mut DataRng) -> String {
        let count = if rng.random::<f32>() < ONE_WORD {
            1
        } else {
            2 + rng.random_range(0..=8) + rng.random_range(0..=8)
        };
        let mut out = String::new();
        for k in 0..count {
            let word = if count > 1 && rng.random::<f32>() < FUNCTION_SHARE {
                FUNCTION[rng.random_range(0..FUNCTION.len())]
            } else if rng.random::<f32>() < TOPIC_SHARE {
                let total = *self.zipf.last().unwrap();
                let at = rng.random_range(0.0..total);
                let rank = self.zipf.partition_point(|&w| w <= at);
                TOPICS[topic].1[rank.min(self.zipf.len() - 1)]
            } else {
                SHARED[rng.random_range(0..SHARED.len())]
            };
            if k == 0 {
                let mut chars = word.chars();
                out.extend(chars.next().into_iter().flat_map(char::to_uppercase));
                out.push_str(chars.as_str());
            } else {
                out.push(' ');
                out.push_str(word);
            }
            if k + 1 < count && rng.random::<f32>() < COMMA {
                out.push(',');
            }
        }
        let end: f32 = rng.random();
        out.push(if end < 0.8 {
            '.'
        } else if end < 0.9 {
            '!'
        } else {
            '?'
        });
        out
    }
}

/// `text` (words separated by single spaces) wrapped at [`WRAP`] columns.
fn wrap(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut column = 0;
    for word in text.split(' ') {
        let width = word.chars().count();
        if column > 0 && column + 1 + width > WRAP {
            out.push('\n');
            column = 0;
        } else if column > 0 {
            out.push(' ');
            column += 1;
        }
        out.push_str(word);
        column += width;
    }
    out
}

impl TextSet for SyntheticText {
    fn len(&self) -> usize {
        self.len
    }

    fn document(&self, i: usize) -> Result<Document> {
        let Generated { text, topics } = self.generate(i);
        let sentences = segment::document(&text, &self.tokenizer);
        // Every generated sentence has words and ends at a capital after '.', '!' or '?'.
        assert_eq!(
            sentences.len(),
            topics.len(),
            "synthetic document {i}: the segmenter found another number of sentences \
             than were generated:\n{text}"
        );
        Ok(Document {
            sentences,
            labels: Some(topics),
        })
    }

    fn tokenizer(&self) -> TokenizerConfig {
        self.tokenizer
    }

    fn num_classes(&self) -> Option<usize> {
        Some(self.config.topics)
    }

    fn name(&self, i: usize) -> String {
        format!("synthetic:{}#{i}", self.split)
    }

    fn describe(&self) -> String {
        let c = &self.config;
        format!(
            "synthetic text {} (seed {}): {} documents of {} paragraphs, {} topics",
            self.split, c.seed, self.len, c.paragraphs, c.topics
        )
    }

    fn class_name(&self, class: u32) -> Option<String> {
        ((class as usize) < self.config.topics).then(|| TOPICS[class as usize].0.to_string())
    }
}
