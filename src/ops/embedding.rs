//! Word embeddings of a batch of sentences (shaders/embedding.wgsl): the lookup of each
//! word's row of the table, and its backward, which adds the rows' gradients up without
//! float atomics, in a fixed order.
//!
//! **The GPU layout is padded, not ragged.** A batch is N sentences (B passages of L), each
//! W = max_words positions: token ids [N, W] (u32) with [`PAD`] past each sentence's length,
//! and the lengths [N] (u32; 0 is an empty sentence). The data side's flat ids and offsets
//! become this layout on the host ([`PaddedSentences::from_offsets`]). The lookup writes
//! out [N, E, 1, W], channel-major per sentence, out[n, e, w] = table[ids[n, w], e]: an image
//! of height 1 that the existing conv kernels convolve with a 1 x K kernel
//! (ops::conv2d, KH = 1), and whose mean over each sentence's words ops::masked_mean takes.
//!
//! **PAD is zero by construction.** The lookup writes 0 at a PAD position without reading
//! the table, and the backward never touches PAD's row: padded positions are exactly zero
//! whatever row 0 holds (a model should still initialise it to zero, as
//! torch.nn.Embedding(padding_idx = 0) does, so that a checkpoint does not hold a row that
//! means nothing), and a per-sentence 1-D conv with zero padding at both ends is what the
//! padded conv computes at every position inside the sentence.
//!
//! **The backward is deterministic.** dTable[v, :] += the sum over the positions p with
//! ids[p] = v of dOut[n(p), :, w(p)], each word's positions summed in ascending order
//! (p = n W + w) from 0 and then added to its row. The ids of a batch are on the host when
//! they are uploaded, so the host builds the index ([`WordPositions`], a CSR): the batch's
//! distinct words but PAD, ascending, and each one's positions. One invocation per (distinct
//! word, channel) sums its list; no two write the same element. [`Tokens`] holds the ids,
//! the lengths and the index on the GPU, sized once for the worst case (every position a
//! word of its own: min(N W, V - 1) distinct words, N W positions), and rewrites them on
//! each upload: nothing is allocated on the GPU per step.
//!
//! Cost, P = N W positions, P' <= P of them words, D <= min(P', V - 1) distinct words
//! ([`forward_cost`], [`backward_cost`]):
//! - forward: no FLOPs; reads the ids (P u32) and P' rows of E floats, writes N E W floats:
//!   4 (P + P' E + P E) bytes.
//! - backward: P' E additions plus D E for the rows; reads the index (2 D + P' + 2 u32),
//!   P' E floats of dOut, and reads and writes D rows: 4 (2 D + P' + 2 + P' E + 2 D E)
//!   bytes.
//!
//! Both depend on the batch's words, which the plan does not know: the launch's
//! [`crate::gpu::Cost`] is the worst case (P' = P, D = min(P, V - 1)), which its dispatch
//! covers too (the backward's invocations past the batch's D words return at once), and
//! [`Launch::cost_now`] counts the batch last uploaded ([`Uploaded`]), as `cpc profile`
//! reports it.

use std::ops::Range;
use std::sync::{Arc, Mutex};

use crate::error::{shape_err, Result};
use crate::gpu::{rel_offset, spread, Cost, Gpu, Launch, Shader, Tensor};

/// The padding id: positions past a sentence's length, the vocabulary's padding token.
pub use crate::data::text::vocab::PAD;

crate::uniform_struct! {
    /// WGSL twin: EmbeddingParams in shaders/embedding.wgsl.
    pub struct EmbeddingParams {
        pub sentences: u32,
        pub width: u32,
        pub dim: u32,
        pub ids_offset: u32,
        pub table_offset: u32,
        pub out_offset: u32,
        pub index_offset: u32,
        /// Where the index's sections start, counted from its first element (see
        /// [`Embedding::index_sections`]).
        pub words_at: u32,
        pub starts_at: u32,
        pub positions_at: u32,
        pub d_out_offset: u32,
        pub d_table_offset: u32,
    }
}

const KERNEL: &str = "embedding";

/// The shape of one batch's lookup: N sentences of W positions, a table of V words of E
/// channels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Embedding {
    /// N = B passages x L sentences.
    pub sentences: usize,
    /// W: positions a sentence (the word limit).
    pub width: usize,
    /// V: rows of the table, PAD's included.
    pub vocab: usize,
    /// E: channels of a row.
    pub dim: usize,
}

impl Embedding {
    /// N W: the ids' elements.
    pub fn positions(&self) -> usize {
        self.sentences * self.width
    }

    pub fn ids_shape(&self) -> [usize; 2] {
        [self.sentences, self.width]
    }

    pub fn table_shape(&self) -> [usize; 2] {
        [self.vocab, self.dim]
    }

    /// [N, E, 1, W]: the conv's input layout (ops::conv2d's x with H = 1).
    pub fn out_shape(&self) -> [usize; 4] {
        [self.sentences, self.dim, 1, self.width]
    }

    /// Most distinct words a batch may hold (PAD not counted): min(N W, V - 1).
    pub fn max_distinct(&self) -> usize {
        self.positions().min(self.vocab.saturating_sub(1))
    }

    /// The most a batch of this shape holds: every position a word, as many distinct as
    /// the vocabulary allows.
    pub fn worst_case(&self) -> WordCounts {
        WordCounts {
            words: self.positions(),
            distinct: self.max_distinct(),
        }
    }

    /// The index's sections in its u32 buffer, as offsets from its start: the count of
    /// distinct words (at 0), then the words (`max_distinct`), the starts (`max_distinct`
    /// + 1) and the positions (N W); the last entry is the index's length.
    pub fn index_sections(&self) -> [usize; 4] {
        let words = 1;
        let starts = words + self.max_distinct();
        let positions = starts + self.max_distinct() + 1;
        [words, starts, positions, positions + self.positions()]
    }

    /// Every extent nonzero, V >= 2 (PAD and a word), and the kernels' u32 indices
    /// (N E W, V E) in range.
    fn check(&self) -> Result<()> {
        let Embedding {
            sentences,
            width,
            vocab,
            dim,
        } = *self;
        if sentences == 0 || width == 0 || dim == 0 || vocab < 2 {
            return shape_err(
                KERNEL,
                format!("{self:?}: sentences, width and dim must be at least 1 and vocab at least 2 (PAD and a word)"),
            );
        }
        let largest = (self.positions() * dim)
            .max(vocab * dim)
            .max(self.index_sections()[3]);
        if largest > u32::MAX as usize {
            return shape_err(
                KERNEL,
                format!("{self:?} has {largest} elements in one tensor, past u32 indices"),
            );
        }
        Ok(())
    }

    fn check_tensors(&self, tensors: &[(&str, &Tensor, &[usize])]) -> Result<()> {
        self.check()?;
        for &(name, t, want) in tensors {
            if t.len() != want.iter().product::<usize>() {
                return shape_err(
                    KERNEL,
                    format!("{name} has shape {:?} but {self:?} needs {want:?}", t.shape),
                );
            }
        }
        Ok(())
    }
}

fn bad_batch<T>(message: String) -> Result<T> {
    shape_err("embedding batch", message)
}

/// A batch of sentences in the GPU layout: ids [N, W] with PAD past each sentence's length,
/// and the lengths [N]. Built checked: within its length a sentence holds words 1..V, past
/// it PAD.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaddedSentences {
    width: usize,
    ids: Vec<u32>,
    lengths: Vec<u32>,
}

impl PaddedSentences {
    /// Flat ids and offsets (data::text::Sentences: sentence k is
    /// `tokens[offsets[k]..offsets[k + 1]]`) padded to `width` positions each, each id
    /// checked against a vocabulary of `vocab` words. A sentence longer than `width` is an
    /// error (the data side truncates to the word limit), as is an id that is PAD or past
    /// the vocabulary, or offsets that do not run from 0 up to the tokens' end.
    pub fn from_offsets(
        tokens: &[u32],
        offsets: &[u32],
        width: usize,
        vocab: usize,
    ) -> Result<PaddedSentences> {
        let ends_ok = offsets.first() == Some(&0) && offsets.last() == Some(&(tokens.len() as u32));
        if !ends_ok || offsets.windows(2).any(|w| w[0] > w[1]) {
            return bad_batch(format!(
                "offsets must rise from 0 to the {} tokens, one more than the sentences; got {} offsets {:?}..{:?}",
                tokens.len(),
                offsets.len(),
                offsets.first(),
                offsets.last()
            ));
        }
        let n = offsets.len() - 1;
        let mut ids = vec![PAD; n * width];
        let mut lengths = Vec::with_capacity(n);
        for (k, w) in offsets.windows(2).enumerate() {
            let sentence = &tokens[w[0] as usize..w[1] as usize];
            if sentence.len() > width {
                return bad_batch(format!(
                    "sentence {k} has {} words, past the width of {width}",
                    sentence.len()
                ));
            }
            ids[k * width..k * width + sentence.len()].copy_from_slice(sentence);
            lengths.push(sentence.len() as u32);
        }
        PaddedSentences::new(width, ids, lengths, vocab)
    }

    /// The layout as given, checked against a vocabulary of `vocab` words.
    pub fn new(width: usize, ids: Vec<u32>, lengths: Vec<u32>, vocab: usize) -> Result<Self> {
        if width == 0 || ids.len() != lengths.len() * width {
            return bad_batch(format!(
                "{} ids for {} sentences of width {width}",
                ids.len(),
                lengths.len()
            ));
        }
        for (n, &len) in lengths.iter().enumerate() {
            if len as usize > width {
                return bad_batch(format!(
                    "sentence {n} has length {len}, past the width of {width}"
                ));
            }
            let row = &ids[n * width..(n + 1) * width];
            let (words, padding) = row.split_at(len as usize);
            if let Some(w) = words
                .iter()
                .position(|&id| id == PAD || id as usize >= vocab)
            {
                return bad_batch(format!(
                    "sentence {n} position {w}: id {} is PAD or past the vocabulary of {vocab}",
                    words[w]
                ));
            }
            if let Some(w) = padding.iter().position(|&id| id != PAD) {
                return bad_batch(format!(
                    "sentence {n} position {}: id {} past its length {len} (must be PAD)",
                    len as usize + w,
                    padding[w]
                ));
            }
        }
        Ok(PaddedSentences {
            width,
            ids,
            lengths,
        })
    }

    /// N.
    pub fn sentences(&self) -> usize {
        self.lengths.len()
    }

    /// W.
    pub fn width(&self) -> usize {
        self.width
    }

    /// [N, W]: sentence n's id at w is ids[n W + w].
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    /// [N].
    pub fn lengths(&self) -> &[u32] {
        &self.lengths
    }
}

/// The backward's index of a batch (a CSR): its distinct words but PAD, and where each
/// occurs. Word `words[d]` occurs at `positions[starts[d]..starts[d + 1]]`, a position
/// being p = n W + w into the ids.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WordPositions {
    /// Ascending.
    pub words: Vec<u32>,
    /// words + 1 entries, from 0 to positions.len().
    pub starts: Vec<u32>,
    /// Grouped by word, ascending within each group.
    pub positions: Vec<u32>,
}

impl WordPositions {
    /// The index of `ids` (any layout: positions are indices into it); PAD is skipped and an
    /// id of `vocab` or more is an error.
    pub fn build(ids: &[u32], vocab: usize) -> Result<WordPositions> {
        if ids.len() > u32::MAX as usize {
            return bad_batch(format!("{} ids, past u32 positions", ids.len()));
        }
        if let Some(p) = ids.iter().position(|&id| id as usize >= vocab) {
            return bad_batch(format!(
                "position {p}: id {} past the vocabulary of {vocab}",
                ids[p]
            ));
        }
        // (word, position) pairs sorted: grouped by word, each group's positions ascending.
        let mut pairs: Vec<(u32, u32)> = (ids.iter().enumerate())
            .filter(|&(_, &id)| id != PAD)
            .map(|(p, &id)| (id, p as u32))
            .collect();
        pairs.sort_unstable();
        let mut index = WordPositions {
            words: Vec::new(),
            starts: vec![0],
            positions: pairs.iter().map(|&(_, p)| p).collect(),
        };
        for (i, &(word, _)) in pairs.iter().enumerate() {
            if index.words.last() != Some(&word) {
                if !index.words.is_empty() {
                    index.starts.push(i as u32);
                }
                index.words.push(word);
            }
        }
        if !index.words.is_empty() {
            index.starts.push(pairs.len() as u32);
        }
        Ok(index)
    }

    /// The index as [`Tokens::index`] holds it: sections at [`Embedding::index_sections`],
    /// the count of distinct words first, unused entries 0.
    fn packed(&self, e: &Embedding) -> Vec<u32> {
        let [words_at, starts_at, positions_at, len] = e.index_sections();
        let mut out = vec![0; len];
        out[0] = self.words.len() as u32;
        out[words_at..words_at + self.words.len()].copy_from_slice(&self.words);
        out[starts_at..starts_at + self.starts.len()].copy_from_slice(&self.starts);
        out[positions_at..positions_at + self.positions.len()].copy_from_slice(&self.positions);
        out
    }
}

/// What the lookup's and its backward's work depends on: the positions of a batch that are
/// words (P', not PAD) and its distinct words (D).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WordCounts {
    pub words: usize,
    pub distinct: usize,
}

/// The lookup's cost on a batch of shape `e` holding `c`: no FLOPs; reads the ids (P u32)
/// and each word's row of E floats, writes out (N E W floats).
pub fn forward_cost(e: &Embedding, c: WordCounts) -> Cost {
    let p = e.positions();
    Cost::of(0, (p + c.words * e.dim + p * e.dim) as u64)
}

/// The backward's cost on a batch of shape `e` holding `c`: an addition for each word's E
/// gradients and for each distinct word's E channels into its row; reads the index (the
/// count, D words, D + 1 starts, P' positions), each word's E floats of dOut, and reads and
/// writes D rows of E.
pub fn backward_cost(e: &Embedding, c: WordCounts) -> Cost {
    let (w, d) = (c.words, c.distinct);
    let index = 1 + d + (d + 1) + w;
    Cost::of(
        ((w + d) * e.dim) as u64,
        (index + w * e.dim + 2 * d * e.dim) as u64,
    )
}

/// What the batch last uploaded to a [`Tokens`] holds (set by [`Tokens::upload`], nothing
/// before the first), shared with the launches whose cost depends on it: the lookup, its
/// backward, and the masked means over the sentences' words (model::cpc).
#[derive(Clone, Debug, Default)]
pub struct Uploaded(Arc<Mutex<Option<UploadedBatch>>>);

#[derive(Debug)]
struct UploadedBatch {
    lengths: Vec<u32>,
    distinct: usize,
}

impl Uploaded {
    fn with<T>(&self, f: impl FnOnce(&UploadedBatch) -> Option<T>) -> Option<T> {
        // A panic elsewhere while holding the lock leaves a whole batch or none: still good.
        let held = self.0.lock().unwrap_or_else(|e| e.into_inner());
        held.as_ref().and_then(f)
    }

    /// Words in sentences `sentences` of the last batch: the sum of their lengths.
    pub fn words(&self, sentences: Range<usize>) -> Option<usize> {
        self.with(|b| Some(b.lengths.get(sentences)?.iter().map(|&l| l as usize).sum()))
    }

    /// The last batch's words and distinct words.
    pub fn counts(&self) -> Option<WordCounts> {
        self.with(|b| {
            Some(WordCounts {
                words: b.lengths.iter().map(|&l| l as usize).sum(),
                distinct: b.distinct,
            })
        })
    }
}

/// One batch's token buffers on the GPU, allocated once for its shape and rewritten by
/// [`Tokens::upload`]: ids [N, W] and lengths [N] (u32), and the backward's index
/// ([`WordPositions`] packed at [`Embedding::index_sections`], sized for the worst case).
pub struct Tokens {
    pub shape: Embedding,
    pub ids: Tensor,
    pub lengths: Tensor,
    pub index: Tensor,
    /// What the last upload held, for the costs of the launches that read it.
    pub uploaded: Uploaded,
}

impl Tokens {
    pub fn new(gpu: &Gpu, shape: Embedding) -> Result<Tokens> {
        shape.check()?;
        Ok(Tokens {
            shape,
            ids: Tensor::zeros(gpu, "token ids", &shape.ids_shape())?,
            lengths: Tensor::zeros(gpu, "sentence lengths", &[shape.sentences])?,
            index: Tensor::zeros(gpu, "word positions", &[shape.index_sections()[3]])?,
            uploaded: Uploaded::default(),
        })
    }

    /// Write a batch of this shape: its ids, lengths and index (queued; lands before the
    /// next submission).
    pub fn upload(&self, gpu: &Gpu, batch: &PaddedSentences) -> Result<()> {
        let e = &self.shape;
        if batch.sentences() != e.sentences || batch.width != e.width {
            return bad_batch(format!(
                "a batch of {} sentences of width {} for buffers of {} of width {}",
                batch.sentences(),
                batch.width,
                e.sentences,
                e.width
            ));
        }
        let index = WordPositions::build(&batch.ids, e.vocab)?;
        self.ids.write_u32(gpu, &batch.ids)?;
        self.lengths.write_u32(gpu, &batch.lengths)?;
        self.index.write_u32(gpu, &index.packed(e))?;
        *self.uploaded.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(UploadedBatch {
            lengths: batch.lengths.clone(),
            distinct: index.words.len(),
        });
        Ok(())
    }
}

/// The uniforms both entry points read, the tensors' offsets set by each launcher.
fn params(gpu: &Gpu, tokens: &Tokens) -> EmbeddingParams {
    let e = &tokens.shape;
    let [words_at, starts_at, positions_at, _] = e.index_sections().map(|v| v as u32);
    EmbeddingParams {
        sentences: e.sentences as u32,
        width: e.width as u32,
        dim: e.dim as u32,
        index_offset: rel_offset(gpu, &tokens.index),
        words_at,
        starts_at,
        positions_at,
        ..Default::default()
    }
}

/// The shader's override constants: the padding id.
fn constants() -> [(&'static str, f64); 1] {
    [("PAD", PAD as f64)]
}

/// Ids spread over the vocabulary but PAD, every `width`-th PAD: what the CPU references of
/// `cpc profile --compare` run on.
fn reference_ids(e: &Embedding) -> Vec<u32> {
    (0..e.positions())
        .map(|p| match p % e.width {
            0 => PAD,
            _ => 1 + (p % (e.vocab - 1)) as u32,
        })
        .collect()
}

/// Plan out[n, e, 0, w] = table[ids[n, w], e], 0 where the id is PAD: out [N, E, 1, W] from
/// the tokens' ids and table [V, E]. Overwrites out.
pub fn forward(gpu: &Gpu, tokens: &Tokens, table: &Tensor, out: &Tensor) -> Result<Launch> {
    let e = tokens.shape;
    e.check_tensors(&[
        ("table", table, &e.table_shape()),
        ("out", out, &e.out_shape()),
    ])?;
    let params = EmbeddingParams {
        ids_offset: rel_offset(gpu, &tokens.ids),
        table_offset: rel_offset(gpu, table),
        out_offset: rel_offset(gpu, out),
        ..params(gpu, tokens)
    };
    let n = out.len();
    let wg = spread(gpu, KERNEL, n.div_ceil(256) as u64)?;
    Launch::with_bindings(
        gpu,
        Shader::Embedding,
        "forward",
        &constants(),
        &params,
        &[(1, &tokens.ids), (2, table), (3, out)],
        wg,
    )
    .map(|mut l| {
        l.cost = forward_cost(&e, e.worst_case());
        let uploaded = tokens.uploaded.clone();
        l.cost_of_inputs(move || forward_cost(&e, uploaded.counts().unwrap_or(e.worst_case())))
            .reference(move || {
                let mut out = vec![0.0; n];
                let table = vec![0.5; e.vocab * e.dim];
                crate::cpu::embedding::forward(&e, &reference_ids(&e), &table, &mut out);
            })
    })
}

/// Plan d_table[v, :] += the sum of d_out[n, :, 0, w] over the positions (n, w) of word v in
/// the tokens' index, in ascending order; PAD's row and the rows of words not in the batch
/// are left alone. d_out [N, E, 1, W], d_table [V, E]: a parameter gradient, accumulated.
pub fn backward(gpu: &Gpu, tokens: &Tokens, d_out: &Tensor, d_table: &Tensor) -> Result<Launch> {
    let e = tokens.shape;
    e.check_tensors(&[
        ("d_out", d_out, &e.out_shape()),
        ("d_table", d_table, &e.table_shape()),
    ])?;
    let params = EmbeddingParams {
        d_out_offset: rel_offset(gpu, d_out),
        d_table_offset: rel_offset(gpu, d_table),
        ..params(gpu, tokens)
    };
    let (p, d) = (e.positions(), e.max_distinct());
    // One invocation per (distinct word, channel) of the worst case.
    let wg = spread(gpu, KERNEL, (d * e.dim).div_ceil(256) as u64)?;
    Launch::with_bindings(
        gpu,
        Shader::Embedding,
        "backward",
        &constants(),
        &params,
        &[(4, &tokens.index), (5, d_out), (6, d_table)],
        wg,
    )
    .map(|mut l| {
        l.cost = backward_cost(&e, e.worst_case());
        let uploaded = tokens.uploaded.clone();
        l.cost_of_inputs(move || backward_cost(&e, uploaded.counts().unwrap_or(e.worst_case())))
            .reference(move || {
                let mut d_table = vec![0.0; e.vocab * e.dim];
                let d_out = vec![0.5; p * e.dim];
                crate::cpu::embedding::backward(&e, &reference_ids(&e), &d_out, &mut d_table);
            })
    })
}
