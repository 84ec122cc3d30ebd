//! Execution figures (printed, never asserted): no-op rerun of a 5,001-instance and a 12-stage
//! pipeline (end to end, the real binary), scheduler overhead per stage on 500 trivial `run:`
//! stages, and hashing throughput of a 2 GiB external input cold (page cache) and warm (stat
//! cache). Run: `cargo bench -p orchestrator --bench exec` (set EXEC_BENCH_SKIP_5001=1 to skip
//! the slow first run of the big pipeline).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_orchestrator")
}

fn run(dir: &Path, args: &[&str]) -> Duration {
    let t = Instant::now();
    let out = Command::new(bin())
        .current_dir(dir)
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("ORCHESTRATOR_CACHE")
        .output()
        .expect("spawn orchestrator");
    let d = t.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    d
}

fn project() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(t.path().join("cache")).unwrap();
    t
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn noop(name: &str, yaml: &str, target_ms: u64) {
    let t = project();
    std::fs::write(t.path().join("p.yaml"), yaml).unwrap();
    let first = run(t.path(), &["run", "p.yaml", "-q"]);
    let times: Vec<Duration> = (0..7)
        .map(|_| run(t.path(), &["run", "p.yaml", "-q"]))
        .collect();
    let plan = run(t.path(), &["plan", "p.yaml"]);
    let best = *times.iter().min().unwrap();
    println!(
        "no-op rerun, {name}: median {:.1} ms, best {:.1} ms (target < {target_ms} ms); first run {:.1} s; plan {:.1} ms",
        median(times).as_secs_f64() * 1e3,
        best.as_secs_f64() * 1e3,
        first.as_secs_f64(),
        plan.as_secs_f64() * 1e3
    );
}

fn twelve() -> String {
    let mut s = String::from(
        "name: twelve\nstages:\n  s0:\n    run: \"echo 0 > ${outputs.out}\"\n    outputs: [out]\n",
    );
    for i in 1..12 {
        s.push_str(&format!("  s{i}:\n    run: \"cat ${{inputs.x}} > ${{outputs.out}}; echo {i} >> ${{outputs.out}}\"\n    inputs: {{ x: s{}.out }}\n    outputs: [out]\n", i - 1));
    }
    s
}

fn five_thousand_and_one() -> String {
    let a: Vec<String> = (0..100).map(|i| i.to_string()).collect();
    let b: Vec<String> = (0..50).map(|i| i.to_string()).collect();
    format!(
        "name: big\nmatrix:\n  a: [{}]\n  b: [{}]\nstages:\n  root:\n    run: \"echo root > ${{outputs.out}}\"\n    outputs: [out]\n  cell:\n    run: \"cat ${{inputs.x}} > ${{outputs.out}}; echo ${{matrix.a}} ${{matrix.b}} >> ${{outputs.out}}\"\n    inputs: {{ x: root.out }}\n    outputs: [out]\n",
        a.join(", "),
        b.join(", ")
    )
}

fn scheduler_overhead() {
    let n = 500;
    let t = project();
    let mut s = String::from("name: trivial\nstages:\n");
    for i in 0..n {
        s.push_str(&format!(
            "  t{i}:\n    run: \"echo {i} > ${{outputs.out}}\"\n    outputs: [out]\n"
        ));
    }
    std::fs::write(t.path().join("p.yaml"), s).unwrap();
    let orch = run(t.path(), &["run", "p.yaml", "-q", "--jobs", "1"]);
    // The same processes spawned back to back, without the orchestrator.
    let raw_dir = t.path().join("raw");
    std::fs::create_dir_all(&raw_dir).unwrap();
    let t0 = Instant::now();
    for i in 0..n {
        let st = Command::new("sh")
            .arg("-c")
            .arg(format!("echo {i} > '{}/{i}'", raw_dir.display()))
            .status()
            .unwrap();
        assert!(st.success());
    }
    let raw = t0.elapsed();
    let per = (orch.as_secs_f64() - raw.as_secs_f64()) / n as f64;
    println!(
        "scheduler overhead: {n} trivial stages with --jobs 1 in {:.2} s vs {:.2} s for the bare `sh -c` spawns: {:.2} ms per stage beyond spawning (target < 5 ms)",
        orch.as_secs_f64(),
        raw.as_secs_f64(),
        per * 1e3
    );
}

fn hashing() {
    let t = project();
    let f = t.path().join("big.bin");
    let size: u64 = 2 << 30;
    {
        use std::io::Write;
        let mut w = std::io::BufWriter::with_capacity(1 << 22, std::fs::File::create(&f).unwrap());
        let mut block = vec![0u8; 1 << 20];
        let mut x: u64 = 0x1234_5678;
        for i in 0..(size >> 20) {
            for chunk in block.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                chunk.copy_from_slice(&(x ^ i).to_le_bytes());
            }
            w.write_all(&block).unwrap();
        }
    }
    let cache = orchestrator::cache::Cache::open(&t.path().join("cache")).unwrap();
    let t0 = Instant::now();
    let d1 = cache.digest_external(&f).unwrap();
    let cold = t0.elapsed();
    let t1 = Instant::now();
    let d2 = cache.digest_external(&f).unwrap();
    let warm = t1.elapsed();
    assert_eq!(d1, d2);
    let t2 = Instant::now();
    orchestrator::cache::hash_file(&f).unwrap();
    let again = t2.elapsed();
    let gib = size as f64 / (1u64 << 30) as f64;
    println!(
        "hashing 2 GiB external input: cold (page cache, no stat entry) {:.2} s = {:.2} GiB/s; raw re-hash {:.2} GiB/s; warm (stat cache) {:.3} ms; {} threads",
        cold.as_secs_f64(),
        gib / cold.as_secs_f64(),
        gib / again.as_secs_f64(),
        warm.as_secs_f64() * 1e3,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );
}

fn main() {
    let only = std::env::args().nth(1).filter(|a| !a.starts_with('-'));
    let want = |k: &str| only.as_deref().is_none_or(|o| k.contains(o));
    if want("hash") {
        hashing();
    }
    if want("noop12") {
        noop("12 stages", &twelve(), 50);
    }
    if want("overhead") {
        scheduler_overhead();
    }
    if want("noop5001") && std::env::var_os("EXEC_BENCH_SKIP_5001").is_none() {
        noop("5,001 instances", &five_thousand_and_one(), 250);
    }
}
