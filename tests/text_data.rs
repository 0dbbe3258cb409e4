//! The text data layer: segmentation, the vocabulary and its stored form, text files and
//! folders, labelled sentences, the synthetic corpus and the cutting into passages, on
//! fixtures each test writes into its own temp dir. No GPU.

use std::collections::HashMap;

use cpc::data::text::segment::{self, TokenizerConfig};
use cpc::data::text::vocab::{self, Vocabulary, MAX_SIZE, PAD, UNK};
use cpc::data::text::{
    self, cut_passages, LabelledSentences, PassageConfig, Sentences, SyntheticConfig,
    SyntheticText, TextFolder, TextOptions, TextSet,
};
use cpc::data::{OnBadFile, Split};
use cpc::Error;

mod common;
use common::{expect_err, TestDir};

const LOWER: TokenizerConfig = TokenizerConfig { lowercase: true };
const KEEP_CASE: TokenizerConfig = TokenizerConfig { lowercase: false };

fn words(list: &[&str]) -> Vec<String> {
    list.iter().map(|w| w.to_string()).collect()
}

fn skip() -> TextOptions {
    TextOptions {
        on_bad_file: OnBadFile::Skip,
        ..Default::default()
    }
}

// ---------------------------------------------------------------- segmentation

#[test]
fn paragraphs_split_on_blank_lines_and_join_wrapped_lines() {
    let text = "First line\r\nwraps here.\n\n  \t \nSecond paragraph.\n\n\n";
    assert_eq!(
        segment::paragraphs(text),
        ["First line wraps here.", "Second paragraph."]
    );
    // A sentence wrapped over two lines is one sentence, not two.
    let doc = segment::document("This is a\nwrapped sentence. And\nanother one!", &LOWER);
    assert_eq!(
        doc,
        [
            words(&["this", "is", "a", "wrapped", "sentence"]),
            words(&["and", "another", "one"])
        ]
    );
}

#[test]
fn sentences_and_words_follow_uax29() {
    assert_eq!(
        segment::sentences("Hello world. This is it! Is it?"),
        ["Hello world.", "This is it!", "Is it?"]
    );
    assert_eq!(
        segment::words("Don't stop: 3.14, the U.S.A. e-mail!", &LOWER),
        words(&["don't", "stop", "3.14", "the", "u.s.a", "e", "mail"])
    );
    assert_eq!(
        segment::words("Hello World", &KEEP_CASE),
        words(&["Hello", "World"])
    );
}

#[test]
fn empty_whitespace_and_punctuation_only_text_gives_no_sentences() {
    assert!(segment::document("", &LOWER).is_empty());
    assert!(segment::document(" \n\t\n  ", &LOWER).is_empty());
    assert!(segment::sentences("   ").is_empty());
    // Punctuation alone is no sentence, and has no words.
    assert!(segment::sentences("?! ... --").is_empty());
    assert!(segment::words("... !!! ?", &LOWER).is_empty());
    assert!(segment::document("!!! ... ?\n\n--", &LOWER).is_empty());
    assert_eq!(
        segment::document("!!! Hello there. ...", &LOWER),
        [words(&["hello", "there"])]
    );
}

#[test]
fn non_ascii_words_lowercase_by_unicode_rules() {
    assert_eq!(
        segment::words("Straße ÉCOLE ẞ ΣΊΣΥΦΟΣ Crème", &LOWER),
        words(&["straße", "école", "ß", "σίσυφος", "crème"])
    );
    // CJK: one word per ideograph or kana, and the ideographic full stop ends a sentence.
    let doc = segment::document("東京は大きい。次の文。", &LOWER);
    assert_eq!(doc.len(), 2);
    assert_eq!(doc[0], words(&["東", "京", "は", "大", "き", "い"]));
    assert_eq!(doc[1], words(&["次", "の", "文"]));
}

// ---------------------------------------------------------------- vocabulary

/// Counts of a small corpus: a 3, b 2, d 2, c 1.
fn small_counts() -> HashMap<String, u64> {
    [("a", 3), ("b", 2), ("d", 2), ("c", 1)]
        .into_iter()
        .map(|(w, n)| (w.to_string(), n))
        .collect()
}

#[test]
fn vocabulary_orders_by_frequency_then_alphabetically() {
    let dir = TestDir::new("vocab");
    // d and b both twice: b first (alphabetical), whatever the file order.
    std::fs::write(dir.path("1.txt"), "D a. A d c.").unwrap();
    std::fs::write(dir.path("2.txt"), "B a b.").unwrap();
    let set = TextFolder::open(&dir, &TextOptions::default()).unwrap();
    let v = Vocabulary::build(&set, 5).unwrap();
    assert_eq!(v.words(), words(&["<pad>", "<unk>", "a", "b", "d"]));
    assert_eq!(v.len(), 5);
    assert_eq!((v.id("<pad>"), v.id("<unk>")), (PAD, UNK));
    assert_eq!(v.id("a"), 2);
    assert_eq!(v.id("c"), UNK, "c is beyond the size");
    assert_eq!(v.get("c"), None);
    assert_eq!(v.word(4), Some("d"));
    assert_eq!(v.word(5), None);
    assert_eq!(v.encode(&["d", "zz", "a"]), [4, UNK, 2]);
    assert_eq!(v.tokenizer(), LOWER);

    // Larger than the corpus: every word, no more.
    let all = Vocabulary::from_counts(&small_counts(), 100, LOWER).unwrap();
    assert_eq!(all.words(), words(&["<pad>", "<unk>", "a", "b", "d", "c"]));
    // Only the special tokens.
    let two = Vocabulary::from_counts(&small_counts(), 2, LOWER).unwrap();
    assert_eq!(two.encode(&["a", "b"]), [UNK, UNK]);
}

#[test]
fn vocabulary_size_is_checked() {
    for size in [0, 1, MAX_SIZE + 1] {
        expect_err(
            Vocabulary::from_counts(&small_counts(), size, LOWER),
            &format!("{size} entries; a vocabulary has 2 to {MAX_SIZE}"),
        );
    }
    let mut too_many = words(&["<pad>", "<unk>"]);
    too_many.extend((0..MAX_SIZE - 1).map(|i| format!("w{i}")));
    expect_err(
        Vocabulary::from_words(too_many, LOWER),
        &format!("{} entries", MAX_SIZE + 1),
    );
}

#[test]
fn vocabulary_round_trips_through_its_stored_form() {
    let v = Vocabulary::from_counts(&small_counts(), 6, KEEP_CASE).unwrap();
    let json = v.to_json();
    assert!(!json.contains('\n'), "one line for the metadata");
    assert_eq!(Vocabulary::from_json(&json).unwrap(), v);
    assert_eq!(vocab::METADATA_KEY, "vocabulary");
}

#[test]
fn corrupted_stored_vocabularies_are_refused_by_name() {
    let stored = |words: &str| {
        format!(
            r#"{{"format":"cpc-vocabulary","version":1,"tokenizer":{{"lowercase":true}},"words":{words}}}"#
        )
    };
    // The untouched form reads.
    Vocabulary::from_json(&stored(r#"["<pad>","<unk>","a"]"#)).unwrap();
    let cases = [
        (
            stored(r#"["<pad>","<unk>","a","b","a"]"#),
            "the word \"a\" appears twice, as ids 2 and 4",
        ),
        (
            stored(r#"["<unk>","<pad>","a"]"#),
            "id 0 is \"<unk>\", expected the special token \"<pad>\"",
        ),
        (
            stored(r#"["<pad>","a"]"#),
            "id 1 is \"a\", expected the special token \"<unk>\"",
        ),
        (stored(r#"["<pad>","<unk>",""]"#), "id 2 is an empty word"),
        (stored(r#"["<pad>"]"#), "1 entries"),
        (stored(r#"["<pad>","<unk>","<pad>"]"#), "appears twice"),
        (stored(r#""a b c""#), "not a stored vocabulary"),
        (
            stored(r#"["<pad>","<unk>"]"#).replace("cpc-vocabulary", "other"),
            "format \"other\"",
        ),
        (
            stored(r#"["<pad>","<unk>"]"#).replace("\"version\":1", "\"version\":2"),
            "version 2",
        ),
        (
            stored(r#"["<pad>","<unk>"]"#).replace("\"version\"", "\"extra\":0,\"version\""),
            "unknown field",
        ),
        ("not json".to_string(), "not a stored vocabulary"),
        (
            stored(r#"["<pad>","<unk>","a"]"#)[..40].to_string(),
            "not a stored vocabulary",
        ),
    ];
    for (json, what) in cases {
        let e = expect_err(Vocabulary::from_json(&json), what);
        assert!(matches!(e, Error::Data { .. }), "{e:?}");
        assert!(e.to_string().starts_with("vocabulary: "), "{e}");
    }
}

// ---------------------------------------------------------------- files and folders

#[test]
fn bad_utf8_names_the_file_and_byte_offset() {
    let dir = TestDir::new("utf8");
    let mut bytes = b"Good line.\nBad ".to_vec();
    bytes.extend([0xFF, b'!']);
    std::fs::write(dir.path("docs/bad.txt"), &bytes).unwrap();
    std::fs::write(dir.path("docs/good.txt"), "Fine text here.").unwrap();
    let e = expect_err(
        TextFolder::open(&dir.join("docs"), &TextOptions::default()),
        "bad.txt: not UTF-8: invalid byte 0xFF at byte offset 15 (line 2)",
    );
    assert!(matches!(e, Error::BadImage { .. }), "{e:?}");
    // A lone file, given by its path, the same.
    expect_err(
        TextFolder::open(&dir.join("docs/bad.txt"), &TextOptions::default()),
        "byte offset 15",
    );
}

#[test]
fn bad_files_are_skipped_and_counted() {
    let dir = TestDir::new("skip");
    std::fs::write(dir.path("a.txt"), "One. Two.").unwrap();
    std::fs::write(dir.path("b.txt"), [b'x', 0xC3]).unwrap(); // cut inside a character
    std::fs::write(dir.path("c.txt"), "Three.").unwrap();
    let set = TextFolder::open(&dir, &skip()).unwrap();
    assert_eq!(set.len(), 2);
    assert_eq!(set.skipped(), 1);
    let skipped = set.skipped_files();
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0].0.to_str(), Some("b.txt"));
    assert!(
        skipped[0].1.contains("byte offset 1 (line 1)"),
        "{skipped:?}"
    );
    assert_eq!((set.name(0), set.name(1)), ("a.txt".into(), "c.txt".into()));
    assert!(set.describe().contains("1 skipped"), "{}", set.describe());
    // Every file bad: an error under Skip too.
    let bad = TestDir::new("skip-all");
    std::fs::write(bad.path("b.txt"), [0xFF]).unwrap();
    expect_err(
        TextFolder::open(&bad, &skip()),
        "all 1 text files were skipped",
    );
}

#[test]
fn empty_and_missing_folders_are_clear_errors() {
    let dir = TestDir::new("empty");
    expect_err(
        TextFolder::open(&dir, &TextOptions::default()),
        "no text files",
    );
    std::fs::write(dir.path("notes.md"), "Not a .txt file.").unwrap();
    expect_err(
        TextFolder::open(&dir, &TextOptions::default()),
        "no text files",
    );
    expect_err(
        text::open(Some(&dir.join("missing")), &TextOptions::default()),
        "no such file or folder",
    );
}

#[test]
fn files_folders_and_classes_read_as_documents() {
    let dir = TestDir::new("docs");
    // A byte-order mark is dropped; any extension for a lone file.
    std::fs::write(dir.path("one.text"), "\u{FEFF}Hello there. General Kenobi!").unwrap();
    let set = text::open(Some(&dir.join("one.text")), &TextOptions::default()).unwrap();
    assert_eq!(set.len(), 1);
    assert_eq!(set.num_classes(), None);
    let doc = set.document(0).unwrap();
    assert_eq!(
        doc.sentences,
        [words(&["hello", "there"]), words(&["general", "kenobi"])]
    );
    assert_eq!(doc.labels, None);

    std::fs::write(dir.path("c/sport/x.TXT"), "Goal. Match.\n\nReferee.").unwrap();
    std::fs::write(dir.path("c/arts/y.txt"), "Paint.").unwrap();
    std::fs::write(dir.path("c/arts/.hidden.txt"), "Never read.").unwrap();
    let set = text::open(Some(&dir.join("c")), &TextOptions::default()).unwrap();
    assert_eq!(set.len(), 2);
    assert_eq!(set.num_classes(), Some(2));
    assert_eq!(set.class_name(0).as_deref(), Some("arts"));
    assert_eq!(set.name(1), "sport/x.TXT");
    assert_eq!(set.document(1).unwrap().labels, Some(vec![1, 1, 1]));
    assert_eq!(set.document(0).unwrap().labels, Some(vec![0]));
}

// ---------------------------------------------------------------- labelled sentences

#[test]
fn tsv_labels_are_classes_in_name_order() {
    let dir = TestDir::new("tsv");
    let path = dir.path("probe.tsv");
    std::fs::write(
        &path,
        "pos\tA fine film.\n\nneg\tDull, dull! Awful.\r\n neutral \tIt was.\npos\t...\n",
    )
    .unwrap();
    let set = LabelledSentences::open(Some(&path), &TextOptions::default()).unwrap();
    assert_eq!(set.class_names(), words(&["neg", "neutral", "pos"]));
    assert_eq!(set.labels(), [2, 0, 1, 2]);
    // One example per line, not cut into sentences; punctuation only is kept, empty.
    assert_eq!(set.words(1), words(&["dull", "dull", "awful"]));
    assert!(set.words(3).is_empty());
    assert_eq!((set.name(0), set.name(2)), ("probe.tsv:1", "probe.tsv:4"));
}

#[test]
fn tsv_errors_name_the_file_and_line() {
    let dir = TestDir::new("tsv-bad");
    let path = dir.path("bad.tsv");
    std::fs::write(&path, "pos\tGood.\n\nno tab on this line\n").unwrap();
    let e = expect_err(
        LabelledSentences::open(Some(&path), &TextOptions::default()),
        "bad.tsv: line 3 has no tab: expected label<TAB>sentence",
    );
    assert!(matches!(e, Error::Data { .. }));
    std::fs::write(&path, "pos\tGood.\n \tNo label.\n").unwrap();
    expect_err(
        LabelledSentences::open(Some(&path), &TextOptions::default()),
        "line 2 has an empty label",
    );
    std::fs::write(&path, [b'a', b'\t', 0xFE]).unwrap();
    expect_err(
        LabelledSentences::open(Some(&path), &TextOptions::default()),
        "invalid byte 0xFE at byte offset 2 (line 1)",
    );
    std::fs::write(&path, "\n\n").unwrap();
    expect_err(
        LabelledSentences::open(Some(&path), &TextOptions::default()),
        "holds no labelled sentence",
    );
}

#[test]
fn class_folders_hold_one_sentence_per_line() {
    let dir = TestDir::new("classes");
    std::fs::write(
        dir.path("sets/pos/a.txt"),
        "Loved it.\n\nGreat fun, really.\n",
    )
    .unwrap();
    std::fs::write(dir.path("sets/pos/b.txt"), "Superb.").unwrap();
    std::fs::write(dir.path("sets/neg/c.txt"), "Boring. Long.\n").unwrap();
    std::fs::write(dir.path("sets/neg/d.txt"), [0xFF]).unwrap();
    let root = dir.join("sets");
    expect_err(
        LabelledSentences::open(Some(&root), &TextOptions::default()),
        "d.txt: not UTF-8",
    );
    let set = LabelledSentences::open(Some(&root), &skip()).unwrap();
    assert_eq!(set.skipped(), 1);
    assert_eq!(set.class_names(), words(&["neg", "pos"]));
    assert_eq!(set.labels(), [0, 1, 1, 1]);
    assert_eq!(set.words(0), words(&["boring", "long"]));
    assert_eq!(set.name(2), "pos/a.txt:3");
    // A flat folder has no classes.
    std::fs::write(dir.path("flat/a.txt"), "No class.").unwrap();
    expect_err(
        LabelledSentences::open(Some(&dir.join("flat")), &TextOptions::default()),
        "has no class folders",
    );
}

#[test]
fn labelled_split_takes_a_fraction_of_each_class() {
    let dir = TestDir::new("split");
    let mut tsv = String::new();
    for i in 0..40 {
        tsv += &format!(
            "{}\tSentence number {i}.\n",
            if i % 4 == 0 { "rare" } else { "common" }
        );
    }
    let path = dir.path("all.tsv");
    std::fs::write(&path, tsv).unwrap();
    let set = LabelledSentences::open(Some(&path), &TextOptions::default()).unwrap();
    let (train, test) = set.split(0.25).unwrap();
    let count = |s: &LabelledSentences, class| s.labels().iter().filter(|&&l| l == class).count();
    // common (class 0): 30, rare: 10; a quarter of each, rounded.
    assert_eq!((count(&test, 0), count(&test, 1)), (8, 3));
    assert_eq!(train.len() + test.len(), set.len());
    let mut names: Vec<&str> = (0..train.len())
        .map(|i| train.name(i))
        .chain((0..test.len()).map(|i| test.name(i)))
        .collect();
    names.sort();
    names.dedup();
    assert_eq!(
        names.len(),
        set.len(),
        "disjoint, and together the whole set"
    );
    assert_eq!(
        set.split(0.25).unwrap(),
        (train, test),
        "the same split again"
    );
    for bad in [0.0, 1.0, -0.5, f64::NAN] {
        expect_err(set.split(bad), "strictly between 0 and 1");
    }
    expect_err(set.split(0.001), "each side needs some");
}

// ---------------------------------------------------------------- synthetic corpus

fn synthetic(seed: u64, split: Split) -> SyntheticText {
    let config = SyntheticConfig {
        seed,
        ..Default::default()
    };
    SyntheticText::new(config, split, LOWER).unwrap()
}

#[test]
fn synthetic_text_is_deterministic_and_seeded() {
    let a = synthetic(7, Split::Train);
    let b = synthetic(7, Split::Train);
    assert_eq!(a.generate(3), b.generate(3));
    assert_eq!(a.document(3).unwrap(), b.document(3).unwrap());
    assert_ne!(
        a.generate(3).text,
        synthetic(8, Split::Train).generate(3).text
    );
    assert_ne!(
        a.generate(3).text,
        synthetic(7, Split::Test).generate(3).text
    );
    assert_ne!(a.generate(3).text, a.generate(4).text);
    println!("{}", a.generate(0).text);
}

#[test]
fn synthetic_sentences_are_varied_and_labelled_by_topic() {
    let set = synthetic(0, Split::Train);
    let (mut lengths, mut topics, mut changes) = (Vec::new(), vec![0usize; 8], 0);
    let mut all_words = std::collections::HashSet::new();
    for i in 0..set.len() {
        let g = set.generate(i);
        let doc = set.document(i).unwrap();
        // The segmenter finds exactly the generated sentences (document() checks the count).
        assert_eq!(doc.labels.as_ref(), Some(&g.topics));
        assert_eq!(g.topics[0] as usize, i % 8, "the first topic cycles");
        changes += g.topics.windows(2).filter(|w| w[0] != w[1]).count();
        for (s, &t) in doc.sentences.iter().zip(&g.topics) {
            lengths.push(s.len());
            topics[t as usize] += 1;
            all_words.extend(s.iter().cloned());
        }
    }
    assert_eq!(set.num_classes(), Some(8));
    assert_eq!(set.class_name(3).as_deref(), Some("kitchen"));
    assert!(topics.iter().all(|&n| n > 300), "{topics:?}");
    assert!(lengths.contains(&1) && lengths.iter().max() >= Some(&15));
    let sentences = lengths.len();
    assert!(
        changes > 0 && changes < sentences / 20,
        "topics change rarely: {changes}"
    );
    for w in ["café", "école", "the", "harbour"] {
        assert!(all_words.contains(w), "{w}");
    }
    assert!(!all_words.iter().any(|w| w.chars().any(char::is_uppercase)));
}

#[test]
fn synthetic_config_is_checked() {
    let make = |config: SyntheticConfig, split| SyntheticText::new(config, split, LOWER);
    let base = SyntheticConfig::default();
    for topics in [1, 9] {
        expect_err(
            make(
                SyntheticConfig {
                    topics,
                    ..base.clone()
                },
                Split::Train,
            ),
            "topics",
        );
    }
    expect_err(
        make(base.clone(), Split::Unlabeled),
        "train and test splits only",
    );
    expect_err(
        make(
            SyntheticConfig {
                test_documents: 0,
                ..base.clone()
            },
            Split::Test,
        ),
        "no documents",
    );
    expect_err(
        make(
            SyntheticConfig {
                paragraphs: 0,
                ..base
            },
            Split::Train,
        ),
        "paragraphs",
    );
}

/// Bag-of-words counts of `ids`, L2-normalised, without the unknown word.
fn bag(ids: &[u32], size: usize) -> Vec<f32> {
    let mut v = vec![0.0f32; size];
    for &id in ids.iter().filter(|&&id| id != UNK) {
        v[id as usize] += 1.0;
    }
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
    v.iter().map(|x| x / norm).collect()
}

#[test]
fn synthetic_topics_separate_by_bag_of_words() {
    let train = synthetic(0, Split::Train);
    let test = synthetic(0, Split::Test);
    let vocab = Vocabulary::build(&train, 1000).unwrap();
    let (n, topics) = (vocab.len(), 8);
    let train = LabelledSentences::from_set(&train).unwrap();
    let test = LabelledSentences::from_set(&test).unwrap();
    let mut centroids = vec![vec![0.0f32; n]; topics];
    let encoded = train.encode(&vocab, 64).unwrap();
    for k in 0..train.len() {
        let b = bag(encoded.sentence(k), n);
        for (c, x) in centroids[train.label(k) as usize].iter_mut().zip(b) {
            *c += x;
        }
    }
    let encoded = test.encode(&vocab, 64).unwrap();
    let correct = (0..test.len())
        .filter(|&k| {
            let b = bag(encoded.sentence(k), n);
            let score = |c: &Vec<f32>| {
                let dot: f32 = c.iter().zip(&b).map(|(x, y)| x * y).sum();
                dot / c.iter().map(|x| x * x).sum::<f32>().sqrt()
            };
            let best = (0..topics)
                .max_by(|&i, &j| score(&centroids[i]).total_cmp(&score(&centroids[j])))
                .unwrap();
            best as u32 == test.label(k)
        })
        .count();
    let accuracy = correct as f64 / test.len() as f64;
    println!(
        "nearest-centroid accuracy on {} test sentences: {accuracy:.3}",
        test.len()
    );
    assert!(accuracy > 0.5 && accuracy < 0.95, "accuracy {accuracy}");
}

// ---------------------------------------------------------------- passages

#[test]
fn passages_cut_documents_into_offsets() {
    let dir = TestDir::new("passages");
    // Class "a": 5 sentences; class "b": 3; L = 2 keeps 2 + 1 passages, drops 1 + 1.
    std::fs::write(dir.path("a/1.txt"), "X y z w. Y. Z z. W x y z. X.").unwrap();
    std::fs::write(dir.path("b/2.txt"), "Y y. Z. X y z.").unwrap();
    let set = TextFolder::open(&dir, &TextOptions::default()).unwrap();
    let v = Vocabulary::from_words(words(&["<pad>", "<unk>", "x", "y", "z"]), LOWER).unwrap();
    let cut = cut_passages(
        &set,
        &v,
        &PassageConfig {
            sentences: 2,
            max_words: 3,
        },
    )
    .unwrap();
    let p = &cut.passages;
    assert_eq!((cut.dropped, cut.truncated), (2, 2));
    assert_eq!(p.len(), 3);
    assert_eq!(p.origins, [(0, 0), (0, 2), (1, 0)]);
    // "x y z" (w cut), "y" | "z z", "<unk> x y" (cut) | "y y", "z".
    assert_eq!(p.sentences.tokens, [2, 3, 4, 3, 4, 4, 1, 2, 3, 3, 3, 4]);
    assert_eq!(p.sentences.offsets, [0, 3, 4, 6, 9, 11, 12]);
    assert_eq!(p.labels.as_deref(), Some(&[0, 0, 0, 0, 1, 1][..]));
    assert_eq!(p.sentence(1, 0), [4, 4]);
    assert_eq!(p.sentences.length(3), 3);
    assert_eq!(p.sentences.max_length(), 3);

    // A batch of passages 2 and 0: offsets from 0 again.
    let batch = p.gather(&[2, 0]).unwrap();
    assert_eq!(batch.sentences.tokens, [3, 3, 4, 2, 3, 4, 3]);
    assert_eq!(batch.sentences.offsets, [0, 2, 3, 6, 7]);
    assert_eq!(batch.labels.as_deref(), Some(&[1, 1, 0, 0][..]));
    assert_eq!(batch.origins, [(1, 0), (0, 0)]);

    let cut3 = |sentences, max_words| {
        cut_passages(
            &set,
            &v,
            &PassageConfig {
                sentences,
                max_words,
            },
        )
    };
    expect_err(cut3(0, 3), "at least 1 sentence");
    expect_err(cut3(2, 0), "word limit must be at least 1");
    expect_err(cut3(6, 3), "no document has 6 sentences");
    let other = Vocabulary::from_words(words(&["<pad>", "<unk>"]), KEEP_CASE).unwrap();
    expect_err(
        cut_passages(
            &set,
            &other,
            &PassageConfig {
                sentences: 2,
                max_words: 3,
            },
        ),
        "the vocabulary's words were read with",
    );
}

#[test]
fn labelled_sentences_encode_to_offsets_with_empty_ones() {
    let dir = TestDir::new("encode");
    let path = dir.path("s.tsv");
    std::fs::write(&path, "a\tX y z x.\nb\t!!!\na\tZ.\n").unwrap();
    let set = LabelledSentences::open(Some(&path), &TextOptions::default()).unwrap();
    let v = Vocabulary::from_words(words(&["<pad>", "<unk>", "x", "y"]), LOWER).unwrap();
    let s = set.encode(&v, 3).unwrap();
    assert_eq!(
        s,
        Sentences {
            tokens: vec![2, 3, 1, 1],
            offsets: vec![0, 3, 3, 4],
        }
    );
    assert_eq!((s.len(), s.length(1)), (3, 0));
    assert!(Sentences::new().is_empty());
}

// ---------------------------------------------------------------- the training loader

/// The synthetic training split cut into passages of 4 sentences, served 8 at a time.
fn loader(seed: u64, state: cpc::data::LoaderState) -> text::TextLoader {
    let set = synthetic(0, Split::Train);
    let vocab = Vocabulary::build(&set, 500).unwrap();
    let passage = PassageConfig {
        sentences: 4,
        max_words: 12,
    };
    text::TextLoader::new(&set, &vocab, &passage, 8, seed, state).unwrap()
}

#[test]
fn the_loader_serves_shuffled_epochs_deterministically_and_resumes() {
    use cpc::data::LoaderState;
    let mut a = loader(3, LoaderState::default());
    let mut b = loader(3, LoaderState::default());
    let per_epoch = a.batches_per_epoch() as usize;
    assert_eq!(per_epoch, a.passages() / 8);
    assert!(per_epoch >= 3, "{} passages", a.passages());
    // One epoch visits every passage at most once (by its origin), in batches of 8 x 4.
    let mut seen = std::collections::HashSet::new();
    let mut epoch = Vec::new();
    for _ in 0..per_epoch {
        let batch = a.next_batch().unwrap();
        assert_eq!((batch.len(), batch.sentences.len()), (8, 32));
        assert_eq!(batch.sentences.offsets[0], 0);
        for &origin in &batch.origins {
            assert!(seen.insert(origin), "{origin:?} twice in one epoch");
        }
        assert_eq!(batch, b.next_batch().unwrap(), "same seed, same batches");
        epoch.push(batch);
    }
    assert_eq!(
        a.state(),
        LoaderState {
            epoch: 1,
            position: 0
        }
    );
    // The next epoch is another shuffle; a loader started at its state serves the same.
    let state = a.state();
    let next = a.next_batch().unwrap();
    assert_ne!(next.origins, epoch[0].origins);
    assert_eq!(loader(3, state).next_batch().unwrap(), next);
    // Mid-epoch too.
    let mid = LoaderState {
        epoch: 0,
        position: 16,
    };
    assert_eq!(loader(3, mid).next_batch().unwrap(), epoch[2]);
    // Another seed, another order.
    assert_ne!(
        loader(4, LoaderState::default())
            .next_batch()
            .unwrap()
            .origins,
        epoch[0].origins
    );
}

#[test]
fn a_set_of_fewer_passages_than_a_batch_is_refused() {
    let set = synthetic(0, Split::Test);
    let vocab = Vocabulary::build(&set, 100).unwrap();
    let passage = PassageConfig {
        sentences: 4,
        max_words: 12,
    };
    let n = cut_passages(&set, &vocab, &passage).unwrap().passages.len();
    let err = text::TextLoader::new(&set, &vocab, &passage, n + 1, 0, Default::default())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains(&format!("{n} passages")) && err.contains("synthetic"),
        "{err}"
    );
}

// ---------------------------------------------------------------- the probe's input row

#[test]
fn the_bag_of_words_counts_each_sentences_words_over_its_length() {
    use cpc::eval::input::{bag_of_words, BAG_WORDS};
    let dir = TestDir::new("bag");
    let path = dir.path("probe.tsv");
    std::fs::write(&path, "a\tX y x.\nb\tZ w w w.\na\t...\nb\tY\n").unwrap();
    let set = LabelledSentences::open(Some(&path), &TextOptions::default()).unwrap();
    // Ids: <pad> 0, <unk> 1, x 2, y 3; z and w are unknown.
    let v = Vocabulary::from_words(words(&["<pad>", "<unk>", "x", "y"]), LOWER).unwrap();
    let f = bag_of_words(&set, &v, 3).unwrap();
    assert_eq!(f.dim, 3, "<unk>, x, y");
    assert_eq!(f.labels.as_deref(), Some(&[0, 1, 0, 1][..]));
    let third = 1.0 / 3.0;
    assert_eq!(f.row(0), [0.0, 2.0 * third, third]);
    // Cut to its first 3 words: "z w w", all unknown.
    assert_eq!(f.row(1), [1.0, 0.0, 0.0]);
    assert_eq!(f.row(2), [0.0, 0.0, 0.0], "punctuation only: no words");
    assert_eq!(f.row(3), [0.0, 0.0, 1.0]);
    assert_eq!(f.names[3], "probe.tsv:4");
    // A vocabulary wider than the cap: its rarest words count as unknown.
    let mut many = words(&["<pad>", "<unk>"]);
    many.extend((0..BAG_WORDS + 5).map(|i| format!("w{i}")));
    many.push("x".into());
    let v = Vocabulary::from_words(many, LOWER).unwrap();
    let f = bag_of_words(&set, &v, 8).unwrap();
    assert_eq!(f.dim, BAG_WORDS);
    assert_eq!(f.row(0)[0], 1.0, "x is past the cap");
}
