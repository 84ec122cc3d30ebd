//! Mixed precision for `train`: [`GradScaler`], dynamic loss scaling as PyTorch's
//! `torch.amp.GradScaler` does it (the reference trains with fp16 autocast and a scaler), and
//! [`Autocast`], the dtype libtorch's CUDA autocast runs in (`precision: amp` = fp16 with the
//! scaler, `precision: bf16` = bfloat16, whose range needs no scaler).
//!
//! The scaler: the loss is multiplied by `scale` before backward; each optimiser's gradients are
//! divided by it before clipping (`unscale_`), and an optimiser whose gradients hold an inf/NaN
//! skips its step; after the step, any inf/NaN halves the scale (`backoff_factor` 0.5) and resets
//! the count of good steps, `growth_interval` (2000) good steps in a row double it. Initial scale
//! 2^16. The state (scale, good steps) is checkpointed with the epoch.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::optim::Sgd;

/// PyTorch's defaults.
pub const INIT_SCALE: f64 = 65536.0;
pub const GROWTH_FACTOR: f64 = 2.0;
pub const BACKOFF_FACTOR: f64 = 0.5;
pub const GROWTH_INTERVAL: u32 = 2000;

/// The checkpointed part of a [`GradScaler`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ScalerState {
    pub scale: f64,
    /// Good steps since the last change of the scale.
    pub growth_tracker: u32,
}

/// Dynamic loss scaling (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct GradScaler {
    pub state: ScalerState,
    pub growth_factor: f64,
    pub backoff_factor: f64,
    pub growth_interval: u32,
}

impl Default for GradScaler {
    fn default() -> Self {
        GradScaler::new(INIT_SCALE, GROWTH_INTERVAL)
    }
}

impl GradScaler {
    pub fn new(init_scale: f64, growth_interval: u32) -> Self {
        GradScaler {
            state: ScalerState {
                scale: init_scale,
                growth_tracker: 0,
            },
            growth_factor: GROWTH_FACTOR,
            backoff_factor: BACKOFF_FACTOR,
            growth_interval,
        }
    }

    pub fn scale(&self) -> f64 {
        self.state.scale
    }

    /// `loss · scale`, the tensor to call `backward` on.
    pub fn scale_loss(&self, loss: &Tensor) -> Tensor {
        loss * self.state.scale
    }

    /// `unscale_`: divide `opt`'s gradients by the scale (in f32, as PyTorch's
    /// `_amp_foreach_non_finite_check_and_unscale_`); true when any of them holds an inf or NaN.
    pub fn unscale(&self, opt: &Sgd) -> bool {
        let inv = (1.0 / self.state.scale) as f32 as f64;
        tch::no_grad(|| {
            let mut found = false;
            for g in opt.grads() {
                let mut g = g;
                let _ = g.g_mul_scalar_(inv);
                if !found {
                    found = !bool::try_from(g.isfinite().all()).unwrap_or(false);
                }
            }
            found
        })
    }

    /// `update`, after the optimisers' steps: back off on inf/NaN, grow after enough good steps.
    pub fn update(&mut self, found_inf: bool) {
        let s = &mut self.state;
        if found_inf {
            s.scale *= self.backoff_factor;
            s.growth_tracker = 0;
        } else {
            s.growth_tracker += 1;
            if s.growth_tracker == self.growth_interval {
                s.scale *= self.growth_factor;
                s.growth_tracker = 0;
            }
        }
    }
}

/// The reduced dtype of libtorch's CUDA autocast.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Autocast {
    /// No autocast (fp32; also every precision on the CPU).
    Off,
    Fp16,
    Bf16,
}

// libtorch 2.11's own C++ entry points (tch exposes only on/off); DeviceType and ScalarType are
// `enum class : int8_t`, passed as one byte.
unsafe extern "C" {
    #[link_name = "_ZN2at8autocast18set_autocast_dtypeEN3c1010DeviceTypeENS1_10ScalarTypeE"]
    fn at_autocast_set_autocast_dtype(device: i8, dtype: i8);
    #[link_name = "_ZN2at8autocast18get_autocast_dtypeEN3c1010DeviceTypeE"]
    fn at_autocast_get_autocast_dtype(device: i8) -> i8;
}

/// `c10::DeviceType::CUDA`.
const CUDA: i8 = 1;

/// `c10::ScalarType` of the two reduced dtypes (the order of `AT_FORALL_SCALAR_TYPES_WITH_COMPLEX_
/// AND_QINTS`: Byte 0, ..., Half 5, ..., BFloat16 15).
fn scalar_type(kind: Kind) -> i8 {
    match kind {
        Kind::BFloat16 => 15,
        _ => 5,
    }
}

/// Set the dtype CUDA autocast casts to (`Kind::Half` or `Kind::BFloat16`; process-wide, as
/// `torch.autocast(dtype=...)` does).
pub fn set_cuda_autocast_dtype(kind: Kind) {
    // SAFETY: both arguments are valid enum values; the function only stores the dtype in a
    // thread-local of libtorch.
    unsafe { at_autocast_set_autocast_dtype(CUDA, scalar_type(kind)) }
}

/// The dtype CUDA autocast casts to.
pub fn cuda_autocast_dtype() -> i8 {
    // SAFETY: reads a thread-local of libtorch.
    unsafe { at_autocast_get_autocast_dtype(CUDA) }
}

impl Autocast {
    /// Run `f` under this autocast (on a CUDA device).
    pub fn run<T>(self, f: impl FnOnce() -> T) -> T {
        match self {
            Autocast::Off => f(),
            Autocast::Fp16 => {
                set_cuda_autocast_dtype(Kind::Half);
                tch::autocast(true, f)
            }
            Autocast::Bf16 => {
                set_cuda_autocast_dtype(Kind::BFloat16);
                tch::autocast(true, f)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn::VarStore;
    use tch::Device;

    fn opt_with_grad(values: &[f32]) -> (VarStore, Sgd, Tensor) {
        let vs = VarStore::new(Device::Cpu);
        let w = vs.root().zeros("w", &[values.len() as i64]);
        let loss = (&w * Tensor::from_slice(values)).sum(Kind::Float);
        loss.backward();
        let opt = Sgd::new(&vs, 0.9, 0.0);
        (vs, opt, w)
    }

    #[test]
    fn unscale_divides_and_finds_non_finite_gradients() {
        let s = GradScaler::new(4.0, 3);
        let (_vs, opt, w) = opt_with_grad(&[8.0, -4.0]);
        assert!(!s.unscale(&opt));
        assert_eq!(Vec::<f32>::try_from(w.grad()).unwrap(), vec![2.0, -1.0]);
        let (_vs, opt, _) = opt_with_grad(&[1.0, f32::INFINITY]);
        assert!(s.unscale(&opt));
        let (_vs, opt, _) = opt_with_grad(&[f32::NAN, 1.0]);
        assert!(s.unscale(&opt));
    }

    #[test]
    fn scale_backs_off_on_overflow_and_grows_after_the_interval() {
        let mut s = GradScaler::new(1024.0, 3);
        s.update(false);
        s.update(false);
        assert_eq!(
            s.state,
            ScalerState {
                scale: 1024.0,
                growth_tracker: 2
            }
        );
        s.update(true);
        assert_eq!(
            s.state,
            ScalerState {
                scale: 512.0,
                growth_tracker: 0
            }
        );
        for _ in 0..3 {
            s.update(false);
        }
        assert_eq!(
            s.state,
            ScalerState {
                scale: 1024.0,
                growth_tracker: 0
            }
        );
        let d = GradScaler::default();
        assert_eq!((d.scale(), d.growth_interval), (65536.0, 2000));
    }

    #[test]
    fn cuda_autocast_dtype_is_set_through_libtorch() {
        let before = cuda_autocast_dtype();
        set_cuda_autocast_dtype(Kind::BFloat16);
        assert_eq!(cuda_autocast_dtype(), scalar_type(Kind::BFloat16));
        set_cuda_autocast_dtype(Kind::Half);
        assert_eq!(cuda_autocast_dtype(), scalar_type(Kind::Half));
        assert_eq!(
            before,
            scalar_type(Kind::Half),
            "libtorch's default is fp16"
        );
    }
}
