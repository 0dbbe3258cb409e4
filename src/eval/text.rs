//! Sentence features of a frozen text model: every sentence of a text set, read in its
//! document's order, through the model planned for batches of B passages.
//!
//! Each document's sentences are cut into consecutive passages of L (the model's sequence
//! length), the last one filled up with empty sentences; B passages make a batch, the last
//! batch filled up with empty passages. A sentence's z is its encoder vector (it depends on
//! the sentence alone), its c the context after the sentences before it in its passage. The
//! filler sentences give no rows.

use crate::data::text::vocab::check_tokenizer;
use crate::data::text::{Sentences, TextSet, Vocabulary};
use crate::error::{Error, Result};
use crate::eval::Features;
use crate::gpu::Gpu;
use crate::model::{CpcModel, Spec};

/// z [sentences, D] and c [sentences, H] of every sentence of `set`, named
/// `<document>#<sentence>`, labelled where the set has labels.
pub fn sentence_features(
    gpu: &Gpu,
    model: &CpcModel,
    set: &dyn TextSet,
    vocab: &Vocabulary,
) -> Result<(Features, Features)> {
    let t = match &model.spec {
        Spec::Text(t) => t.clone(),
        _ => {
            return Err(Error::Config(
                "sentence features need a text model's checkpoint".into(),
            ))
        }
    };
    check_tokenizer(set.tokenizer(), vocab, &set.describe())?;
    let (l, slots) = (t.sentences, model.batch * t.sentences);
    // Every sentence (None: a filler), each with its name and label.
    let mut all: Vec<Option<Row>> = Vec::new();
    let labelled = set.num_classes().is_some();
    for i in 0..set.len() {
        let doc = set.document(i)?;
        for (s, words) in doc.sentences.iter().enumerate() {
            let ids = vocab.encode(&words[..words.len().min(t.max_words)]);
            let label = doc.labels.as_ref().map(|labels| labels[s]);
            all.push(Some((ids, format!("{}#{s}", set.name(i)), label)));
        }
        all.resize(all.len().div_ceil(l) * l, None);
    }
    all.resize(all.len().div_ceil(slots) * slots, None);
    let (d, h) = (model.spec.dim(), model.spec.hidden());
    let mut z = empty(d, labelled);
    let mut c = empty(h, labelled);
    for batch in all.chunks(slots) {
        let mut sentences = Sentences::new();
        for s in batch {
            sentences.push(s.as_ref().map_or(&[][..], |(ids, _, _)| ids))?;
        }
        let (bz, bc) = model.frames(gpu, &t.pad(&sentences)?)?;
        for (k, s) in batch.iter().enumerate() {
            if let Some((_, name, label)) = s {
                for (f, rows, dim) in [(&mut z, &bz, d), (&mut c, &bc, h)] {
                    f.data.extend_from_slice(&rows[k * dim..(k + 1) * dim]);
                    f.names.push(name.clone());
                    f.indices.push(f.indices.len());
                    if let (Some(labels), Some(label)) = (f.labels.as_mut(), label) {
                        labels.push(*label);
                    }
                }
            }
        }
    }
    let names: Option<Vec<String>> = set
        .num_classes()
        .and_then(|n| (0..n as u32).map(|k| set.class_name(k)).collect());
    z.class_names = names.clone();
    c.class_names = names;
    Ok((z, c))
}

/// A sentence's token ids, name and label.
type Row = (Vec<u32>, String, Option<u32>);

fn empty(dim: usize, labelled: bool) -> Features {
    Features {
        dim,
        data: Vec::new(),
        labels: labelled.then(Vec::new),
        names: Vec::new(),
        class_names: None,
        indices: Vec::new(),
    }
}
