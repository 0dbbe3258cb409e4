//! The kernel tests' helpers, on top of those every test binary shares (tests/common: the
//! software device, seeded random data): tensors up and down, NaN-filled outputs, closeness
//! checks with stated tolerances, and finite differences in f64. The device they use is the
//! shared one, or the one [`on_both_reductions`] runs a test body on.

use std::cell::Cell;

use cpc::gpu::{Gpu, Launch, Tensor};

pub use crate::shared::{random, rng};

thread_local! {
    /// The device this test thread's helpers use; None: the shared one.
    static DEVICE: Cell<Option<&'static Gpu>> = const { Cell::new(None) };
}

/// The device the kernel tests run on: the shared software adapter, or inside
/// [`on_both_reductions`] the one of the current round.
pub fn gpu() -> &'static Gpu {
    DEVICE.get().unwrap_or_else(crate::shared::gpu)
}

/// Run `body` twice: on a device whose reduction kernels use subgroup operations, then on
/// one with the portable kernels (shaders/shared/reduce*.wgsl), each as gpu() for the
/// body's helpers. A failure names the round.
pub fn on_both_reductions(body: impl Fn()) {
    for on in [true, false] {
        on_device(crate::shared::gpu_subgroups(on), &body);
    }
}

/// A device with subgroups that plans its row kernels (Gpu::row_dispatch) as for an adapter
/// whose largest subgroup has `max` invocations, on lavapipe's subgroups of 8: with 128 a
/// workgroup of 64 takes one row and seven of its eight subgroups idle; with 4 it takes 16
/// rows, two for each subgroup. Opened once per `max`.
pub fn gpu_assuming_subgroups_up_to(max: u32) -> &'static Gpu {
    use std::collections::HashMap;
    use std::sync::Mutex;
    static DEVICES: Mutex<Option<HashMap<u32, &'static Gpu>>> = Mutex::new(None);
    let mut devices = DEVICES.lock().unwrap();
    devices
        .get_or_insert_with(HashMap::new)
        .entry(max)
        .or_insert_with(|| {
            let mut g = crate::shared::software_gpu(cpc::gpu::Subgroups::Auto);
            assert_ne!(
                g.info.subgroup_max_size, max,
                "a size other than the adapter's own"
            );
            g.info.subgroup_max_size = max;
            Box::leak(Box::new(g))
        })
}

/// Run `body` with `device` as gpu(), telling which reductions ran if it panics.
pub fn on_device(device: &'static Gpu, body: impl Fn()) {
    struct Restore(Option<&'static Gpu>);
    impl Drop for Restore {
        fn drop(&mut self) {
            if std::thread::panicking() {
                let g = gpu();
                eprintln!("(failed with reductions: {})", g.reductions());
            }
            DEVICE.set(self.0);
        }
    }
    let _restore = Restore(DEVICE.replace(Some(device)));
    body();
}

/// Upload host data as a new tensor.
pub fn upload(shape: &[usize], data: &[f32]) -> Tensor {
    Tensor::from_slice(gpu(), "test", shape, data).unwrap()
}

/// A tensor filled with NaN, so an element the kernel never writes cannot pass as correct.
pub fn nan_tensor(shape: &[usize]) -> Tensor {
    let t = Tensor::zeros(gpu(), "out", shape).unwrap();
    t.fill(gpu(), f32::NAN).unwrap();
    t
}

pub fn run(launches: &[Launch]) {
    gpu().run(&launches.iter().collect::<Vec<_>>()).unwrap();
}

pub fn read(t: &Tensor) -> Vec<f32> {
    t.read(gpu()).unwrap()
}

/// |got - want| <= atol + rtol * |want| for every element, NaN never passes.
#[track_caller]
pub fn assert_close(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst = (0usize, 0.0f32);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g - w).abs();
        let ok = err <= atol + rtol * w.abs();
        assert!(
            ok,
            "{what}: element {i} is {g}, expected {w} (atol {atol}, rtol {rtol})"
        );
        if err > worst.1 {
            worst = (i, err);
        }
    }
}

/// Central finite differences of a scalar function of `x`, in f64, at every element.
pub fn finite_differences(x: &[f32], f: impl Fn(&[f32]) -> f64) -> Vec<f64> {
    let h = 1e-3f32;
    let mut xp = x.to_vec();
    (0..x.len())
        .map(|i| {
            let orig = xp[i];
            xp[i] = orig + h;
            let up = f(&xp);
            xp[i] = orig - h;
            let down = f(&xp);
            xp[i] = orig;
            (up - down) / (2.0 * h as f64)
        })
        .collect()
}

/// A loss that is not linear in y, so a gradient check means something:
/// L = sum(r * y) + 0.5 * sum(y^2); dL/dy = r + y.
pub fn test_loss(y: &[f32], r: &[f32]) -> f64 {
    y.iter()
        .zip(r)
        .map(|(&y, &r)| r as f64 * y as f64 + 0.5 * (y as f64).powi(2))
        .sum()
}

pub fn test_loss_grad(y: &[f32], r: &[f32]) -> Vec<f32> {
    y.iter().zip(r).map(|(&y, &r)| r + y).collect()
}

/// Compare an analytic gradient with finite differences: the error is judged relative to
/// the gradient's overall scale, as f32 forward passes limit what differences can resolve.
#[track_caller]
pub fn assert_grad(what: &str, analytic: &[f32], numeric: &[f64], tol: f64) {
    assert_eq!(analytic.len(), numeric.len(), "{what}: length");
    let scale = numeric.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-3);
    for (i, (&a, &n)) in analytic.iter().zip(numeric).enumerate() {
        let err = (a as f64 - n).abs() / scale;
        assert!(
            err <= tol,
            "{what}: element {i}: analytic {a}, finite differences {n} (scale {scale}, tol {tol})"
        );
    }
}
