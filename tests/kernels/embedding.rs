use cpc::cpu;
use cpc::ops::conv2d::{self, Activation, Conv2d, ConvKernel};
use cpc::ops::elementwise::{self, Op};
use cpc::ops::embedding::{self, Embedding, PaddedSentences, Tokens, WordPositions, PAD};
use cpc::ops::masked_mean;
use cpc::ops::matmul::Tiling;
use rand::Rng;

use crate::common::*;
use crate::shared::expect_err;

/// Word 3 many times in one sentence and in three, an empty sentence, a one-word sentence,
/// UNK (1) and the last word of the vocabulary (12): N = 5, W = 5, V = 13.
fn repeated_words() -> Vec<Vec<u32>> {
    vec![
        vec![3, 3, 7, 3, 3],
        vec![],
        vec![5],
        vec![3, 12, 1],
        vec![3, 3],
    ]
}

/// `n` sentences of 0..=width random words of 1..vocab.
fn random_sentences(seed: u64, n: usize, width: usize, vocab: u32) -> Vec<Vec<u32>> {
    let mut r = rng(seed);
    (0..n)
        .map(|_| {
            let len = r.random_range(0..=width);
            (0..len).map(|_| r.random_range(1..vocab)).collect()
        })
        .collect()
}

/// The sentences in the GPU layout, through the flat ids and offsets the data side makes.
fn pad(sentences: &[Vec<u32>], width: usize, vocab: usize) -> PaddedSentences {
    let tokens: Vec<u32> = sentences.concat();
    let mut offsets = vec![0];
    for s in sentences {
        offsets.push(offsets.last().unwrap() + s.len() as u32);
    }
    PaddedSentences::from_offsets(&tokens, &offsets, width, vocab).unwrap()
}

/// The batch's shape with E = `dim`, its token buffers uploaded.
fn tokens(batch: &PaddedSentences, vocab: usize, dim: usize) -> Tokens {
    let shape = Embedding {
        sentences: batch.sentences(),
        width: batch.width(),
        vocab,
        dim,
    };
    let t = Tokens::new(gpu(), shape).unwrap();
    t.upload(gpu(), batch).unwrap();
    t
}

/// (sentences, width, vocab, dim): the repeated words at E = 7; 9 random sentences at
/// E = 7 (315 outputs: past one workgroup); 20 at E = 33, W = 6, V = 50 (the backward's
/// 49 x 33 threads over several workgroups).
fn cases() -> Vec<(Vec<Vec<u32>>, usize, usize, usize)> {
    vec![
        (repeated_words(), 5, 13, 7),
        (random_sentences(1, 9, 5, 13), 5, 13, 7),
        (random_sentences(2, 20, 6, 50), 6, 50, 33),
    ]
}

#[test]
fn embedding_forward_matches_reference() {
    for (seed, (sentences, width, vocab, dim)) in cases().into_iter().enumerate() {
        let batch = pad(&sentences, width, vocab);
        let t = tokens(&batch, vocab, dim);
        // Every row random, PAD's too: padded positions must not read it.
        let table = random(&mut rng(10 + seed as u64), vocab * dim);
        assert!(table[..dim].iter().all(|&v| v != 0.0));
        let out = nan_tensor(&t.shape.out_shape());
        run(&[embedding::forward(gpu(), &t, &upload(&[vocab, dim], &table), &out).unwrap()]);
        let mut want = vec![0.0; out.len()];
        cpu::embedding::forward(&t.shape, batch.ids(), &table, &mut want);
        let got = read(&out);
        // A copy: exact.
        assert_close(&format!("case {seed}"), &got, &want, 0.0, 0.0);
        for (n, s) in sentences.iter().enumerate() {
            for e in 0..dim {
                let row = &got[(n * dim + e) * width..(n * dim + e + 1) * width];
                assert!(row[s.len()..].iter().all(|&v| v == 0.0), "padding of {n}");
                for (w, &id) in s.iter().enumerate() {
                    assert_eq!(
                        row[w],
                        table[id as usize * dim + e],
                        "sentence {n} word {w}"
                    );
                }
            }
        }
    }
}

#[test]
fn embedding_backward_matches_reference_and_is_deterministic() {
    for (seed, (sentences, width, vocab, dim)) in cases().into_iter().enumerate() {
        let batch = pad(&sentences, width, vocab);
        let t = tokens(&batch, vocab, dim);
        let mut r = rng(20 + seed as u64);
        let mut d_out = random(&mut r, t.shape.positions() * dim);
        // NaN at every PAD position: one read would poison a row.
        for (p, &id) in batch.ids().iter().enumerate() {
            if id == PAD {
                let (n, w) = (p / width, p % width);
                for e in 0..dim {
                    d_out[(n * dim + e) * width + w] = f32::NAN;
                }
            }
        }
        // A parameter gradient accumulates: start from values of its own.
        let before = random(&mut r, vocab * dim);
        let td_out = upload(&t.shape.out_shape(), &d_out);
        let backward = |d_table: &[f32]| {
            let td_table = upload(&[vocab, dim], d_table);
            run(&[embedding::backward(gpu(), &t, &td_out, &td_table).unwrap()]);
            read(&td_table)
        };
        let got = backward(&before);
        let mut want = before.clone();
        cpu::embedding::backward(&t.shape, batch.ids(), &d_out, &mut want);
        let what = format!("case {seed}");
        assert_close(&what, &got, &want, 1e-6, 1e-5);
        // PAD's row and the rows of words the batch lacks are left exactly as they were.
        let present = WordPositions::build(batch.ids(), vocab).unwrap().words;
        for v in (0..vocab).filter(|&v| !present.contains(&(v as u32))) {
            let row = v * dim..(v + 1) * dim;
            assert_eq!(
                bits(&got[row.clone()]),
                bits(&before[row]),
                "{what}: row {v}"
            );
        }
        // The same sums in the same order: bit for bit.
        assert_eq!(bits(&backward(&before)), bits(&got), "{what}: a second run");
    }
}

fn bits(x: &[f32]) -> Vec<u32> {
    x.iter().map(|v| v.to_bits()).collect()
}

#[test]
fn embedding_backward_reference_matches_finite_differences() {
    let (width, vocab, dim) = (5, 13, 7);
    let batch = pad(&repeated_words(), width, vocab);
    let shape = Embedding {
        sentences: batch.sentences(),
        width,
        vocab,
        dim,
    };
    let mut r = rng(30);
    let (table, w) = (
        random(&mut r, vocab * dim),
        random(&mut r, shape.positions() * dim),
    );
    let lookup = |table: &[f32]| {
        let mut out = vec![0.0; shape.positions() * dim];
        cpu::embedding::forward(&shape, batch.ids(), table, &mut out);
        out
    };
    let d_out = test_loss_grad(&lookup(&table), &w);
    let mut d_table = vec![0.0; vocab * dim];
    cpu::embedding::backward(&shape, batch.ids(), &d_out, &mut d_table);
    assert_grad(
        "d_table",
        &d_table,
        &finite_differences(&table, |t| test_loss(&lookup(t), &w)),
        1e-3,
    );
}

#[test]
fn word_positions_list_each_word_once_with_its_positions_in_order() {
    // Positions n W + w at W = 5 of repeated_words(); PAD skipped.
    let batch = pad(&repeated_words(), 5, 13);
    let index = WordPositions::build(batch.ids(), 13).unwrap();
    assert_eq!(index.words, [1, 3, 5, 7, 12]);
    assert_eq!(index.starts, [0, 1, 8, 9, 10, 11]);
    assert_eq!(index.positions, [17, 0, 1, 3, 4, 15, 20, 21, 10, 2, 16]);
    let empty = WordPositions::build(&[PAD; 6], 13).unwrap();
    assert_eq!(
        (empty.words.len(), empty.starts, empty.positions.len()),
        (0, vec![0], 0)
    );
    expect_err(
        WordPositions::build(&[2, 13], 13),
        "id 13 past the vocabulary of 13",
    );
}

#[test]
fn padded_sentences_are_checked() {
    let batch = pad(&[vec![4, 2], vec![], vec![9, 9, 9]], 3, 10);
    assert_eq!(batch.ids(), [4, 2, PAD, PAD, PAD, PAD, 9, 9, 9]);
    assert_eq!(batch.lengths(), [2, 0, 3]);
    let from =
        |tokens: &[u32], offsets: &[u32]| PaddedSentences::from_offsets(tokens, offsets, 3, 10);
    expect_err(
        from(&[1, 2, 3, 4], &[0, 4]),
        "sentence 0 has 4 words, past the width of 3",
    );
    expect_err(
        from(&[1, PAD], &[0, 2]),
        "sentence 0 position 1: id 0 is PAD",
    );
    expect_err(
        from(&[1, 10], &[0, 1, 2]),
        "sentence 1 position 0: id 10 is PAD or past",
    );
    expect_err(
        from(&[1, 2], &[0, 1]),
        "offsets must rise from 0 to the 2 tokens",
    );
    expect_err(from(&[1, 2], &[0, 2, 1, 2]), "offsets must rise");
    let new = |ids: Vec<u32>, lengths: Vec<u32>| PaddedSentences::new(3, ids, lengths, 10);
    expect_err(
        new(vec![1, 2, 3], vec![1]),
        "position 1: id 2 past its length 1 (must be PAD)",
    );
    expect_err(new(vec![1, 2, 3], vec![4]), "length 4, past the width of 3");
    expect_err(new(vec![1, 2], vec![1]), "2 ids for 1 sentences of width 3");
}

#[test]
fn embedding_rejects_mismatched_shapes() {
    let batch = pad(&repeated_words(), 5, 13);
    let t = tokens(&batch, 13, 7);
    let other = pad(&repeated_words()[..4], 5, 13);
    expect_err(
        t.upload(gpu(), &other),
        "a batch of 4 sentences of width 5 for buffers of 5",
    );
    let e = expect_err(
        embedding::forward(
            gpu(),
            &t,
            &upload(&[13, 6], &[0.0; 78]),
            &nan_tensor(&[5, 7, 1, 5]),
        ),
        "embedding",
    );
    assert!(e.to_string().contains("table has shape [13, 6]"), "{e}");
    expect_err(
        embedding::backward(
            gpu(),
            &t,
            &nan_tensor(&[5, 7, 1, 4]),
            &upload(&[13, 7], &[0.0; 91]),
        ),
        "d_out has shape [5, 7, 1, 4]",
    );
    let no_words = Embedding {
        vocab: 1,
        ..t.shape
    };
    expect_err(Tokens::new(gpu(), no_words), "vocab at least 2");
}

/// The sentence encoder's reference, sentence by sentence without padding: each word's
/// embedding, a 1-D conv of odd width K with zero padding K / 2 at the sentence's two ends
/// and a ReLU, then the mean over the sentence's words (0 for an empty one). Returns the
/// conv's outputs before the ReLU, [C, len] per sentence, and the sentence vectors [N, C].
fn encode_plainly(
    sentences: &[Vec<u32>],
    table: &[f32],
    (w, b): (&[f32], &[f32]),
    [dim, cout, k]: [usize; 3],
) -> (Vec<Vec<f32>>, Vec<f32>) {
    let mut convs = Vec::new();
    let mut means = Vec::new();
    for s in sentences {
        let x = |ci: usize, t: isize| match usize::try_from(t).ok().and_then(|t| s.get(t)) {
            Some(&id) => table[id as usize * dim + ci] as f64,
            None => 0.0,
        };
        let mut conv = vec![0.0; cout * s.len()];
        for co in 0..cout {
            let mut sum = 0.0;
            for o in 0..s.len() {
                let mut y = b[co] as f64;
                for ci in 0..dim {
                    for tap in 0..k {
                        let t = o as isize + tap as isize - (k / 2) as isize;
                        y += w[(co * dim + ci) * k + tap] as f64 * x(ci, t);
                    }
                }
                conv[co * s.len() + o] = y as f32;
                sum += y.max(0.0);
            }
            means.push(if s.is_empty() {
                0.0
            } else {
                (sum / s.len() as f64) as f32
            });
        }
        convs.push(conv);
    }
    (convs, means)
}

#[test]
fn sentence_encoder_over_the_padded_batch_is_a_1d_conv_of_each_sentence() {
    // Embeddings, the word conv (the existing conv kernels: [N, E, 1, W] images, a 1 x K
    // kernel padded 0 x K / 2, ReLU fused) and the masked mean, forward and backward, on
    // the GPU, against each sentence encoded by itself; the table's gradient against
    // central differences of that reference. K = 3 on the device's conv kernel, K = 5 (as
    // wide as the sentences) on the GPU path's tiled one.
    check_sentence_encoder(3, ConvKernel::for_device(gpu()), 40);
    check_sentence_encoder(5, ConvKernel::Tiled(Tiling::DEFAULT), 41);
}

fn check_sentence_encoder(k: usize, kernel: ConvKernel, seed: u64) {
    let (width, vocab, dim, cout) = (5, 13, 7, 6);
    let sentences = repeated_words();
    let batch = pad(&sentences, width, vocab);
    let t = tokens(&batch, vocab, dim);
    let n = batch.sentences();
    let c = Conv2d {
        n,
        cin: dim,
        h: 1,
        w: width,
        cout,
        kh: 1,
        kw: k,
        sh: 1,
        sw: 1,
        ph: 0,
        pw: k / 2,
    };
    assert_eq!(c.out_hw(), (1, width), "'same' padding keeps W positions");
    let mut r = rng(seed);
    let (table, w, b) = (
        random(&mut r, vocab * dim),
        random(&mut r, c.w_len()),
        random(&mut r, cout),
    );
    let (tw, tb) = (upload(&c.w_shape(), &w), upload(&[cout], &b));
    let ttable = upload(&[vocab, dim], &table);
    let (x, y, z) = (
        nan_tensor(&c.x_shape()),
        nan_tensor(&c.y_shape()),
        nan_tensor(&[n, cout]),
    );
    let dims = [n, cout, width];
    let mut launches = vec![embedding::forward(gpu(), &t, &ttable, &x).unwrap()];
    launches.extend(
        conv2d::forward_with(gpu(), &c, &x, &tw, &tb, &y, Activation::Relu, kernel).unwrap(),
    );
    launches.push(masked_mean::forward(gpu(), &y, &t.lengths, dims, &z).unwrap());
    run(&launches);

    let (pre, means) = encode_plainly(&sentences, &table, (&w, &b), [dim, cout, k]);
    let got_y = read(&y);
    for (i, s) in sentences.iter().enumerate() {
        let inside: Vec<f32> = (0..cout)
            .flat_map(|co| got_y[(i * cout + co) * width..][..s.len()].to_vec())
            .collect();
        let relu: Vec<f32> = pre[i].iter().map(|&v| v.max(0.0)).collect();
        assert_close(
            &format!("{kernel:?} conv of sentence {i}"),
            &inside,
            &relu,
            1e-5,
            1e-5,
        );
    }
    let got_z = read(&z);
    assert_close(
        &format!("{kernel:?} sentence vectors"),
        &got_z,
        &means,
        1e-5,
        1e-5,
    );

    // Backward: dz of the test loss, through the mean, the ReLU and the conv into dx, then
    // into the table's gradient.
    let rz = random(&mut r, n * cout);
    let dz = upload(&[n, cout], &test_loss_grad(&got_z, &rz));
    let (dy, dpre, dx) = (
        nan_tensor(&c.y_shape()),
        nan_tensor(&c.y_shape()),
        nan_tensor(&c.x_shape()),
    );
    let d_table = upload(&[vocab, dim], &vec![0.0; vocab * dim]);
    let mut launches = vec![
        masked_mean::backward(gpu(), &dz, &t.lengths, dims, &dy, false).unwrap(),
        elementwise::launch(gpu(), Op::ReluBackward, &y, Some(&dy), &dpre, 1.0, false).unwrap(),
    ];
    launches.extend(
        conv2d::backward_input_with(gpu(), &c, &dpre, &tw, &dx, false, None, kernel).unwrap(),
    );
    launches.push(embedding::backward(gpu(), &t, &dx, &d_table).unwrap());
    run(&launches);
    // Central differences of step 1e-3 see no ReLU kink: every pre-activation inside a
    // sentence is further from 0 than that step can move it.
    assert!(pre.concat().iter().all(|&v| v.abs() > 1e-2), "{pre:?}");
    let loss = |table: &[f32]| {
        test_loss(
            &encode_plainly(&sentences, table, (&w, &b), [dim, cout, k]).1,
            &rz,
        )
    };
    assert_grad(
        &format!("{kernel:?} d_table"),
        &read(&d_table),
        &finite_differences(&table, loss),
        1e-3,
    );
}
