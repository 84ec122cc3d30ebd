//! Front-half figures (printed, never asserted): load + validate + expand a 50 x 20 matrix
//! (1,000 cells) over a shared root and a 5-stage chain (5,001 stage instances), in process
//! (`pipeline::load`) and through the real binary (`validate`, `dag --format json`, `plan`),
//! with wall time and peak RSS. Targets: < 150 ms and < 100 MB.
//! Run: `cargo bench -p orchestrator --bench plan`.

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

/// Wall time and peak RSS (KiB) of one run of the binary.
fn measure(dir: &Path, args: &[&str]) -> Option<(Duration, i64)> {
    let t = Instant::now();
    let mut child = Command::new(bin())
        .current_dir(dir)
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("ORCHESTRATOR_CACHE")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .ok()?;
    let pid = child.id() as libc::pid_t;
    // wait4 gives this child's own peak RSS (getrusage(RUSAGE_CHILDREN) would be the max over all).
    let mut status = 0;
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    let d = t.elapsed();
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut err);
    }
    if r != pid || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        eprintln!(
            "  `{}` failed: {}",
            args.join(" "),
            err.lines().next().unwrap_or("")
        );
        return None;
    }
    Some((d, ru.ru_maxrss))
}

fn report(name: &str, dir: &Path, args: &[&str]) {
    let runs: Vec<(Duration, i64)> = (0..9).filter_map(|_| measure(dir, args)).collect();
    if runs.is_empty() {
        println!("{name:<34} not available");
        return;
    }
    let mut times: Vec<Duration> = runs.iter().map(|r| r.0).collect();
    times.sort();
    let rss = runs.iter().map(|r| r.1).max().unwrap_or(0);
    println!(
        "{name:<34} min {:>7.1} ms   median {:>7.1} ms   peak RSS {:>6.1} MB   (targets: < 150 ms, < 100 MB)",
        times[0].as_secs_f64() * 1e3,
        times[times.len() / 2].as_secs_f64() * 1e3,
        rss as f64 / 1024.0
    );
}

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(dir.path().join("cache")).unwrap();
    let file = dir.path().join("big.yaml");
    std::fs::write(&file, big_pipeline()).unwrap();

    let t = Instant::now();
    let p = orchestrator::pipeline::load(&file).unwrap_or_else(|e| panic!("{e}"));
    let first = t.elapsed();
    let mut times = Vec::new();
    for _ in 0..9 {
        let t = Instant::now();
        let q = orchestrator::pipeline::load(&file).unwrap_or_else(|e| panic!("{e}"));
        times.push(t.elapsed());
        assert_eq!(q.instances.len(), p.instances.len());
    }
    times.sort();
    println!(
        "pipeline: 50 x 20 matrix = {} cells, {} stage instances",
        p.cells.len(),
        p.instances.len()
    );
    println!(
        "{:<34} min {:>7.1} ms   median {:>7.1} ms   (first {:.1} ms)",
        "pipeline::load (in process)",
        times[0].as_secs_f64() * 1e3,
        times[4].as_secs_f64() * 1e3,
        first.as_secs_f64() * 1e3
    );
    let t = Instant::now();
    let fps = orchestrator::fingerprint::static_fingerprints(&p);
    println!(
        "{:<34} {:>7.1} ms for {}",
        "static fingerprints (in process)",
        t.elapsed().as_secs_f64() * 1e3,
        fps.len()
    );
    let t = Instant::now();
    let cp = orchestrator::dag::Dag::new(&p).critical_path_lengths(|_| 1.0);
    println!(
        "{:<34} {:>7.1} ms (longest chain {})",
        "Dag + critical_path_lengths",
        t.elapsed().as_secs_f64() * 1e3,
        cp.iter().cloned().fold(0.0, f64::max)
    );

    report(
        "orchestrator validate",
        dir.path(),
        &["validate", "big.yaml"],
    );
    report(
        "orchestrator dag --format json",
        dir.path(),
        &["dag", "big.yaml", "--format", "json"],
    );
    report(
        "orchestrator plan (empty cache)",
        dir.path(),
        &["plan", "big.yaml"],
    );
}
