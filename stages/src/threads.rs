//! The CPU-thread budget of a stage: `ORCHESTRATOR_CPU_THREADS`, set by the engine per stage (its
//! share of the cores, or `resources.cpus`), else every core this process may use (standalone
//! use). Every parallel part of a stage honours it: the rayon pool ([`apply_budget`], called by
//! the workers before the stage runs), libtorch's intra-op threads (`torch::init_threads`) and
//! the data loader's decode threads ([`loader_workers`]).
//!
//! OpenMP reads `OMP_NUM_THREADS` / `OMP_WAIT_POLICY` when libtorch is loaded, before `main`; the
//! engine sets them beside this variable. The worker never raises them.

/// The variable the engine sets.
pub const ENV: &str = "ORCHESTRATOR_CPU_THREADS";

/// Parse a budget: a positive integer. `None` when unset; an error names the bad value.
pub fn parse(value: Option<&str>) -> Result<Option<usize>, String> {
    match value.map(str::trim) {
        None | Some("") => Ok(None),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if n >= 1 => Ok(Some(n)),
            _ => Err(format!(
                "{ENV}={v:?} is not a positive integer; using every core"
            )),
        },
    }
}

fn all_cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// The threads this stage may use.
pub fn budget() -> usize {
    parse(std::env::var(ENV).ok().as_deref())
        .ok()
        .flatten()
        .unwrap_or_else(all_cores)
}

/// Size the global rayon pool to the budget (once, before any parallel work). A bad value is
/// reported on stderr and ignored.
pub fn apply_budget() {
    if let Err(e) = parse(std::env::var(ENV).ok().as_deref()) {
        eprintln!("warning: {e}");
    }
    let n = budget();
    // Fails only when the pool already exists (a second call): keep the first size.
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global();
}

/// Decode threads of a data loader: the requested count, at most the budget.
pub fn loader_workers(requested: u32) -> usize {
    (requested as usize).min(budget())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_values() {
        assert_eq!(parse(None), Ok(None));
        assert_eq!(parse(Some("")), Ok(None));
        assert_eq!(parse(Some("3")), Ok(Some(3)));
        assert_eq!(parse(Some(" 1 ")), Ok(Some(1)));
        assert!(parse(Some("0")).unwrap_err().contains("\"0\""));
        assert!(parse(Some("all")).is_err());
    }
}
