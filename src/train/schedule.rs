//! Learning rate: linear warm-up, then cosine decay to a floor.
//!
//! With `W = warmup_steps`, `T = total_steps`, steps counted from 0:
//!
//! - warm-up, `step < W`: `lr = base_lr * (step + 1) / W`, so the first step already moves
//!   (`base_lr / W`, never 0) and step `W - 1` reaches `base_lr`;
//! - decay, `W <= step < T`: `lr = min_lr + (base_lr - min_lr) * (1 + cos(pi * t)) / 2` with
//!   `t = (step - W) / (T - W)`, so step `W` is `base_lr` and the curve falls smoothly;
//! - `step >= T`: `min_lr` (a run resumed past its end stays at the floor).
//!
//! `W = 0` means no warm-up; `min_lr = base_lr` gives a constant rate.

use std::f64::consts::PI;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LrSchedule {
    pub base_lr: f32,
    pub warmup_steps: u64,
    pub total_steps: u64,
    pub min_lr: f32,
}

impl LrSchedule {
    /// The schedule a training configuration asks for.
    pub fn from_config(train: &super::TrainConfig) -> Self {
        Self {
            base_lr: train.lr,
            warmup_steps: train.warmup_steps,
            total_steps: train.total_steps,
            min_lr: train.min_lr,
        }
    }

    /// The learning rate of 0-based `step`.
    pub fn lr(&self, step: u64) -> f32 {
        let (base, min) = (self.base_lr as f64, self.min_lr as f64);
        if step < self.warmup_steps {
            return (base * (step + 1) as f64 / self.warmup_steps as f64) as f32;
        }
        if step >= self.total_steps {
            return self.min_lr;
        }
        let t = (step - self.warmup_steps) as f64 / (self.total_steps - self.warmup_steps) as f64;
        (min + (base - min) * 0.5 * (1.0 + (PI * t).cos())) as f32
    }
}
