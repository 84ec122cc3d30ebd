//! [`Sgd`]: PyTorch's SGD (momentum, dampening 0, coupled weight decay, no Nesterov) written over
//! tensors so that its momentum buffers can be checkpointed and restored (tch's wrapped libtorch
//! optimiser does not expose its state), plus `clip_grad_norm` over one VarStore.

use std::collections::HashMap;

use tch::nn::VarStore;
use tch::Tensor;

/// One optimiser over the trainable variables of one VarStore, ordered by name.
#[derive(Debug)]
pub struct Sgd {
    params: Vec<(String, Tensor)>,
    bufs: Vec<Option<Tensor>>,
    pub momentum: f64,
    pub weight_decay: f64,
}

impl Sgd {
    pub fn new(vs: &VarStore, momentum: f64, weight_decay: f64) -> Self {
        let mut params: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        params.sort_by(|a, b| a.0.cmp(&b.0));
        let bufs = params.iter().map(|_| None).collect();
        Sgd {
            params,
            bufs,
            momentum,
            weight_decay,
        }
    }

    /// The defined gradients of the trainable variables (handles on the same storage: in-place
    /// operations on them change the gradients).
    pub fn grads(&self) -> Vec<Tensor> {
        self.params
            .iter()
            .map(|(_, p)| p.grad())
            .filter(|g| g.defined())
            .collect()
    }

    pub fn zero_grad(&mut self) {
        for (_, p) in &mut self.params {
            p.zero_grad();
        }
    }

    /// Scale the gradients so that their total L2 norm is at most `max` (as
    /// `torch.nn.utils.clip_grad_norm_`); returns the norm before clipping.
    pub fn clip_grad_norm(&self, max: f64) -> f64 {
        tch::no_grad(|| {
            let norms: Vec<Tensor> = self
                .params
                .iter()
                .map(|(_, p)| p.grad())
                .filter(|g| g.defined())
                .map(|g| g.norm())
                .collect();
            if norms.is_empty() {
                return 0.0;
            }
            let total = Tensor::stack(&norms, 0).norm().double_value(&[]);
            let coef = max / (total + 1e-6);
            if coef < 1.0 {
                for (_, p) in &self.params {
                    let mut g = p.grad();
                    if g.defined() {
                        let _ = g.g_mul_scalar_(coef);
                    }
                }
            }
            total
        })
    }

    /// d = g + wd·p; buf = d on the first step, else momentum·buf + d; p −= lr·buf.
    pub fn step(&mut self, lr: f64) {
        tch::no_grad(|| {
            for ((_, p), buf) in self.params.iter_mut().zip(self.bufs.iter_mut()) {
                let g = p.grad();
                if !g.defined() {
                    continue;
                }
                let d = if self.weight_decay != 0.0 {
                    g + &*p * self.weight_decay
                } else {
                    g
                };
                let update = if self.momentum != 0.0 {
                    match buf {
                        Some(b) => {
                            let _ = b.g_mul_scalar_(self.momentum);
                            let _ = b.g_add_(&d);
                            b.shallow_clone()
                        }
                        None => {
                            let b = d.detach().copy();
                            *buf = Some(b.shallow_clone());
                            b
                        }
                    }
                } else {
                    d
                };
                let _ = p.g_sub_(&(update * lr));
            }
        })
    }

    /// Momentum buffers by variable name (absent before the first step of a variable).
    pub fn state(&self) -> Vec<(String, Tensor)> {
        self.params
            .iter()
            .zip(&self.bufs)
            .filter_map(|((n, _), b)| b.as_ref().map(|b| (n.clone(), b.shallow_clone())))
            .collect()
    }

    /// Restore buffers saved by [`Sgd::state`]; names that are not trainable here are an error.
    pub fn load_state(&mut self, state: Vec<(String, Tensor)>) -> anyhow::Result<()> {
        let mut by_name: HashMap<String, Tensor> = state.into_iter().collect();
        for ((n, p), buf) in self.params.iter().zip(self.bufs.iter_mut()) {
            *buf = match by_name.remove(n) {
                Some(t) if t.size() == p.size() => Some(t.to_device(p.device()).to_kind(p.kind())),
                Some(t) => anyhow::bail!(
                    "momentum buffer `{n}` has shape {:?}, the variable {:?}",
                    t.size(),
                    p.size()
                ),
                None => None,
            };
        }
        if let Some(extra) = by_name.keys().next() {
            anyhow::bail!("momentum buffer `{extra}` matches no trainable variable");
        }
        Ok(())
    }
}
