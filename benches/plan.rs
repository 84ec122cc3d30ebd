//! Front-half figures (printed, never asserted), each through the real binary (wall time, CPU
//! time, peak RSS; the median of several runs) and in process where that isolates a phase:
//!
//! - a 50 x 20 matrix (1,000 cells) over a shared root and a 5-stage chain: 5,001 stage
//!   instances: load, static fingerprints, `validate`, `dag --format json`, `plan` on an empty
//!   cache (target: under 100 ms);
//! - 20,000 stages in one file (a chain of `run:` stages, 1.8 MB): `validate` (target: well under
//!   2 s; loading is linear in the file);
//! - a 4.6 MB file of 200,000 params keys: `validate`;
//! - a 100 x 100 x 100 matrix (10^6 cells): refused under the default limit (before any cell is
//!   built), and expanded with `--max-instances`: time, peak RSS, and the bytes of state per
//!   stage instance (peak RSS over that of the refused run, divided by the instances).
//!
//! Run: `cargo bench -p orchestrator --bench plan` (PLAN_BENCH_SKIP_MILLION=1 skips the 10^6
//! expansion, ~5 s of CPU and ~1.6 GB).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_orchestrator")
}

/// The 5,001-instance pipeline: `data` is shared; train -> evalt -> score -> prune -> verify
/// each depend on both axes (train through `seed` and the `drop` param).
pub fn big_pipeline() -> String {
    let seeds: Vec<String> = (0..50).map(|i| i.to_string()).collect();
    let ratios: Vec<String> = (1..=20).map(|i| format!("{}", i as f64 / 40.0)).collect();
    format!(
        r#"name: bench
params: {{ drop: "${{matrix.ratio}}", epochs: 2 }}
matrix:
  seed: [{}]
  ratio: [{}]
stages:
  data:   {{ uses: synthetic-faces, with: {{ identities: 20, images_per_identity: 4 }} }}
  train:  {{ uses: train, inputs: {{ train: data.train }}, with: {{ network: iresnet-tiny, epochs: "${{params.epochs}}", seed: "${{matrix.seed}}", dropout: "${{params.drop}}" }} }}
  evalt:  {{ uses: eval-trainset, inputs: {{ model: train.model, train: data.train }} }}
  score:  {{ uses: score, inputs: {{ probs: evalt.probs, train: data.train }} }}
  prune:  {{ uses: prune, inputs: {{ scores: score.scores, train: data.train }}, with: {{ target_ratio: "${{matrix.ratio}}" }} }}
  verify: {{ uses: verify, inputs: {{ model: train.model, pairs: data.pairs }} }}
"#,
        seeds.join(", "),
        ratios.join(", ")
    )
}

/// A chain of `n` `run:` stages, each reading the previous one's output.
fn chain(n: usize) -> String {
    let mut s = String::from(
        "name: chain\nstages:\n  s0: { run: \"echo 0 > ${outputs.o}\", outputs: [o] }\n",
    );
    for i in 1..n {
        s.push_str(&format!(
            "  s{i}: {{ run: \"cat ${{inputs.x}} > ${{outputs.o}}\", inputs: {{ x: s{}.o }}, outputs: [o] }}\n",
            i - 1
        ));
    }
    s
}

/// `n` params (one line each) and a stage that uses one.
fn many_keys(n: usize) -> String {
    let mut s = String::from("name: keys\nparams:\n");
    for i in 0..n {
        s.push_str(&format!("  p{i}: value-{i}\n"));
    }
    s.push_str("stages:\n  a: { run: \"echo ${params.p1} > ${outputs.o}\", outputs: [o] }\n");
    s
}

/// Three axes of `n` values each, one stage that uses all three.
fn cube(n: usize) -> String {
    let v: Vec<String> = (0..n).map(|i| i.to_string()).collect();
    let v = v.join(", ");
    format!(
        "name: cube\nmatrix: {{ a: [{v}], b: [{v}], c: [{v}] }}\nstages:\n  s: {{ run: \"echo ${{matrix.a}} ${{matrix.b}} ${{matrix.c}} > ${{outputs.o}}\", outputs: [o] }}\n"
    )
}

struct Measured {
    wall: Duration,
    cpu: Duration,
    /// Peak resident set, KiB.
    rss: i64,
    code: i32,
}

/// One run of the binary: wall time, CPU time (user + system) and peak RSS of that process.
fn measure(dir: &Path, args: &[&str]) -> Option<Measured> {
    let t = Instant::now();
    let child = Command::new(bin())
        .current_dir(dir)
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("ORCHESTRATOR_CACHE")
        .env_remove("ORCHESTRATOR_MAX_INSTANCES")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let pid = child.id() as libc::pid_t;
    // wait4 gives this child's own usage (getrusage(RUSAGE_CHILDREN) would be the max over all).
    let mut status = 0;
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    let wall = t.elapsed();
    if r != pid || !libc::WIFEXITED(status) {
        return None;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Some(Measured {
        wall,
        cpu: tv(ru.ru_utime) + tv(ru.ru_stime),
        rss: ru.ru_maxrss,
        code: libc::WEXITSTATUS(status),
    })
}

/// The median (by wall time) of `n` runs, printed on one line.
fn report(name: &str, dir: &Path, args: &[&str], n: usize, target: &str) -> Option<Measured> {
    let mut runs: Vec<Measured> = (0..n).filter_map(|_| measure(dir, args)).collect();
    if runs.is_empty() {
        println!("{name:<40} not available");
        return None;
    }
    runs.sort_by_key(|m| m.wall);
    let mid = runs.swap_remove(runs.len() / 2);
    println!(
        "{name:<40} {:>8.1} ms wall  {:>8.1} ms CPU  {:>7.1} MB peak RSS  exit {}{}",
        mid.wall.as_secs_f64() * 1e3,
        mid.cpu.as_secs_f64() * 1e3,
        mid.rss as f64 / 1024.0,
        mid.code,
        if target.is_empty() {
            String::new()
        } else {
            format!("   ({target})")
        }
    );
    Some(mid)
}

fn in_process(name: &str, f: impl Fn() -> usize) {
    let mut times = Vec::new();
    let mut n = 0;
    for _ in 0..7 {
        let t = Instant::now();
        n = f();
        times.push(t.elapsed());
    }
    times.sort();
    println!(
        "{name:<40} {:>8.1} ms (median of 7, {n} instances)",
        times[3].as_secs_f64() * 1e3
    );
}

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    std::fs::create_dir_all(d.join("cache")).unwrap();
    let write = |name: &str, text: String| {
        let f = d.join(name);
        std::fs::write(&f, &text).unwrap();
        println!("{name}: {:.1} MB", text.len() as f64 / 1e6);
        f
    };
    let big = write("big.yaml", big_pipeline());
    let chain_file = write("chain.yaml", chain(20_000));
    let keys_file = write("keys.yaml", many_keys(200_000));
    write("cube.yaml", cube(100));

    // The binary first: a child's peak RSS counts the pages of the process that forked it, so
    // these run while the bench itself is still small.
    println!("\n-- through the binary (median of several runs)");
    report(
        "5,001 instances: validate",
        d,
        &["validate", "big.yaml"],
        9,
        "",
    );
    report(
        "5,001 instances: dag --format json",
        d,
        &["dag", "big.yaml", "--format", "json"],
        9,
        "",
    );
    report(
        "5,001 instances: plan (empty cache)",
        d,
        &["plan", "big.yaml"],
        9,
        "target < 100 ms",
    );
    report(
        "20,000 stages (1.8 MB): validate",
        d,
        &["validate", "chain.yaml"],
        5,
        "target well under 2 s",
    );
    report(
        "200,000 params keys (4.6 MB): validate",
        d,
        &["validate", "keys.yaml"],
        5,
        "",
    );
    let refused = report(
        "10^6 cells: refused by the default limit",
        d,
        &["validate", "cube.yaml"],
        5,
        "exit 2, before any cell is built",
    );
    if std::env::var_os("PLAN_BENCH_SKIP_MILLION").is_some() {
        println!("(10^6 expansion skipped: PLAN_BENCH_SKIP_MILLION)");
    } else {
        let full = report(
            "10^6 cells: expanded (--max-instances)",
            d,
            &["validate", "cube.yaml", "--max-instances", "1000000"],
            1,
            "",
        );
        if let (Some(r), Some(f)) = (refused, full) {
            let per = (f.rss - r.rss) as f64 * 1024.0 / 1e6;
            println!("{:<40} {per:>8.0} bytes of state per stage instance", "");
        }
    }

    println!("\n-- in process (the phases)");
    in_process("5,001 instances: pipeline::load", || {
        let p = orchestrator::pipeline::load(&big).unwrap_or_else(|e| panic!("{e}"));
        p.instances.len()
    });
    let p = orchestrator::pipeline::load(&big).unwrap_or_else(|e| panic!("{e}"));
    in_process("5,001 instances: static fingerprints", || {
        orchestrator::fingerprint::static_fingerprints(&p).len()
    });
    in_process("5,001 instances: Dag + critical paths", || {
        orchestrator::dag::Dag::new(&p)
            .critical_path_lengths(|_| 1.0)
            .len()
    });
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = orchestrator::cache::Cache::open(cache_dir.path()).unwrap();
    in_process("5,001 instances: plan, empty cache", || {
        orchestrator::exec::plan::plan(&p, &cache).unwrap().len()
    });
    drop(cache);
    in_process("20,000 stages: pipeline::load", || {
        orchestrator::pipeline::load(&chain_file)
            .unwrap_or_else(|e| panic!("{e}"))
            .instances
            .len()
    });
    in_process("200,000 params keys: pipeline::load", || {
        orchestrator::pipeline::load(&keys_file)
            .unwrap_or_else(|e| panic!("{e}"))
            .instances
            .len()
    });
}
