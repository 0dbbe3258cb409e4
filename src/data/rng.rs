//! Seeds derived from (seed, epoch, position, ...) so every random choice is a function of
//! where it happens, never of thread timing; the generator is ChaCha8, whose stream is fixed
//! across platforms and rand_chacha releases.

use rand::SeedableRng;

/// The generator behind every shuffle, augmentation, built-in image and synthetic utterance.
pub type DataRng = rand_chacha::ChaCha8Rng;

/// SplitMix64's finaliser: a bijection on u64 that mixes every input bit into every output bit.
pub fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One seed from several parts; order matters, so (1, 2) and (2, 1) differ.
pub fn derive_seed(parts: &[u64]) -> u64 {
    parts
        .iter()
        .fold(0x243F_6A88_85A3_08D3, |h, &p| mix64(h ^ mix64(p)))
}

/// A generator seeded from several parts, see [`derive_seed`].
pub fn rng_for(parts: &[u64]) -> DataRng {
    DataRng::seed_from_u64(derive_seed(parts))
}

/// Domain tags, so streams for different purposes never share a seed.
pub(crate) mod tag {
    pub const SHUFFLE: u64 = 1;
    pub const AUGMENT: u64 = 2;
    pub const BUILTIN: u64 = 3;
    /// A synthetic speaker's voice (data/audio/synthetic.rs).
    pub const SPEAKER: u64 = 4;
    /// One synthetic utterance.
    pub const UTTERANCE: u64 = 5;
    /// An audio window's offset and gain (data/audio/augment.rs).
    pub const AUDIO_AUGMENT: u64 = 6;
    /// One synthetic text document (data/text/synthetic.rs).
    pub const TEXT_DOCUMENT: u64 = 7;
    /// Which labelled sentences of a class go to the test side of a split by fraction
    /// (data/text/labelled.rs).
    pub const TEXT_SPLIT: u64 = 8;
}
