//! `orchestrator-reaper`: the process that `orchestrator run` starts for each local stage, which
//! starts the stage and ends with it (see `orchestrator::exec::reaper`). A binary of its own, small
//! and without Rust's runtime start-up (`no_main`), because one is started per stage: a sweep of
//! 5,000 cells starts it 5,000 times. (Under `cargo test` it is an empty test harness, whose
//! `main` is the harness's.)
#![cfg_attr(not(test), no_main)]

#[cfg(not(test))]
#[no_mangle]
pub extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    orchestrator::exec::reaper::reaper_binary_main()
}
