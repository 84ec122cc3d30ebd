//! Dashboard figures (printed, never asserted): the first load of `orchestrator serve`'s page for
//! the sweep's 69 stage instances in headless Chromium (navigation start -> DAG drawn, from the
//! page's own `performance` marks: HTML, scripts, the instance list and the drawing), the API's
//! answer times, and the server's CPU use while idle, with a page open (its stat poll) and with
//! none. Target: first load < 300 ms, idle CPU ~0.
//!
//! The sweep runs once (shrunk like the integration tests) into a cache kept under
//! `target/tmp/serve-bench/` (or `$ORCHESTRATOR_BENCH_SWEEP_CACHE`), so later runs of the bench
//! find it cached.
//! Run: `cargo bench -p orchestrator --bench serve` (needs chromium + chromedriver and the
//! stage worker from `make build`).

#[path = "../tests/integration/browser.rs"]
mod browser;
#[path = "../tests/integration/support.rs"]
mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use support::SMALL;

fn cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &s[s.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat (utime, stime), counted after the command name.
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }) as f64
}

fn stats(mut v: Vec<f64>) -> String {
    v.sort_by(f64::total_cmp);
    format!(
        "median {:.0} ms, min {:.0}, max {:.0} (n={})",
        v[v.len() / 2],
        v[0],
        v[v.len() - 1],
        v.len()
    )
}

fn main() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_orchestrator"));
    if !bin.with_file_name("orchestrator-stage").exists() {
        println!("serve bench: not available (the stage worker is missing: `make build`)");
        return;
    }
    if Command::new("chromedriver")
        .arg("--version")
        .output()
        .is_err()
    {
        println!("serve bench: not available (chromium + chromedriver missing: `apt-get install -y chromium chromium-driver`)");
        return;
    }
    let work = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("serve-bench");
    // A cache the shrunk sweep already ran into may be given, to skip running it here.
    let cache = std::env::var_os("ORCHESTRATOR_BENCH_SWEEP_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| work.join("cache"));
    std::fs::create_dir_all(&cache).unwrap();
    let cache_s = cache.to_str().unwrap();
    let t0 = Instant::now();
    let run = Command::new(&bin)
        .current_dir(&repo)
        .args([
            "run",
            "pipelines/sweep.yaml",
            "--cache-dir",
            cache_s,
            "--gpus",
            "none",
            "-q",
        ])
        .args(SMALL)
        .status()
        .unwrap();
    assert!(run.success(), "the sweep failed");
    println!(
        "sweep (shrunk) in {cache_s}: ready in {:.0} s",
        t0.elapsed().as_secs_f64()
    );

    let mut args = vec![
        "pipelines/sweep.yaml",
        "--cache-dir",
        cache_s,
        "--token",
        "bench",
        "--poll-ms",
        "500",
    ];
    args.extend_from_slice(SMALL);
    let server = browser::Server::start(&repo, &args);
    let pid = server.child.id();

    // The API alone.
    let mut api = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let v = server.api("/api/pipelines/sweep/instances");
        api.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(v["instances"].as_array().unwrap().len(), 69);
    }
    let mut report = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        server.api("/api/pipelines/sweep/report");
        report.push(t.elapsed().as_secs_f64() * 1e3);
    }

    // The page: a fresh browser (cold), then reloads (scripts re-fetched: assets are no-store).
    let shots = work.join("shots");
    let b = browser::Browser::start(&shots);
    // [HTML received, scripts loaded, instance list fetched, DAG drawn], ms from navigation start.
    let rendered = |b: &browser::Browser| -> Vec<f64> {
        b.wait_js::<bool>(
            "the DAG",
            Duration::from_secs(60),
            "return document.body.dataset.ready === '1' && performance.getEntriesByName('dag-rendered').length > 0;",
        );
        b.js("const m = (n) => performance.getEntriesByName(n)[0].startTime; \
              return [performance.getEntriesByType('navigation')[0].responseEnd, m('scripts-loaded'), m('data-fetched'), m('dag-rendered')];")
    };
    b.goto(&server.url);
    let cold = rendered(&b);
    let mut warm: Vec<Vec<f64>> = Vec::new();
    for _ in 0..20 {
        b.goto(&format!("{}/", server.base));
        warm.push(rendered(&b));
    }
    let phase = |k: usize| stats(warm.iter().map(|w| w[k]).collect());
    let nodes: usize = b.js("return document.querySelectorAll('#dag .node').length;");
    b.screenshot("sweep.png");

    // Idle: a page open (server-sent events, the stat poll running), then no page at all.
    let measure = |secs: u64| {
        let c0 = cpu_ticks(pid);
        std::thread::sleep(Duration::from_secs(secs));
        (cpu_ticks(pid) - c0) as f64 / clk_tck() / secs as f64 * 100.0
    };
    let open = measure(30);
    drop(b);
    std::thread::sleep(Duration::from_secs(1));
    let none = measure(30);

    println!("orchestrator serve, sweep with {nodes} stage instances (this machine):");
    println!(
        "  first load, fresh browser (navigation -> DAG drawn): {:.0} ms (HTML {:.0}, scripts {:.0}, data {:.0})",
        cold[3], cold[0], cold[1], cold[2]
    );
    println!("  reloads, navigation -> DAG drawn: {}", phase(3));
    println!("    -> HTML received: {}", phase(0));
    println!("    -> scripts loaded: {}", phase(1));
    println!("    -> instance list fetched: {}", phase(2));
    println!("  GET /api/pipelines/sweep/instances: {}", stats(api));
    println!("  GET /api/pipelines/sweep/report: {}", stats(report));
    println!("  server CPU, idle with a page open (the default poll, every 500 ms): {open:.2} % of one core over 30 s");
    println!("  server CPU, idle with no page open: {none:.2} % of one core over 30 s");
    println!(
        "  peak RSS of the server: {} MiB",
        server.peak_rss_kib() / 1024
    );
    println!("  screenshot: {}", shots.join("sweep.png").display());
}
