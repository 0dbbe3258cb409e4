//! The layout that the context GRU (ops::gru) and the InfoNCE loss (ops::infonce) share: the
//! encoder's vectors as `blocks` blocks (images, clips) of `steps` time steps by `width`
//! sequences side by side, row (b * T + t) * W + w holding block b's step t of sequence w.
//!
//! | modality | blocks | steps T | width W | sequences |
//! |---|---|---|---|---|
//! | vision | images B | grid rows G | grid columns G | B * G columns, the GRU down each |
//! | audio | clips B | frames | 1 | B |
//!
//! Every row of every block is a candidate of the loss; the queries of offset o are the rows
//! with t + o < T.

/// B blocks of T steps of W sequences.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Sequences {
    pub blocks: usize,
    pub steps: usize,
    pub width: usize,
}

impl Sequences {
    /// Vision: each image's G x G patch grid, a sequence down each column.
    pub fn grid(batch: usize, grid: usize) -> Sequences {
        Sequences {
            blocks: batch,
            steps: grid,
            width: grid,
        }
    }

    /// One sequence of `frames` steps per block (audio).
    pub fn frames(batch: usize, frames: usize) -> Sequences {
        Sequences {
            blocks: batch,
            steps: frames,
            width: 1,
        }
    }

    /// Independent sequences: B * W.
    pub fn seqs(&self) -> usize {
        self.blocks * self.width
    }

    /// Rows of the layout: B * T * W.
    pub fn rows(&self) -> usize {
        self.blocks * self.steps * self.width
    }

    /// Rows of one block: T * W.
    pub fn block_rows(&self) -> usize {
        self.steps * self.width
    }

    pub fn is_empty(&self) -> bool {
        self.rows() == 0
    }
}
