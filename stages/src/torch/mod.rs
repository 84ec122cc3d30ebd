//! Everything that touches libtorch: networks ([`nn`]), margin [`heads`], the model folder
//! ([`model`]), the optimiser ([`optim`]), mixed precision ([`amp`]), the `train` and
//! `eval-trainset` stages, and embedding extraction for `verify` / `ijbc`.

pub mod amp;
pub mod embed;
pub mod eval_trainset;
pub mod heads;
pub mod model;
pub mod nn;
pub mod optim;
pub mod train;

#[cfg(test)]
mod golden_tests;

use crate::invocation::Device as InvDevice;
use crate::kinds::Kind;
use crate::Invocation;

/// Run a kind that needs libtorch; `None` for the pure-Rust kinds ([`crate::run::run_pure`]).
pub fn run(kind: Kind, inv: &Invocation) -> Option<anyhow::Result<serde_json::Value>> {
    match kind {
        Kind::Train => Some(train::run(inv)),
        Kind::EvalTrainset => Some(eval_trainset::run(inv)),
        Kind::Verify => Some(embed::run_verify(inv)),
        Kind::Ijbc => Some(embed::run_ijbc(inv)),
        Kind::SyntheticFaces
        | Kind::Recordio
        | Kind::ImageFolder
        | Kind::Score
        | Kind::Prune
        | Kind::Clean
        | Kind::Relabel
        | Kind::Report => None,
    }
}

/// The params' own semantic checks, rendered like the engine renders them.
pub fn check_params<P: crate::kinds::Params>(p: &P) -> anyhow::Result<()> {
    if let Err(errs) = p.validate() {
        let msgs: Vec<String> = errs
            .iter()
            .map(|e| match &e.hint {
                Some(h) => format!("`{}`: {}\nhint: {h}", e.path, e.message),
                None => format!("`{}`: {}", e.path, e.message),
            })
            .collect();
        anyhow::bail!("invalid params:\n{}", msgs.join("\n"));
    }
    Ok(())
}

/// CUDA device 0 when the invocation asks for CUDA and libtorch sees it, else the CPU (with a
/// progress message saying so). Also sets libtorch's threads to the stage's CPU budget.
pub fn select_device(inv: &Invocation) -> tch::Device {
    init_threads();
    if inv.device == InvDevice::Cuda {
        if tch::Cuda::is_available() {
            // The reference sets cudnn.benchmark; bitwise resume is promised on the CPU only.
            tch::Cuda::cudnn_set_benchmark(true);
            return tch::Device::Cuda(0);
        }
        inv.progress()
            .message("CUDA requested but libtorch sees no GPU: running on the CPU");
    }
    tch::Device::Cpu
}

/// libtorch's intra-op threads = the stage's CPU-thread budget ([`crate::threads`]).
pub fn init_threads() {
    tch::set_num_threads(crate::threads::budget() as i32);
}
