// mimalloc: the run's threads (scheduler, commits, results links) free what another allocated;
// glibc's malloc serialises that on an arena lock (futex waits were ~20 % of a 5,000-instance
// no-op), mimalloc frees it without one. Built with `no_thp` (Cargo.toml): with transparent
// huge pages, a small no-op's peak memory was 4x glibc's. See README, "Dependencies".
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // A stage's reaper is this binary started again with a marker argument (see exec::reaper).
    orchestrator::exec::reaper::enter_if_reaper();
    orchestrator::cli::main()
}
