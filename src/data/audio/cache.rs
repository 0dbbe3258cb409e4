//! Clips kept once decoded or synthesised, so that later epochs read them back: first come
//! first kept, until they fill a byte budget. A set that fits is made once; for one that does
//! not, random windows hit the cache in the proportion it holds, as they would under any
//! eviction rule, so none is used and none is ever dropped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Clips a set keeps by default: 512 MiB, 134 M samples, 2.3 hours of 16 kHz audio.
pub const DEFAULT_CACHE_BYTES: usize = 512 << 20;

/// Clips by set index.
type Clips = HashMap<usize, Arc<[f32]>>;

/// Clips by set index, kept while they fit the budget.
pub(crate) struct Cache {
    budget: usize,
    /// Bytes held, and the clips.
    held: Mutex<(usize, Clips)>,
}

impl Cache {
    pub(crate) fn new(budget: usize) -> Cache {
        Cache {
            budget,
            held: Mutex::new((0, HashMap::new())),
        }
    }

    pub(crate) fn get(&self, i: usize) -> Option<Arc<[f32]>> {
        self.held.lock().unwrap().1.get(&i).cloned()
    }

    /// Keeps `clip` as clip `i` if it fits what is left of the budget.
    pub(crate) fn offer(&self, i: usize, clip: &Arc<[f32]>) {
        let bytes = std::mem::size_of_val(&**clip);
        let mut held = self.held.lock().unwrap();
        let (used, clips) = &mut *held;
        if used.saturating_add(bytes) <= self.budget && !clips.contains_key(&i) {
            *used += bytes;
            clips.insert(i, clip.clone());
        }
    }

    /// Bytes of clips held now (at most the budget).
    pub(crate) fn used(&self) -> usize {
        self.held.lock().unwrap().0
    }
}
