fn main() -> std::process::ExitCode {
    // A stage's reaper is this binary started again with a marker argument (see exec::reaper).
    orchestrator::exec::reaper::enter_if_reaper();
    orchestrator::cli::main()
}
