//! A cache users can trust (issue #20), case by case through the real binary: stages cannot move,
//! chmod or change anything outside their run dir and the cache (symlinks and hardlinks in
//! outputs, writes to inputs), nothing stored ever changes (background children, edits through
//! `results/`), faults leave earlier results served (full disk, garbage manifests, signals, a
//! moved cache), and read-only commands work while a run holds the cache.

use std::collections::BTreeSet;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::support::{require_root, require_worker, wait_for_file, Project, Run};

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()))
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

/// A project with a user's file `user/file.txt` ("user data") and `p.yaml`: pipeline `name`, one
/// stage `a` with output `y` that runs `run`, in which `{user}` is that file's absolute path.
/// Returns the file's path.
fn stage_on_a_user_file(p: &Project, name: &str, run: &str) -> PathBuf {
    p.file("user/file.txt", "user data\n");
    let user = p.path("user/file.txt");
    let run = run.replace("{user}", &user.display().to_string());
    p.file(
        "p.yaml",
        &format!("name: {name}\nstages:\n  a:\n    run: \"{run}\"\n    outputs: [y]\n"),
    );
    user
}

fn events(r: &Run, kind: &str) -> BTreeSet<String> {
    r.stdout()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == kind)
        .filter_map(|v| v["instance"].as_str().map(String::from))
        .collect()
}

fn set(xs: &[&str]) -> BTreeSet<String> {
    xs.iter().map(|s| s.to_string()).collect()
}

fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let t = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if t.elapsed() > limit {
            let _ = child.kill();
            panic!("orchestrator did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every file under `dir` whose name is `name`.
fn find_named(dir: &Path, name: &str, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            find_named(&p, name, out);
        } else if e.file_name() == name {
            out.push(p);
        }
    }
}

/// Processes whose environment holds `needle` (the marker a test gives its stage).
fn processes_with_env(needle: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(env) = std::fs::read(e.path().join("environ")) {
            if env.split(|&b| b == 0).any(|kv| kv == needle.as_bytes()) {
                pids.push(pid);
            }
        }
    }
    pids
}

// ---------------------------------------------------------------------------------------------
// 1, 2: symlinks and hardlinks in outputs never reach outside the run dir.

#[test]
fn symlink_in_an_output_folder_never_moves_the_linked_folder() {
    let p = Project::new();
    p.file("user/keep.txt", "mine\n");
    let user = p.path("user");
    p.file(
        "p.yaml",
        &format!(
            r#"
            name: links
            stages:
              a:
                run: "mkdir -p ${{outputs.d}}; ln -s {} ${{outputs.d}}/data; echo x > ${{outputs.d}}/own.txt"
                outputs: [d/]
            "#,
            user.display()
        ),
    );
    p.run(&["run", "p.yaml"])
        .exit(1)
        .stderr_has("output `d`: data is a symlink to")
        .stderr_has(&user.display().to_string())
        .stderr_has("outside the stage's run dir");
    assert_eq!(read(&user.join("keep.txt")), "mine\n");
    assert_eq!(mode(&user.join("keep.txt")), 0o644);
    assert_eq!(mode(&user), 0o755);
    p.run(&["cache", "verify"]).success();
}

#[test]
fn symlink_within_the_run_dir_is_stored_as_what_it_points_to() {
    let p = Project::new();
    p.file(
        "p.yaml",
        r#"
        name: links
        stages:
          a:
            run: "mkdir -p ${outputs.d}/sub; echo x > ${outputs.d}/own.txt; ln -s own.txt ${outputs.d}/alias; ln -s ../own.txt ${outputs.d}/sub/up; ln -s sub ${outputs.d}/subalias; echo y > ${outputs.f}.real; ln -s ${outputs.f}.real ${outputs.f}"
            outputs: [d/, f]
        "#,
    );
    p.run(&["run", "p.yaml"]).success();
    let d = p.path("results/links/a/d");
    assert_eq!(read(&d.join("own.txt")), "x\n");
    assert_eq!(read(&d.join("alias")), "x\n");
    assert_eq!(read(&d.join("sub/up")), "x\n");
    assert_eq!(read(&d.join("subalias/up")), "x\n");
    assert!(!std::fs::symlink_metadata(d.join("alias"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(read(&p.path("results/links/a/f")), "y\n");
    p.run(&["cache", "verify"]).success();
    p.run(&["run", "p.yaml"]).success().stderr_has("cached 1");
}

#[test]
fn output_that_is_a_symlink_out_of_the_run_dir_is_refused_and_its_target_untouched() {
    let p = Project::new();
    let target = stage_on_a_user_file(&p, "l", "ln -s {user} ${outputs.y}");
    p.run(&["run", "p.yaml"])
        .exit(1)
        .stderr_has("output `y`")
        .stderr_has(&format!("is a symlink to {}", target.display()))
        .stderr_has("hint:");
    assert_eq!(mode(&target), 0o644, "the tool chmod'ed a user's file");
    assert_eq!(read(&target), "user data\n");
    std::fs::write(&target, "changed by the user\n").unwrap();
    p.run(&["cache", "verify"]).success();
}

#[test]
fn a_work_dir_replaced_by_a_symlink_does_not_make_its_target_the_stages_own() {
    let p = Project::new();
    let file = stage_on_a_user_file(
        &p,
        "w",
        "rm -rf $ORCHESTRATOR_WORK_DIR; ln -s $(dirname {user}) $ORCHESTRATOR_WORK_DIR; ln -s $ORCHESTRATOR_WORK_DIR/file.txt ${outputs.y}",
    );
    p.run(&["run", "p.yaml"])
        .exit(1)
        .stderr_has("output `y`")
        .stderr_has("outside the stage's run dir");
    assert_eq!(mode(&file), 0o644, "the tool chmod'ed a user's file");
    assert_eq!(read(&file), "user data\n");
    p.run(&["cache", "verify"]).success();
}

#[test]
fn output_hardlinked_to_a_user_file_is_copied_never_shared() {
    let p = Project::new();
    let target = stage_on_a_user_file(&p, "h", "ln {user} ${outputs.y}");
    p.run(&["run", "p.yaml"]).success();
    assert_eq!(mode(&target), 0o644, "the tool chmod'ed a user's file");
    // The user's file is still theirs: changing it changes nothing in the store.
    std::fs::write(&target, "changed by the user\n").unwrap();
    p.run(&["cache", "verify"]).success();
    assert_eq!(read(&p.path("results/h/a/y")), "user data\n");
}

// ---------------------------------------------------------------------------------------------
// 3: a stage can never change what another stage or a later run sees.

/// `b` appends to its input; `c` reads the same input after `b`.
fn hacker(size_cmd: &str) -> String {
    format!(
        r#"
        name: hack
        stages:
          a:
            run: "{size_cmd}"
            outputs: [out]
          b:
            run: "wc -c < ${{inputs.x}} > ${{outputs.out}}; echo HACKED >> ${{inputs.x}}"
            inputs: {{ x: a.out }}
            outputs: [out]
          c:
            run: "cat ${{inputs.b}} > /dev/null; wc -c < ${{inputs.x}} > ${{outputs.out}}; tail -c 7 ${{inputs.x}} >> ${{outputs.out}}"
            inputs: {{ x: a.out, b: b.out }}
            outputs: [out]
        "#
    )
}

#[test]
#[ignore = "requires root (writes through a read-only mode; a mount namespace); CI and `make test` run it"]
fn with_read_only_inputs_a_stage_cannot_write_to_its_inputs() {
    require_root();
    let p = Project::new();
    p.file("p.yaml", &hacker("echo hello > ${outputs.out}"));
    // The stage sees the store read-only, root or not: the write fails in the stage.
    let r = p
        .cmd(&["run", "p.yaml"])
        .env("ORCHESTRATOR_READONLY_INPUTS", "1")
        .output()
        .unwrap();
    let r = Run { out: r };
    r.exit(1)
        .stderr_has("stage `b` failed")
        .stderr_has("Read-only file system")
        .stderr_has("skipped  c");
    assert_eq!(read(&p.path("results/hack/a/out")), "hello\n");
    p.run(&["cache", "verify"]).success();
    let again = p.run(&["run", "p.yaml", "--message-format", "json"]);
    assert!(events(&again, "cached").contains("a"), "{}", again.stdout());
}

#[test]
#[ignore = "requires root (writes through a read-only mode); CI and `make test` run it"]
fn a_write_to_an_input_is_detected_and_the_store_never_serves_it() {
    require_root();
    let p = Project::new();
    p.file("p.yaml", &hacker("echo hello > ${outputs.out}"));
    // As root the write goes through the read-only hardlink; the check after the stage
    // catches it.
    let r = p.run(&["run", "p.yaml"]);
    r.exit(1)
        .stderr_has("stage `b` modified its input `x`")
        .stderr_has("the damaged object was removed from the store with the results of `a`")
        .stderr_has("skipped  c");
    assert!(!r.stderr().contains("by another stage"), "{}", r.stderr());
    p.run(&["cache", "verify"]).success();
    p.run(&["plan", "p.yaml"])
        .success()
        .stdout_has("will run  a");
    // Fixed: everything runs on intact bytes.
    p.file(
        "p.yaml",
        &hacker("echo hello > ${outputs.out}").replace("; echo HACKED >> ${inputs.x}", ""),
    );
    p.run(&["run", "p.yaml"]).success();
    assert_eq!(read(&p.path("results/hack/c/out")), "6\nhello\n");
}

#[test]
fn editing_a_result_through_results_is_reported_and_never_served() {
    let p = Project::new();
    p.file(
        "p.yaml",
        "name: e\nstages:\n  a:\n    run: \"echo 1 > ${outputs.out}\"\n    outputs: [out]\n",
    );
    p.run(&["run", "p.yaml"]).success();
    let link = p.path("results/e/a/out");
    // As root (the norm in containers) a 0444 file is writable.
    let mut perm = std::fs::metadata(&link).unwrap().permissions();
    perm.set_mode(0o644);
    std::fs::set_permissions(&link, perm).unwrap();
    std::fs::write(&link, "2\n").unwrap();
    p.run(&["show", "p.yaml", "a"])
        .stderr_has("warning: output `out` of `a`")
        .stderr_has("was modified");
    p.run(&["plan", "p.yaml"])
        .success()
        .stdout_has("will run  a");
    p.run(&["run", "p.yaml"])
        .success()
        .stderr_has("warning: stage `a`")
        .stderr_has("ran 1");
    assert_eq!(read(&link), "1\n");
}

// ---------------------------------------------------------------------------------------------
// 5: a full disk.

struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .expect("run mount");
        assert!(st.success(), "mount -t tmpfs failed (root needed)");
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
#[ignore = "requires root (mounts a 20 MB tmpfs); CI and `make test` run it"]
fn full_disk_names_enospc_removes_partial_files_and_keeps_serving_cached_results() {
    require_root();
    let p = Project::new();
    let cache = p.path("small-cache");
    let _fs = Tmpfs::mount(&cache, "20m");
    let c = cache.to_str().unwrap();
    p.file(
        "p.yaml",
        r#"
        name: full
        stages:
          a:
            run: "echo small > ${outputs.out}"
            outputs: [out]
        "#,
    );
    p.run(&["run", "p.yaml", "--cache-dir", c]).success();
    p.file(
        "p.yaml",
        r#"
        name: full
        stages:
          a:
            run: "echo small > ${outputs.out}"
            outputs: [out]
          big:
            run: "head -c 50000000 /dev/zero > ${outputs.out}"
            outputs: [out]
        "#,
    );
    p.run(&["run", "p.yaml", "--cache-dir", c])
        .exit(1)
        .stderr_has("no space left on device")
        .stderr_has(c)
        .stderr_has("written");
    let mut partial = Vec::new();
    find_named(&cache.join("runs"), "out", &mut partial);
    assert!(partial.is_empty(), "partial outputs left: {partial:?}");
    // The cached stage is still served; the index is readable; gc works.
    p.run(&["status", "p.yaml", "--cache-dir", c])
        .success()
        .stdout_has("cached");
    let again = p.run(&[
        "run",
        "p.yaml",
        "--cache-dir",
        c,
        "--message-format",
        "json",
    ]);
    again.exit(1);
    assert!(events(&again, "cached").contains("a"), "{}", again.stdout());
    p.run(&["gc", "--cache-dir", c]).success();
    p.run(&["cache", "verify", "--cache-dir", c]).success();
    // Space again: everything runs.
    p.file(
        "p.yaml",
        r#"
        name: full
        stages:
          a:
            run: "echo small > ${outputs.out}"
            outputs: [out]
          big:
            run: "head -c 5000000 /dev/zero > ${outputs.out}"
            outputs: [out]
        "#,
    );
    p.run(&["run", "p.yaml", "--cache-dir", c])
        .success()
        .stderr_has("ran 1, cached 1");
}

#[test]
fn a_corrupt_index_is_rebuilt_from_the_manifests_not_an_exit() {
    let p = Project::new();
    p.file("p.yaml", CHAIN);
    p.run(&["run", "p.yaml"]).success();
    // sled writes its snapshot when it opens a database it had written before.
    p.run(&["run", "p.yaml"]).success();
    // What a crash or a full disk in the middle of a sled write leaves: a bad checksum.
    let snap = std::fs::read_dir(p.path("cache/index"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|f| {
            f.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("snap.")
        })
        .expect("sled keeps a snapshot file");
    let mut bytes = std::fs::read(&snap).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&snap, bytes).unwrap();
    p.run(&["run", "p.yaml"])
        .success()
        .stderr_has("warning: the cache index")
        .stderr_has("rebuilt from the committed manifests")
        .stderr_has("ran 0, cached 2");
    p.run(&["gc"]).success();
    p.run(&["cache", "verify"]).success();
}

// ---------------------------------------------------------------------------------------------
// 6: two pipeline files sharing a `name:`.

const CHAIN: &str = r#"
name: chain
params:
  v: 1
stages:
  a:
    run: "echo ${params.v} > ${outputs.out}"
    outputs: [out]
  b:
    run: "cat ${inputs.x} ${inputs.x} > ${outputs.out}"
    inputs: { x: a.out }
    outputs: [out]
"#;

#[test]
fn two_pipeline_files_never_share_results_or_gc_roots() {
    let p = Project::new();
    p.file("p1.yaml", CHAIN);
    p.file("child.yaml", "extend: ./p1.yaml\nparams: {v: 7}\n");
    p.run(&["run", "p1.yaml"]).success();
    p.run(&["run", "child.yaml"])
        .exit(2)
        .stderr_has("pipeline name `chain` is already used by")
        .stderr_has("p1.yaml")
        .stderr_has("hint: give child.yaml its own `name:`");
    assert_eq!(read(&p.path("results/chain/a/out")), "1\n");
    p.file(
        "child.yaml",
        "extend: ./p1.yaml\nname: child\nparams: {v: 7}\n",
    );
    p.run(&["run", "child.yaml"]).success();
    p.run(&["gc"]).success();
    p.run(&["run", "p1.yaml"])
        .success()
        .stderr_has("ran 0, cached 2");
    p.run(&["run", "child.yaml"])
        .success()
        .stderr_has("ran 0, cached 2");
    assert_eq!(read(&p.path("results/chain/a/out")), "1\n");
    assert_eq!(read(&p.path("results/child/a/out")), "7\n");
    // A renamed pipeline file takes its name over (the old file is gone).
    std::fs::rename(p.path("p1.yaml"), p.path("p1-renamed.yaml")).unwrap();
    p.file(
        "child.yaml",
        "extend: ./p1-renamed.yaml\nname: child\nparams: {v: 7}\n",
    );
    p.run(&["run", "p1-renamed.yaml"])
        .success()
        .stderr_has("ran 0, cached 2");
}

// ---------------------------------------------------------------------------------------------
// 7: a garbage manifest is a miss, with a warning.

#[test]
fn garbage_manifest_is_a_miss_with_a_warning() {
    let p = Project::new();
    p.file("p.yaml", CHAIN);
    p.run(&["run", "p.yaml"]).success();
    let plan = p.run(&["plan", "p.yaml", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&plan.stdout()).unwrap();
    let key_a = v["instances"][0]["key"].as_str().unwrap().to_string();
    let key_b = v["instances"][1]["key"].as_str().unwrap().to_string();
    std::fs::write(p.path(&format!("cache/manifests/{key_a}.json")), "garbage").unwrap();
    let r = p.run(&["run", "p.yaml", "--message-format", "json"]);
    r.success().stderr_has("warning:").stderr_has(&key_a);
    assert_eq!(events(&r, "started"), set(&["a"]));
    p.run(&["cache", "verify"]).success();
    // A manifest that parses but belongs to another key.
    let good_a = std::fs::read(p.path(&format!("cache/manifests/{key_a}.json"))).unwrap();
    std::fs::write(p.path(&format!("cache/manifests/{key_b}.json")), good_a).unwrap();
    let r = p.run(&["run", "p.yaml", "--message-format", "json"]);
    r.success().stderr_has("warning:").stderr_has(&key_b);
    assert_eq!(events(&r, "started"), set(&["b"]));
}

// ---------------------------------------------------------------------------------------------
// 8: one fingerprint runs once per run.

#[test]
fn instances_with_the_same_fingerprint_run_once() {
    let p = Project::new();
    let log = p.path("ran.log");
    let mut s = String::from("name: twins\nstages:\n");
    for i in 0..12 {
        s.push_str(&format!(
            "  t{i}:\n    run: \"echo ran >> {}; sleep 0.2; echo same > ${{outputs.out}}\"\n    outputs: [out]\n",
            log.display()
        ));
    }
    p.file("p.yaml", &s);
    let r = p.run(&["run", "p.yaml", "--jobs", "12", "--message-format", "json"]);
    r.success();
    assert_eq!(
        read(&log),
        "ran\n",
        "the shared fingerprint ran more than once"
    );
    assert_eq!(events(&r, "started").len(), 1);
    for i in 0..12 {
        assert_eq!(read(&p.path(&format!("results/twins/t{i}/out"))), "same\n");
    }
    p.run(&["status", "p.yaml"]).success();
    p.run(&["run", "p.yaml"])
        .success()
        .stderr_has("ran 0, cached 12");
}

// ---------------------------------------------------------------------------------------------
// 9, 19: paths in the cache are relative to it; a moved or copied cache keeps working.

#[test]
fn two_caches_in_one_project_keep_their_own_results() {
    let p = Project::new();
    p.file("p.yaml", CHAIN);
    p.run(&["run", "p.yaml"]).success();
    let r = p.run(&["run", "p.yaml", "--cache-dir", "other", "--set", "v=2"]);
    r.success();
    assert_eq!(read(&p.path("results/chain/a/out")), "1\n");
    let shown = p.run(&[
        "show",
        "p.yaml",
        "a",
        "out",
        "--cache-dir",
        "other",
        "--set",
        "v=2",
    ]);
    assert_eq!(read(Path::new(shown.stdout().trim())), "2\n");
    assert!(
        r.stderr().contains(&format!(
            "results: {}",
            p.path("other/results/chain")
                .canonicalize()
                .unwrap()
                .display()
        )),
        "{}",
        r.stderr()
    );
    assert_eq!(read(&p.path("other/results/chain/a/out")), "2\n");
}

#[test]
fn a_moved_cache_keeps_its_logs_run_dirs_and_results() {
    let p = Project::new();
    p.file("p.yaml", CHAIN);
    p.run(&["run", "p.yaml"]).success();
    std::fs::rename(p.path("cache"), p.path("cache2")).unwrap();
    let path = p.run(&["logs", "p.yaml", "a", "--path", "--cache-dir", "cache2"]);
    path.success();
    assert!(
        path.stdout().trim().starts_with(
            &p.path("cache2")
                .canonicalize()
                .unwrap()
                .display()
                .to_string()
        ),
        "{}",
        path.stdout()
    );
    p.run(&["logs", "p.yaml", "a", "--cache-dir", "cache2"])
        .success();
    p.run(&["gc", "--cache-dir", "cache2"])
        .success()
        .stdout_has("0 run dirs");
    p.run(&["run", "p.yaml", "--cache-dir", "cache2"])
        .success()
        .stderr_has("ran 0, cached 2");
    // A copy elsewhere works on its own, even with the original gone.
    let elsewhere = tempfile::tempdir().unwrap();
    let copy = elsewhere.path().join("c");
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(p.path("cache2"))
        .arg(&copy)
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::remove_dir_all(p.path("cache2")).unwrap();
    let c = copy.to_str().unwrap();
    let path = p.run(&["logs", "p.yaml", "b", "--path", "--cache-dir", c]);
    assert!(path.stdout().trim().starts_with(c), "{}", path.stdout());
    p.run(&["run", "p.yaml", "--cache-dir", c])
        .success()
        .stderr_has("ran 0, cached 2");
    assert_eq!(read(&copy.join("results/chain/b/out")), "1\n1\n");
}

// ---------------------------------------------------------------------------------------------
// 10: broken pipes.

fn closed_pipe(p: &Project, args: &[&str], close_stderr: bool) -> (Option<i32>, String) {
    let mut c = p.cmd(args);
    if close_stderr {
        c.stdout(Stdio::null()).stderr(Stdio::piped());
    } else {
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
    }
    let mut child = c.spawn().unwrap();
    // The reader goes away before the first write.
    if close_stderr {
        drop(child.stderr.take());
    } else {
        drop(child.stdout.take());
    }
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut err);
    }
    let st = child.wait().unwrap();
    (st.code(), err)
}

#[test]
fn broken_pipes_end_quietly() {
    let p = Project::new();
    p.file("p.yaml", CHAIN);
    p.file(
        "bad.yaml",
        "name: bad\nstages:\n  a:\n    uses: nope\n  b: 3\n",
    );
    p.run(&["run", "p.yaml"]).success();
    for args in [
        &["schema"][..],
        &["gc"],
        &["status", "p.yaml"],
        &["plan", "p.yaml"],
        &["dag", "p.yaml"],
        &["run", "p.yaml", "--message-format", "json"],
    ] {
        let (code, err) = closed_pipe(&p, args, false);
        assert!(
            !err.contains("panicked") && code != Some(101),
            "{args:?}: exit {code:?}\n{err}"
        );
    }
    let (code, _) = closed_pipe(&p, &["validate", "bad.yaml"], true);
    assert_ne!(code, Some(101));
    assert_ne!(code, Some(0), "a bad file still fails");
}

// ---------------------------------------------------------------------------------------------
// 13: read-only commands work while a run holds the cache.

#[test]
fn read_only_commands_work_during_a_run() {
    let p = Project::new();
    let flag = p.path("started.flag");
    let go = p.path("go.flag");
    let slow = format!(
        "name: slow\nstages:\n  a:\n    run: \"echo a > ${{outputs.out}}\"\n    outputs: [out]\n  b:\n    run: \"touch {}; while [ ! -e {} ]; do sleep 0.05; done; echo b > ${{outputs.out}}\"\n    inputs: {{ x: a.out }}\n    outputs: [out]\n",
        flag.display(),
        go.display()
    );
    p.file("p.yaml", &slow);
    let mut run = p
        .cmd(&["run", "p.yaml"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_file(&flag, Duration::from_secs(30));
    let results = [
        p.run(&["plan", "p.yaml"]),
        p.run(&["report", "p.yaml"]),
        p.run(&["status", "p.yaml"]),
        p.run(&["show", "p.yaml", "a"]),
        p.run(&["logs", "p.yaml", "a"]),
        p.run(&["dag", "p.yaml"]),
    ];
    std::fs::write(&go, "").unwrap();
    let st = wait_exit(&mut run, Duration::from_secs(30));
    assert!(st.success());
    for r in &results {
        r.success();
        assert!(!r.stderr().contains("rebuild-index"), "{}", r.stderr());
    }
    results[0]
        .stdout_has("cached    a")
        .stdout_has("will run  b");
    results[2].stdout_has("running");
}

// ---------------------------------------------------------------------------------------------
// 14: no colour codes unless a terminal or --color always.

#[test]
fn warnings_are_plain_text_when_stderr_is_not_a_terminal() {
    let p = Project::new();
    p.file("p.yaml", CHAIN);
    std::fs::write(p.path("cache/lock"), "999999999 elsewhere\n").unwrap();
    let out = p
        .cmd(&["run", "p.yaml"])
        .env_remove("NO_COLOR")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("taking over the stale lock"), "{err}");
    assert!(!err.contains('\x1b'), "colour codes on a pipe: {err:?}");
    std::fs::write(p.path("cache/lock"), "999999999 elsewhere\n").unwrap();
    let out = p
        .cmd(&["run", "p.yaml", "--color", "always"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains('\x1b'), "--color always: {err:?}");
}

// ---------------------------------------------------------------------------------------------
// 15, 16: every process of a stage ends with it.

fn counter_pipeline(p: &Project, marker: &str) {
    p.file(
        "p.yaml",
        &format!(
            "name: counter\nstages:\n  a:\n    run: \"sh -c 'for i in $(seq 1 24); do echo $i >> ${{outputs.out}}; sleep 0.25; done'; echo end\"\n    env: {{ MARKER: \"{marker}\" }}\n    outputs: [out]\n"
        ),
    );
}

fn the_out_file(p: &Project) -> PathBuf {
    let t = Instant::now();
    loop {
        let mut outs = Vec::new();
        find_named(&p.path("cache/runs"), "out", &mut outs);
        if let Some(o) = outs.into_iter().find(|o| o.is_file()) {
            if std::fs::metadata(&o).map(|m| m.len() > 0).unwrap_or(false) {
                return o;
            }
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the stage never wrote"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal_kills_every_process(sig: i32, want: Option<i32>) {
    let p = Project::new();
    let marker = format!("MARKER=trust-{sig}-{}", std::process::id());
    counter_pipeline(&p, marker.trim_start_matches("MARKER="));
    let mut run = p
        .cmd(&["run", "p.yaml"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = the_out_file(&p);
    // SAFETY: signalling the child we spawned.
    unsafe { libc::kill(run.id() as i32, sig) };
    let st = wait_exit(&mut run, Duration::from_secs(30));
    if let Some(code) = want {
        assert_eq!(st.code(), Some(code), "exit status {st:?}");
    }
    // Whatever the stage ran is gone within a moment (the loop alone takes 6 s), and the file
    // stops growing.
    let t = Instant::now();
    while !processes_with_env(&marker).is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "stage processes outlived the orchestrator: {:?}",
            processes_with_env(&marker)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let len = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0),
        len,
        "something still appends to {}",
        out.display()
    );
    // The next run starts the stage afresh and finishes it.
    p.run(&["run", "p.yaml"]).success().stderr_has("ran 1");
    let want: String = (1..=24).map(|i| format!("{i}\n")).collect();
    assert_eq!(read(&p.path("results/counter/a/out")), want);
}

#[test]
fn sighup_ends_the_run_and_every_stage_process_exit_129() {
    signal_kills_every_process(libc::SIGHUP, Some(129));
}

#[test]
fn sigterm_ends_the_run_and_every_stage_process_exit_143() {
    signal_kills_every_process(libc::SIGTERM, Some(143));
}

#[test]
fn kill_9_of_the_orchestrator_ends_every_stage_process() {
    signal_kills_every_process(libc::SIGKILL, None);
}

#[test]
fn a_new_run_never_starts_a_fingerprint_whose_previous_processes_live() {
    let p = Project::new();
    let marker = format!("MARKER=trust-leftover-{}", std::process::id());
    counter_pipeline(&p, marker.trim_start_matches("MARKER="));
    let plan = p.run(&["plan", "p.yaml", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&plan.stdout()).unwrap();
    let key = v["instances"][0]["key"].as_str().unwrap().to_string();
    // A leftover of an earlier attempt whose reaper was killed too (e.g. `kill -9` of both):
    // still in its process group, recorded with its run dir in the fingerprint's work dir.
    let run_dir = p.path(&format!("cache/runs/{key}.1"));
    std::fs::create_dir_all(run_dir.join("out")).unwrap();
    std::fs::create_dir_all(p.path(&format!("cache/work/{key}"))).unwrap();
    let mut leftover = std::process::Command::new("sh")
        .arg("-c")
        .arg("while true; do sleep 0.1; done")
        .env("MARKER", marker.trim_start_matches("MARKER="))
        .env(
            "ORCHESTRATOR_RUN_DIR",
            run_dir.canonicalize().unwrap().to_str().unwrap(),
        )
        .process_group(0)
        .spawn()
        .unwrap();
    std::fs::write(
        p.path(&format!("cache/work/{key}/.pgid")),
        format!("{} {key}.1\n", leftover.id()),
    )
    .unwrap();
    p.run(&["run", "p.yaml"])
        .success()
        .stderr_has("left running by an earlier run");
    let st = wait_exit(&mut leftover, Duration::from_secs(10));
    assert!(!st.success());
    assert!(processes_with_env(&marker).is_empty());
}

#[test]
fn a_background_child_cannot_change_a_committed_output() {
    let p = Project::new();
    p.file(
        "p.yaml",
        "name: bg\nstages:\n  a:\n    run: \"echo early > ${outputs.out}; (exec >>${outputs.out}; sleep 1; echo late) & exit 0\"\n    outputs: [out]\n",
    );
    p.run(&["run", "p.yaml"]).success();
    let first = read(&p.path("results/bg/a/out"));
    assert_eq!(first, "early\nlate\n");
    std::thread::sleep(Duration::from_millis(1500));
    p.run(&["cache", "verify"]).success();
    assert_eq!(read(&p.path("results/bg/a/out")), first);
    p.run(&["run", "p.yaml"]).success().stderr_has("cached 1");
}

// ---------------------------------------------------------------------------------------------
// 17: non-UTF-8 names.

#[test]
fn non_utf8_names_in_an_output_folder_are_kept_byte_for_byte() {
    let p = Project::new();
    p.file(
        "p.yaml",
        "name: bytes\nstages:\n  a:\n    run: \"mkdir -p ${outputs.d}; cd ${outputs.d}; echo one > $(printf '\\\\377'); echo two > $(printf '\\\\376')\"\n    outputs: [d/]\n",
    );
    p.run(&["run", "p.yaml"]).success();
    let d = p.path("results/bytes/a/d");
    let mut names: Vec<(Vec<u8>, String)> = std::fs::read_dir(&d)
        .unwrap()
        .flatten()
        .map(|e| (e.file_name().as_bytes().to_vec(), read(&e.path())))
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            (vec![0xfe], "two\n".to_string()),
            (vec![0xff], "one\n".to_string())
        ]
    );
    p.run(&["run", "p.yaml"]).success().stderr_has("cached 1");
    p.run(&["cache", "verify"]).success();
}

// ---------------------------------------------------------------------------------------------
// 18: an external input that changes while the stage reads it.

#[test]
fn external_input_changed_during_the_stage_is_not_committed() {
    let p = Project::new();
    p.file("cfg.txt", "A\n");
    let flags: Vec<PathBuf> = ["started", "go1", "read", "go2"]
        .iter()
        .map(|f| p.path(&format!("{f}.flag")))
        .collect();
    let wait = |f: &Path| format!("while [ ! -e {} ]; do sleep 0.05; done", f.display());
    p.file(
        "p.yaml",
        &format!(
            "name: ext\nstages:\n  a:\n    run: \"touch {}; {}; cat ${{inputs.cfg}} > ${{outputs.out}}; touch {}; {}\"\n    inputs: {{ cfg: ./cfg.txt }}\n    outputs: [out]\n",
            flags[0].display(),
            wait(&flags[1]),
            flags[2].display(),
            wait(&flags[3])
        ),
    );
    let run = p
        .cmd(&["run", "p.yaml"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The stage reads B; A is back before it ends.
    wait_for_file(&flags[0], Duration::from_secs(30));
    std::fs::write(p.path("cfg.txt"), "B\n").unwrap();
    std::fs::write(&flags[1], "").unwrap();
    wait_for_file(&flags[2], Duration::from_secs(30));
    std::fs::write(p.path("cfg.txt"), "A\n").unwrap();
    std::fs::write(&flags[3], "").unwrap();
    let out = run.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("input `cfg`"), "{err}");
    assert!(err.contains("changed while the stage ran"), "{err}");
    p.run(&["run", "p.yaml"]).success().stderr_has("ran 1");
    assert_eq!(read(&p.path("results/ext/a/out")), "A\n");
}

// ---------------------------------------------------------------------------------------------
// 20, 21: where a stage runs and what environment it sees.

#[test]
fn stages_run_in_their_run_dir_with_output_folders_made() {
    let p = Project::new();
    p.file(
        "p.yaml",
        "name: cwd\nstages:\n  a:\n    run: \"echo x > stray.txt; pwd > ${outputs.where}; cd ${outputs.d} && echo y > f\"\n    outputs: [where, d/]\n",
    );
    p.run(&["run", "p.yaml"]).success();
    assert!(
        !p.path("stray.txt").exists(),
        "a stage wrote into the project"
    );
    let cwd = read(&p.path("results/cwd/a/where"));
    let runs = p.path("cache/runs").canonicalize().unwrap();
    assert!(
        Path::new(cwd.trim()).starts_with(&runs),
        "stage ran in {cwd}"
    );
    assert_eq!(read(&p.path("results/cwd/a/d/f")), "y\n");
}

#[test]
fn the_environment_reaches_stages_and_only_env_is_in_the_fingerprint() {
    let p = Project::new();
    p.file(
        "p.yaml",
        "name: env\nstages:\n  a:\n    run: \"echo $WHO > ${outputs.out}\"\n    outputs: [out]\n",
    );
    let run = |who: &str| {
        let out = p.cmd(&["run", "p.yaml"]).env("WHO", who).output().unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(run("alice").contains("ran 1"));
    assert_eq!(read(&p.path("results/env/a/out")), "alice\n");
    // Documented: the process environment is not part of the key.
    assert!(run("bob").contains("cached 1"));
    assert_eq!(read(&p.path("results/env/a/out")), "alice\n");
    // `env:` is.
    p.file(
        "p.yaml",
        "name: env\nstages:\n  a:\n    run: \"echo $WHO > ${outputs.out}\"\n    env: { WHO: carol }\n    outputs: [out]\n",
    );
    p.run(&["plan", "p.yaml", "--explain"])
        .success()
        .stdout_has("changed fields: env.WHO");
    assert!(run("bob").contains("ran 1"));
    assert_eq!(read(&p.path("results/env/a/out")), "carol\n");
    let readme = read(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("README.md"));
    assert!(
        readme.contains("Which environment reaches a stage"),
        "README must say which environment reaches a stage"
    );
}

// ---------------------------------------------------------------------------------------------
// 4: an output never refers to a place other than the one its own pipeline names.

fn recordio_pipeline(name: &str, source: &str) -> String {
    format!(
        r#"
        name: {name}
        stages:
          ds:
            uses: recordio
            inputs: {{ source: {source} }}
          look:
            run: "cat ${{inputs.t}}/dataset.json > ${{outputs.out}}"
            inputs: {{ t: ds.train }}
            outputs: [out]
        "#
    )
}

fn rec_path_in(p: &Project, pipeline: &str) -> String {
    let v: serde_json::Value =
        serde_json::from_str(&read(&p.path(&format!("results/{pipeline}/look/out")))).unwrap();
    v["rec"].as_str().unwrap().to_string()
}

#[test]
#[ignore = "requires the stage worker (`make build`); `make test` runs it"]
fn recordio_outputs_refer_to_their_own_pipelines_folder() {
    require_worker();
    let p = Project::new();
    p.file(
        "gen.yaml",
        r#"
        name: gen
        stages:
          data:
            uses: synthetic-faces
            with: { identities: 3, images_per_identity: 2, size: 16, verification_identities: 2, pairs: 20, ijbc_subjects: 2 }
        "#,
    );
    p.run(&["run", "gen.yaml", "--gpus", "none"]).success();
    let train = p.run(&["show", "gen.yaml", "data", "train"]);
    let train = PathBuf::from(train.stdout().trim());
    for src in ["srcA", "srcB"] {
        std::fs::create_dir_all(p.path(src)).unwrap();
        for f in ["train.rec", "train.idx"] {
            std::fs::copy(train.join(f), p.path(&format!("{src}/{f}"))).unwrap();
        }
    }
    p.file("a.yaml", &recordio_pipeline("a", "./srcA"));
    p.file("b.yaml", &recordio_pipeline("b", "./srcB"));
    p.run(&["run", "a.yaml"]).success();
    p.run(&["run", "b.yaml"]).success();
    let canon = |s: &str| p.path(s).canonicalize().unwrap();
    assert!(rec_path_in(&p, "a").starts_with(canon("srcA").to_str().unwrap()));
    assert!(
        rec_path_in(&p, "b").starts_with(canon("srcB").to_str().unwrap()),
        "b's dataset points at {}",
        rec_path_in(&p, "b")
    );
    // srcA moves away: b does not notice.
    std::fs::rename(p.path("srcA"), p.path("srcA-moved")).unwrap();
    p.run(&["run", "b.yaml"]).success().stderr_has("cached 2");
    // Same index, other bytes in the .rec: everything downstream of the dataset sees it.
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(p.path("srcB/train.rec"))
        .unwrap()
        .write_all(b"\0")
        .unwrap();
    let r = p.run(&["run", "b.yaml", "--message-format", "json"]);
    r.success();
    assert_eq!(events(&r, "started"), set(&["ds", "look"]));
}

/// A one-stage pipeline whose output is the command name of the stage's parent: its reaper.
fn reaper_name_pipeline(p: &Project) {
    p.file(
        "p.yaml",
        r#"
        name: reaper
        stages:
          a:
            run: "cat /proc/$PPID/comm > ${outputs.out}"
            outputs: [out]
        "#,
    );
}

#[test]
fn each_stage_runs_under_the_small_reaper_binary_installed_beside_the_orchestrator() {
    let p = Project::new();
    reaper_name_pipeline(&p);
    p.run(&["run", "p.yaml"]).success();
    assert_eq!(read(&p.path("results/reaper/a/out")), "orch-reaper\n");
}

#[test]
fn stages_one_after_another_share_a_reaper_and_each_has_it_to_itself() {
    // A chain: each stage starts after the one before has ended, so one reaper serves them all;
    // the first leaves a background child behind, which must end with that stage (the reaper
    // waits for it) and never be seen by the next.
    let p = Project::new();
    p.file(
        "p.yaml",
        r#"
        name: pool
        stages:
          a:
            run: "(sleep 0.3; echo late >> ${outputs.out}) & echo $PPID > ${outputs.out}"
            outputs: [out]
          b:
            run: "echo $PPID > ${outputs.out}; cat /proc/$PPID/task/*/children >> ${outputs.out}"
            inputs: { x: a.out }
            outputs: [out]
          c:
            run: "echo $PPID > ${outputs.out}"
            inputs: { x: b.out }
            outputs: [out]
        "#,
    );
    p.run(&["run", "p.yaml", "-j", "1"]).success();
    let a = read(&p.path("results/pool/a/out"));
    let b = read(&p.path("results/pool/b/out"));
    let c = read(&p.path("results/pool/c/out"));
    let reaper = a.lines().next().unwrap();
    assert_eq!(
        a.lines().nth(1),
        Some("late"),
        "a's background child was cut short: {a}"
    );
    assert_eq!(b.lines().next(), Some(reaper), "b: {b}");
    assert_eq!(c.trim(), reaper);
    // b's reaper had one child then: b's own shell (a's background child was long gone).
    let children: Vec<&str> = b
        .lines()
        .skip(1)
        .flat_map(|l| l.split_whitespace())
        .collect();
    assert_eq!(children.len(), 1, "b's reaper's children: {b}");
}

#[test]
fn a_committed_attempt_frees_nothing_but_a_work_dir_with_files_in_it() {
    // `a` leaves its work dir empty, `b` writes a checkpoint there: after the commit, `a`'s
    // emptied `out/` and its work dir (holding only the emptied attempt record) are in its run
    // dir; `b`'s work dir is gone, its space freed; no work dir is left in the cache.
    let p = Project::new();
    p.file(
        "p.yaml",
        r#"
        name: tidy
        stages:
          a:
            run: "echo a > ${outputs.out}"
            outputs: [out]
          b:
            run: "echo ckpt > $ORCHESTRATOR_WORK_DIR/ckpt; echo b > ${outputs.out}"
            outputs: [out]
        "#,
    );
    p.run(&["run", "p.yaml"]).success();
    let runs: Vec<std::path::PathBuf> = std::fs::read_dir(p.path("cache/runs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let by = |needle: &str| {
        runs.iter()
            .find(|r| read(&r.join("command.sh")).contains(needle))
            .unwrap()
            .clone()
    };
    let (a, b) = (by("echo a"), by("echo ckpt"));
    let entries = |d: &std::path::Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert!(entries(&a.join("out")).is_empty());
    assert_eq!(entries(&a.join("work")), vec![".pgid".to_string()]);
    assert_eq!(read(&a.join("work/.pgid")), "");
    assert!(!b.join("work").exists());
    assert!(entries(&p.path("cache/work")).is_empty());
    assert_eq!(read(&p.path("results/tidy/b/out")), "b\n");
    p.run(&["run", "p.yaml"]).success().stderr_has("cached 2");
}

#[test]
fn an_orchestrator_copied_alone_starts_itself_as_each_stages_reaper() {
    let p = Project::new();
    reaper_name_pipeline(&p);
    let alone = p.path("bin/orchestrator");
    std::fs::create_dir_all(alone.parent().unwrap()).unwrap();
    std::fs::copy(crate::support::bin(), &alone).unwrap();
    let out = std::process::Command::new(&alone)
        .current_dir(p.root())
        .args(["run", "p.yaml"])
        .env_remove("ORCHESTRATOR_CACHE")
        .output()
        .unwrap();
    Run { out }.success();
    // Started through /proc/self/exe, the kernel names the reaper `exe`.
    assert_eq!(read(&p.path("results/reaper/a/out")), "exe\n");
}

#[test]
fn the_reaper_binary_refuses_to_run_by_hand_and_names_a_version_mismatch() {
    let reaper = env!("CARGO_BIN_EXE_orchestrator-reaper");
    let by_hand = Run {
        out: std::process::Command::new(reaper).output().unwrap(),
    };
    by_hand
        .exit(2)
        .stderr_has("it is not a command to run by hand");
    let other = Run {
        out: std::process::Command::new(reaper)
            .args(["__orchestrator-reaper/0", "1", "x"])
            .output()
            .unwrap(),
    };
    other
        .exit(127)
        .stderr_has("this orchestrator-reaper speaks __orchestrator-reaper/2, the orchestrator that started it __orchestrator-reaper/0")
        .stderr_has("install orchestrator and orchestrator-reaper from the same build");
}

/// The parent of process `pid` (field 4 of /proc/<pid>/stat, after the command name).
fn parent_of(pid: i32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    after.split(' ').nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_killed_reaper_server_fails_the_running_stage_clearly_and_stops_its_processes() {
    let p = Project::new();
    let (flag, go) = (p.path("started.flag"), p.path("go.flag"));
    p.file(
        "p.yaml",
        &format!(
            "name: lost\nstages:\n  a:\n    run: \"if [ ! -e {go} ]; then echo $$ > {pid}; touch {flag}; sleep 120; fi; echo a > ${{outputs.out}}\"\n    outputs: [out]\n",
            go = go.display(),
            flag = flag.display(),
            pid = p.path("stage.pid").display()
        ),
    );
    let mut run = p
        .cmd(&["run", "p.yaml"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_file(&flag, Duration::from_secs(30));
    let stage: i32 = read(&p.path("stage.pid")).trim().parse().unwrap();
    let reaper = parent_of(stage);
    let server = parent_of(reaper);
    assert_eq!(parent_of(server), run.id() as i32);
    let comm = std::fs::read_to_string(format!("/proc/{server}/comm")).unwrap();
    assert_eq!(comm, "orch-reaper\n");
    // SAFETY: the server of the run this test started.
    unsafe { libc::kill(server, libc::SIGKILL) };
    let st = wait_exit(&mut run, Duration::from_secs(30));
    let mut err = String::new();
    std::io::Read::read_to_string(run.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(!st.success(), "{err}");
    assert!(
        err.contains("the stages' reaper process")
            && err.contains("ended while the stage ran")
            && err.contains("run again to retry"),
        "{err}"
    );
    assert!(
        !std::path::Path::new(&format!("/proc/{stage}")).exists(),
        "the stage's shell outlived its reaper"
    );
    // The next run starts a server of its own.
    std::fs::write(&go, "").unwrap();
    p.run(&["run", "p.yaml"]).success();
    assert_eq!(read(&p.path("results/lost/a/out")), "a\n");
}

#[test]
fn a_retry_is_never_ended_by_a_late_word_about_the_attempt_before() {
    // The first attempt fails at once; the retry runs for a second. Both the failed attempt's
    // reaper and the server report its end: the second report must not end the retry.
    let p = Project::new();
    let count = p.path("count");
    p.file(
        "p.yaml",
        &format!(
            "name: again\nstages:\n  a:\n    run: \"n=$(cat {c} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {c}; if [ $n -lt 2 ]; then exit 1; fi; sleep 1; echo ok > ${{outputs.out}}\"\n    outputs: [out]\n    retry: 1\n",
            c = count.display()
        ),
    );
    for round in 0..3 {
        let _ = std::fs::remove_file(&count);
        let r = p.run(&["run", "p.yaml", "--force", "a"]);
        r.success();
        assert_eq!(read(&count), "2\n", "round {round}");
        assert_eq!(read(&p.path("results/again/a/out")), "ok\n");
    }
}
