//! Fluent helper for running the real binary in a temp project:
//! `Project::new().file("p.yaml", "...").run(&["plan", "p.yaml"]).success().stdout_has("...")`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_orchestrator"))
}

// Prerequisites outside cargo. A test that needs one is `#[ignore = "requires ..."]` (a plain
// `cargo test` lists it as ignored, with the reason) and calls `require_*` first: under
// `make test` (`--include-ignored`) a missing prerequisite is a failure that says how to get it.

/// The `orchestrator-stage` worker that `make build` puts beside the engine binary.
pub fn require_worker() -> PathBuf {
    let worker = bin().with_file_name("orchestrator-stage");
    assert!(
        worker.is_file(),
        "this test needs the stage worker, but {} is missing: build it with `make build` (the README's `make test` does)",
        worker.display()
    );
    worker
}

/// A SLURM cluster that answers: `sbatch` on PATH and `sinfo` reaching a slurmctld.
pub fn require_slurm() {
    let on_path = |tool: &str| {
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .any(|d| d.join(tool).is_file())
    };
    let how = "start one with `eval \"$(SLURM_LOCAL_CPUS=8 bash ../shared/slurm/local-cluster.sh start)\"` (`make test` does that when no cluster answers), or point SLURM_CONF at your cluster";
    assert!(
        on_path("sbatch") && on_path("sinfo"),
        "this test needs a SLURM cluster, but `sbatch`/`sinfo` are not on PATH: {how}"
    );
    let out = Command::new("timeout")
        .args(["20", "sinfo", "-h", "-o", "%P %a"])
        .output()
        .expect("run sinfo");
    assert!(
        out.status.success() && !out.stdout.is_empty(),
        "this test needs a SLURM cluster, but `sinfo` does not reach a controller ({}): {how}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// Root (mounts, `chattr`): CI and the README's set-up run as root.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test needs root (it mounts a small tmpfs or sets file attributes): run `make test` as root, as CI does"
    );
}

/// Where a test finds a program: `$VAR`, else the first of `names` on PATH.
fn find_program(var: &str, names: &[&str]) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(var) {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    names.iter().find_map(|n| {
        std::env::split_paths(&path)
            .map(|d| d.join(n))
            .find(|p| p.is_file())
    })
}

/// Chromium and chromedriver, for the dashboard's browser tests: (browser, driver).
pub fn require_chromium() -> (PathBuf, PathBuf) {
    let chromium = find_program(
        "CHROMIUM",
        &["chromium", "chromium-browser", "google-chrome"],
    );
    let driver = find_program("CHROMEDRIVER", &["chromedriver"]);
    match (chromium, driver) {
        (Some(c), Some(d)) => (c, d),
        (c, d) => panic!(
            "this test needs chromium and chromedriver, but {} missing: `apt-get install -y chromium chromium-driver` as root (`make test` runs scripts/browser.sh, which does it), or point CHROMIUM / CHROMEDRIVER at them",
            match (c, d) {
                (None, None) => "both are",
                (None, _) => "chromium is",
                _ => "chromedriver is",
            }
        ),
    }
}

/// A temp folder that plays a user's project; the cache lives in `<root>/cache`.
pub struct Project {
    pub dir: tempfile::TempDir,
}

impl Project {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(dir.path().join("cache")).unwrap();
        Project { dir }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Write a file (parents created); `contents` is dedented by the common leading indentation.
    pub fn file(&self, rel: &str, contents: &str) -> &Self {
        let p = self.path(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&p, dedent(contents)).unwrap();
        self
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.current_dir(self.root())
            .args(args)
            .env_remove("ORCHESTRATOR_CACHE")
            .env("NO_COLOR", "1");
        c
    }

    pub fn run(&self, args: &[&str]) -> Run {
        let out = self.cmd(args).output().expect("spawn orchestrator");
        Run { out }
    }
}

pub struct Run {
    pub out: Output,
}

impl Run {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.stdout).into_owned()
    }
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.out.stderr).into_owned()
    }
    pub fn code(&self) -> i32 {
        self.out.status.code().unwrap_or(-1)
    }
    #[track_caller]
    pub fn success(&self) -> &Self {
        assert!(
            self.out.status.success(),
            "expected success, got {}\nstdout:\n{}\nstderr:\n{}",
            self.code(),
            self.stdout(),
            self.stderr()
        );
        self
    }
    #[track_caller]
    pub fn exit(&self, code: i32) -> &Self {
        assert_eq!(
            self.code(),
            code,
            "stdout:\n{}\nstderr:\n{}",
            self.stdout(),
            self.stderr()
        );
        self
    }
    #[track_caller]
    pub fn stdout_has(&self, s: &str) -> &Self {
        assert!(
            self.stdout().contains(s),
            "stdout lacks {s:?}:\n{}\nstderr:\n{}",
            self.stdout(),
            self.stderr()
        );
        self
    }
    #[track_caller]
    pub fn stderr_has(&self, s: &str) -> &Self {
        assert!(
            self.stderr().contains(s),
            "stderr lacks {s:?}:\n{}",
            self.stderr()
        );
        self
    }
}

pub fn dedent(s: &str) -> String {
    let s = s.strip_prefix('\n').unwrap_or(s);
    let indent = s
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    s.lines()
        .map(|l| {
            if l.len() >= indent {
                &l[indent..]
            } else {
                l.trim_start()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// Wait until `path` exists (a flag a stage writes), failing the test after `limit`.
pub fn wait_for_file(path: &Path, limit: std::time::Duration) {
    let t = std::time::Instant::now();
    while !path.exists() {
        assert!(
            t.elapsed() < limit,
            "timed out waiting for {}",
            path.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// The size the main job and the sweep run at in tests and the dashboard bench: small enough for a
/// 2-core CI machine; `epochs` > the sweep's DynUnc window (5).
pub const SMALL: &[&str] = &[
    "--set",
    "identities=24",
    "--set",
    "images_per_identity=10",
    "--set",
    "epochs=6",
    "--set",
    "batch_size=32",
];
