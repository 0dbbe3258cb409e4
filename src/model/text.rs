//! The text CPC model's architecture (van den Oord et al. 2018, the sentence model): a
//! sentence encoder (word embeddings, a 1-D convolution of odd width K along the words with
//! a ReLU, the mean over each sentence's words) turns every sentence into a vector z of D
//! channels; the GRU context and the InfoNCE heads that vision and audio share
//! (model::cpc's plan_context_and_loss) read a passage's L sentences in order and predict
//! the sentence vectors 1..=steps ahead, every sentence of the batch a candidate.
//!
//! A batch is B passages of L sentences, N = B L sentences in ops::embedding's padded
//! layout: ids [N, W] (W = max_words, PAD past each sentence's length) and the lengths
//! [N]; sentence n is passage n / L's sentence n % L (data::text::Passages::gather's order).
//! The lookup makes each sentence an item [E, 1, W] (an image of height 1), the conv is a
//! 1 x K conv padded 0 x K/2 ('same': W positions out), stride 1, and the masked mean
//! (ops::masked_mean) over the positions w < length writes z [N, D] row n: already the
//! layout of ops::sequences' `frames(B, L)` (row b L + s), so the GRU runs along each
//! passage with no transpose. An empty sentence's vector is 0 (the masked mean's rule).
//!
//! Initialisation, as PyTorch's modules: the table `encoder.embedding.weight` [V, E] as
//! torch.nn.Embedding(V, E, padding_idx = 0), N(0, 1) with PAD's row zero
//! ([`Init::Embedding`]); the conv `encoder.conv.weight` [D, E, 1, K] and `.bias` [D] as
//! torch.nn.Conv1d's default ([`ConvInit::Torch`]: U(+-1/sqrt(E K))). With N(0, 1) words
//! the conv's outputs start with variance about 1/3, and the ReLU keeps about half.

use crate::data::text::vocab::{MAX_SIZE, MIN_SIZE};
use crate::data::text::Sentences;
use crate::error::{Error, Result};
use crate::model::config::{MAX_CHANNELS, MAX_HIDDEN, MAX_KERNEL};
use crate::model::layers::{self, ConvGeometry, ConvInit, LayerList, Shape};
use crate::model::params::{Init, ParamLayout};
use crate::ops::embedding::{Embedding, PaddedSentences, PAD};

/// The embedding table's parameter: `{EMBEDDING}.weight` [V, E].
pub const EMBEDDING: &str = "encoder.embedding";
/// The word conv's parameters: `{CONV}.weight` [D, E, 1, K] and `.bias` [D].
pub const CONV: &str = "encoder.conv";

/// Widest padded sentence W, words (the presets use at most 32).
pub const MAX_WORDS: usize = 4096;
/// Longest passage L, sentences (the presets use at most 8).
pub const MAX_SENTENCES: usize = 4096;

#[derive(Clone, Debug, PartialEq)]
pub struct TextSpec {
    /// V: rows of the embedding table, PAD and UNK included.
    pub vocab: usize,
    /// W: positions of a padded sentence (the word limit).
    pub max_words: usize,
    /// E: channels of a word's embedding.
    pub embedding: usize,
    /// K: the word conv's width, odd (padded by K / 2, stride 1).
    pub kernel: usize,
    /// D: the word conv's channels, the sentence vector's size.
    pub channels: usize,
    /// L: sentences a passage, the GRU's sequence length.
    pub sentences: usize,
    /// GRU hidden size H.
    pub hidden: usize,
    /// Sentence offsets predicted, ascending: 1..=3 in the paper.
    pub offsets: Vec<usize>,
}

impl TextSpec {
    /// The encoder after the lookup: the word conv and its ReLU, the one place its
    /// architecture is spelled out (model::layers); the items are the embedded sentences
    /// [E, 1, W].
    pub fn layers(&self) -> LayerList {
        let input = Shape {
            c: self.embedding,
            h: 1,
            w: self.max_words,
        };
        let mut list = LayerList::new(input, ConvInit::Torch);
        let geom = ConvGeometry {
            cout: self.channels,
            kh: 1,
            kw: self.kernel,
            sh: 1,
            sw: 1,
            ph: 0,
            pw: self.kernel / 2,
        };
        let y = list.conv(CONV, 0, geom);
        list.relu(y);
        list
    }

    /// The lookup of `sentences` sentences (B L for B passages).
    pub fn embedding(&self, sentences: usize) -> Embedding {
        Embedding {
            sentences,
            width: self.max_words,
            vocab: self.vocab,
            dim: self.embedding,
        }
    }

    /// Sentences as the data side holds them (flat ids and offsets) in the lookup's padded
    /// layout: W = max_words positions each, every id checked against the V words.
    pub fn pad(&self, sentences: &Sentences) -> Result<PaddedSentences> {
        let s = sentences;
        PaddedSentences::from_offsets(&s.tokens, &s.offsets, self.max_words, self.vocab)
    }

    /// Sentence vector size D.
    pub fn dim(&self) -> usize {
        self.channels
    }

    /// The table, then the conv's parameters.
    pub fn encoder_params(&self) -> Vec<(String, Vec<usize>, Init)> {
        let table = (
            format!("{EMBEDDING}.weight"),
            vec![self.vocab, self.embedding],
            Init::Embedding {
                std: 1.0,
                pad: PAD as usize,
            },
        );
        let mut params = vec![table];
        params.extend(self.layers().params());
        params
    }

    /// A model the planner can build: V within the vocabulary's bounds, W, L, E, D, K and H
    /// within theirs (K odd, so that 'same' padding keeps W positions), at most MAX_PARAMS
    /// parameters, and offsets that leave a query in a passage. The bounds come first, so
    /// nothing is computed from a size that could overflow.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        let range = |what: &str, value: usize, lo: usize, hi: usize| {
            if (lo..=hi).contains(&value) {
                Ok(())
            } else {
                bad(format!("{what} = {value} must lie in {lo}..={hi}"))
            }
        };
        range("vocab", self.vocab, MIN_SIZE, MAX_SIZE)?;
        range("max_words", self.max_words, 1, MAX_WORDS)?;
        range("embedding", self.embedding, 1, MAX_CHANNELS as usize)?;
        range("kernel", self.kernel, 1, MAX_KERNEL as usize)?;
        if self.kernel.is_multiple_of(2) {
            return bad(format!(
                "kernel = {} must be odd (the word conv pads by kernel / 2 at each end)",
                self.kernel
            ));
        }
        range("channels", self.channels, 1, MAX_CHANNELS as usize)?;
        range("sentences", self.sentences, 2, MAX_SENTENCES)?;
        range("hidden", self.hidden, 1, MAX_HIDDEN as usize)?;
        ParamLayout::new(self).check_size()?;
        layers::check_offsets(&self.offsets, self.sentences, "the passage's sentences")
    }
}
