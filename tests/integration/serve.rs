//! `orchestrator serve` through the real binaries: a dashboard that follows a live run in a real
//! headless Chromium (every instance in the DAG, running -> cached without a reload, the log of
//! a running stage, a curve point per finished epoch, the report's rows in the sweep table);
//! a server that is read-only, keeps to the cache, wants its token, and copes with a 100 MB log,
//! a corrupt object, a missing log and 1,000 instances. Screenshots land in
//! `target/tmp/serve-screenshots/<test>/` (the path is printed).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::browser::{enc, shots_dir, wait_for, Browser, Server};
use crate::support::{bin, require_chromium, require_worker, Project};

const MINUTE: Duration = Duration::from_secs(60);

/// A small pipeline with a real training (iresnet-tiny, 3 epochs, verified on the synthetic
/// pairs), a 2-cell matrix for the report, and `run:` stages that wait for files the test
/// creates, so the test decides when they finish.
const LIVE: &str = r#"
    name: live
    matrix:
      ratio: [0.5, 0.75]
    stages:
      data:
        uses: synthetic-faces
        with: { identities: 8, images_per_identity: 8, size: 32, seed: 7 }
      train_original:
        uses: train
        inputs: { train: data.train, pairs: data.pairs }
        with: { network: iresnet-tiny, loss: cosface, epochs: 3, batch_size: 16, lr: 0.1, lr_batch: 128, milestones: [2], seed: 1 }
      score_rand:
        uses: score
        inputs: { train: data.train }
        with: { method: rand, seed: 3 }
      prune:
        uses: prune
        inputs: { scores: score_rand.scores, train: data.train }
        with: { target_ratio: "${matrix.ratio}" }
      hello:
        run: |
          echo "hello from $ORCHESTRATOR_STAGE_ID"
          for i in 1 2 3; do echo "line $i"; done
          while [ ! -e gate ]; do sleep 0.05; done
          wc -l < ${inputs.kept} > ${outputs.out}
        inputs: { kept: prune.kept }
        outputs: [out]
      fit:
        run: |
          for e in 1 2 3; do
            while [ ! -e epoch$e ]; do sleep 0.05; done
            echo "{\"event\": \"epoch\", \"epoch\": $e, \"epochs\": 3, \"loss\": $((10 - e))}" >> "$ORCHESTRATOR_PROGRESS"
          done
          echo done > ${outputs.out}
        outputs: [out]
    report:
      stages: [prune]
      baseline: [train_original]
"#;

fn node_state(b: &Browser, id: &str) -> Option<String> {
    b.js(&format!(
        "const n = document.querySelector('#dag .node[data-id=\"' + CSS.escape({}) + '\"]'); return n ? n.dataset.state : null;",
        serde_json::to_string(id).unwrap()
    ))
}

#[track_caller]
fn wait_state(b: &Browser, id: &str, state: &str, timeout: Duration) {
    wait_for(&format!("`{id}` to show as {state}"), timeout, || {
        (node_state(b, id).as_deref() == Some(state)).then_some(())
    });
}

/// Open an instance's panel the way a user does: click its chip in the DAG.
fn click_node(b: &Browser, id: &str) {
    let _: Value = b.js(&format!(
        "document.querySelector('#dag .node[data-id=\"' + CSS.escape({}) + '\"]').dispatchEvent(new MouseEvent('click', {{bubbles: true}})); return null;",
        serde_json::to_string(id).unwrap()
    ));
    b.wait_js::<bool>(
        &format!("the panel of `{id}`"),
        MINUTE,
        &format!(
            "const p = document.getElementById('panel'); return !p.hidden && p.dataset.id === {} && !!p.querySelector('.pbody');",
            serde_json::to_string(id).unwrap()
        ),
    );
}

fn points(b: &Browser) -> Vec<f64> {
    b.js("return [...document.querySelectorAll('#chart-loss circle.pt')].map(c => Number(c.dataset.y));")
}

fn touch(p: &Path) {
    std::fs::write(p, "").unwrap();
}

#[test]
#[ignore = "requires chromium + chromedriver and the stage worker (`make test` installs and builds them)"]
fn dashboard_follows_a_live_run_in_a_browser() {
    require_worker();
    require_chromium();
    let proj = Project::new();
    // Stages run in their own run dir: the gates the test opens are named by absolute path.
    let root = proj.root().display().to_string();
    proj.file(
        "p.yaml",
        &LIVE
            .replace("-e gate ]", &format!("-e '{root}/gate' ]"))
            .replace("-e epoch$e ]", &format!("-e '{root}/epoch'$e ]")),
    );
    let shots = shots_dir("live_run");
    let mut run = proj
        .cmd(&["run", "p.yaml", "--gpus", "none", "-j", "4"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let server = Server::start(proj.root(), &["p.yaml"]);
    let b = Browser::start(&shots);
    b.goto(&server.url);
    b.wait_js::<bool>(
        "the page",
        MINUTE,
        "return document.body.dataset.ready === '1';",
    );
    assert!(
        !b.url().contains("token="),
        "the token stays out of the address bar: {}",
        b.url()
    );
    let _: Value = b.js("window.__noReload = 1; return null;");

    // The DAG shows every instance the CLI knows.
    let dag: Value = serde_json::from_slice(
        &proj
            .run(&["dag", "p.yaml", "--format", "json"])
            .success()
            .out
            .stdout,
    )
    .unwrap();
    let mut want: Vec<String> = dag["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();
    let mut shown: Vec<String> =
        b.js("return [...document.querySelectorAll('#dag .node')].map(n => n.dataset.id);");
    want.sort();
    shown.sort();
    assert_eq!(shown, want);

    // A user's own training script reporting epochs: one point per finished epoch, live.
    wait_state(&b, "fit", "running", MINUTE);
    click_node(&b, "fit");
    for e in 1..=3usize {
        touch(&proj.path(&format!("epoch{e}")));
        wait_for(&format!("{e} point(s) on fit's loss curve"), MINUTE, || {
            (points(&b).len() == e).then_some(())
        });
        assert_eq!(
            points(&b),
            (1..=e).map(|k| (10 - k) as f64).collect::<Vec<_>>()
        );
    }
    wait_state(&b, "fit", "cached", MINUTE);

    // A running stage: its state, then its log, then cached without a reload.
    let hello = "hello[ratio=0.5]";
    wait_state(&b, hello, "running", 2 * MINUTE);
    b.screenshot("1-dag-running.png");
    click_node(&b, hello);
    b.wait_js::<bool>(
        "the stage's lines in the log panel",
        MINUTE,
        "const t = document.getElementById('log').textContent; return t.includes('hello from hello[ratio=0.5]') && t.includes('line 3');",
    );
    b.screenshot("2-panel-log.png");
    touch(&proj.path("gate"));
    wait_state(&b, hello, "cached", MINUTE);

    // The built-in training: watched while it runs, a point per finished epoch at any moment.
    click_node(&b, "train_original");
    let mut seen = Vec::new();
    loop {
        let state = node_state(&b, "train_original").unwrap();
        let shown = points(&b).len();
        let api = server.api("/api/pipelines/live/instances/train_original");
        let finished = api["curve"]["points"].as_array().unwrap().len();
        assert!(
            shown <= finished,
            "the page shows {shown} epochs, only {finished} finished ({state})"
        );
        seen.push((state.clone(), shown));
        if state == "cached" {
            break;
        }
        assert!(
            ["running", "waiting"].contains(&state.as_str()),
            "train_original is {state}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let detail = server.api("/api/pipelines/live/instances/train_original");
    let loss: Vec<f64> = detail["metrics"]["loss_per_epoch"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    wait_for("3 points on the training curve", MINUTE, || {
        (points(&b) == loss).then_some(())
    });
    assert_eq!(loss.len(), 3, "one loss value per epoch: {seen:?}");
    let accuracy: usize =
        b.js("return document.querySelectorAll('#chart-accuracy circle.pt').length;");
    assert_eq!(accuracy, 3, "verification accuracy per epoch");
    b.screenshot("3-training-curve.png");

    touch(&proj.path("gate"));
    let status = run.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut run.stderr.take().unwrap(), &mut err).unwrap();
    assert!(status.success(), "run failed:\n{err}");
    for id in &want {
        wait_state(&b, id, "cached", MINUTE);
    }

    // The sweep table has the report's rows, cell for cell.
    let report = proj.run(&["report", "p.yaml"]).success().stdout();
    let md_rows: Vec<Vec<String>> = report
        .lines()
        .filter(|l| l.starts_with('|') && !l.starts_with("|---"))
        .skip(1)
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().trim_matches('*').to_string())
                .collect()
        })
        .collect();
    let _: Value =
        b.js("document.querySelector('nav.views button[data-view=sweep]').click(); return null;");
    let table: Vec<Vec<String>> = b.wait_js(
        "the sweep table",
        MINUTE,
        "const rows = [...document.querySelectorAll('#sweep-table tbody tr')]; return rows.length ? rows.map(r => [...r.cells].map(c => c.textContent.trim())) : null;",
    );
    assert_eq!(table, md_rows);
    assert_eq!(table.len(), 3, "baseline + 2 cells");
    b.screenshot("4-sweep.png");

    let _: Value =
        b.js("document.querySelector('nav.views button[data-view=runs]').click(); return null;");
    let outcomes: Vec<String> = b.wait_js(
        "the runs table",
        MINUTE,
        "const r = [...document.querySelectorAll('#runs-table tr.run')]; return r.length ? r.map(x => x.dataset.outcome) : null;",
    );
    assert_eq!(outcomes, ["ok"]);
    b.screenshot("5-runs.png");
    let marker: Option<i64> = b.js("return window.__noReload ?? null;");
    assert_eq!(marker, Some(1), "the page was never reloaded");
}

/// Files under `root` with size and mtime, for "nothing changed".
fn tree(root: &Path) -> BTreeMap<String, (u64, i64)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let m = std::fs::symlink_metadata(e.path()).unwrap();
            if m.is_dir() {
                stack.push(e.path());
            }
            out.insert(
                e.path().strip_prefix(root).unwrap().display().to_string(),
                (m.len(), m.mtime_nsec() + m.mtime() * 1_000_000_000),
            );
        }
    }
    out
}

/// `run:` stages only: a 100 MB log, file and folder outputs, one failing stage.
const GUARDED: &str = r#"
    name: guarded
    stages:
      big:
        run: |
          echo "first line"
          head -c 100000000 /dev/zero | tr '\0' 'x' | fold -w 99
          echo "last line"
          echo '{"answer": 42}' > "$ORCHESTRATOR_OUT_DIR/metrics.json"
          echo data > ${outputs.out}
        outputs: [out]
      files:
        run: |
          mkdir -p ${outputs.dir}/sub
          echo one > ${outputs.dir}/a.txt
          echo two > ${outputs.dir}/sub/b.txt
          head -c 20000000 /dev/urandom > ${outputs.blob}
        inputs: { x: big.out }
        outputs: [dir/, blob]
      broken:
        run: echo "about to fail"; echo "the reason" >&2; exit 3
"#;

fn instance_log(server: &Server, id: &str) -> (u16, Vec<u8>) {
    let auth = format!("Authorization: Bearer {}", server.token().unwrap());
    let (s, _, b) = server.get_raw(
        &format!("/api/pipelines/guarded/instances/{}/log", enc(id)),
        &[&auth],
    );
    (s, b)
}

#[test]
fn serve_is_read_only_keeps_to_the_cache_and_wants_its_token() {
    let proj = Project::new();
    proj.file("p.yaml", GUARDED);
    proj.run(&["run", "p.yaml", "--gpus", "none"]).exit(1);
    let cache = proj.path("cache");
    let before = tree(&cache);
    let server = Server::start(proj.root(), &["p.yaml", "--token", "s3cret"]);
    let auth = "Authorization: Bearer s3cret";

    // Tokens.
    let (s, _, body) = server.get_raw("/api/pipelines", &[]);
    assert_eq!(s, 401);
    assert!(String::from_utf8_lossy(&body).contains("hint"));
    assert_eq!(
        server
            .get_raw("/api/pipelines", &["Authorization: Bearer nope"])
            .0,
        401
    );
    assert_eq!(server.get_raw("/api/pipelines?token=nope", &[]).0, 401);
    assert_eq!(server.get_raw("/", &[]).0, 401);
    assert_eq!(server.get_raw("/api/pipelines?token=s3cret", &[]).0, 200);
    let (s, head, _) = server.get_raw("/?token=s3cret", &[]);
    assert_eq!(s, 303);
    assert!(head.contains("location: /\r\n"), "{head}");
    let cookie = format!("orchestrator_token_{}=s3cret", server.port);
    assert!(
        head.contains(&format!(
            "set-cookie: {cookie}; path=/; httponly; samesite=strict"
        )),
        "{head}"
    );
    let (s, head, body) = server.get_raw("/", &[&format!("Cookie: {cookie}")]);
    assert_eq!(s, 200);
    assert!(
        head.contains("content-security-policy: default-src 'none'"),
        "{head}"
    );
    assert!(String::from_utf8_lossy(&body).contains("/assets/app.js"));
    // Read-only, and only for local names when bound to 127.0.0.1.
    assert_eq!(server.request("POST", "/api/pipelines", &[auth]).0, 405);
    assert_eq!(
        server
            .request("DELETE", "/api/pipelines/guarded", &[auth])
            .0,
        405
    );
    assert_eq!(
        server
            .get_raw("/api/pipelines", &[auth, "Host: evil.example"])
            .0,
        403
    );
    assert_eq!(
        server
            .get_raw("/api/pipelines", &[auth, "Host: localhost:1"])
            .0,
        200
    );

    // No URL reaches a file outside the cache.
    for target in [
        "/assets/../../../../etc/passwd",
        "/assets/..%2F..%2F..%2F..%2Fetc%2Fpasswd",
        "/../../../../etc/passwd",
        "/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/api/pipelines/..%2F..%2F..%2Fetc/instances",
        "/api/pipelines/guarded/instances/big/outputs/out/../../../../../etc/passwd",
        "/api/pipelines/guarded/instances/files/outputs/dir/..%2F..%2F..%2F..%2Fetc%2Fpasswd",
        "/api/pipelines/guarded/instances/files/outputs/dir/%2Fetc%2Fpasswd",
        "/api/pipelines/guarded/instances/..%2F..%2Fetc%2Fpasswd/log",
        "/api/pipelines/guarded/instances/big/log?run=..%2F..%2F..%2Fetc",
    ] {
        let (s, _, body) = server.get_raw(target, &[auth]);
        assert_eq!(s, 404, "{target}: {}", String::from_utf8_lossy(&body));
        assert!(
            !String::from_utf8_lossy(&body).contains("root:"),
            "{target}"
        );
    }

    // What the API says.
    let list = server.api("/api/pipelines/guarded/instances");
    let states: BTreeMap<&str, &str> = list["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["id"].as_str().unwrap(), i["state"].as_str().unwrap()))
        .collect();
    assert_eq!(
        states,
        BTreeMap::from([("big", "cached"), ("files", "cached"), ("broken", "failed")])
    );
    let broken = server.api("/api/pipelines/guarded/instances/broken");
    assert!(
        broken["error"].as_str().unwrap().contains("exit"),
        "{}",
        broken["error"]
    );
    let (s, body) = instance_log(&server, "broken");
    assert_eq!(s, 200);
    assert!(String::from_utf8_lossy(&body).contains("the reason"));
    let runs = server.api("/api/pipelines/guarded/runs");
    assert_eq!(runs["runs"].as_array().unwrap().len(), 1);
    assert_eq!(runs["runs"][0]["outcome"], "failed");
    assert_eq!(runs["runs"][0]["summary"]["ran"], 2);

    // A 100 MB log: the tail is a bounded piece, the whole log streams in constant memory.
    let (s, body) = instance_log(&server, "big");
    assert_eq!(s, 200);
    let piece: Value = serde_json::from_slice(&body).unwrap();
    let size = piece["size"].as_u64().unwrap();
    assert!(size > 100_000_000, "{size}");
    assert_eq!(piece["end"].as_u64(), Some(size));
    assert!(piece["text"].as_str().unwrap().len() <= 64 << 10);
    assert!(piece["text"].as_str().unwrap().ends_with("last line\n"));
    let from = server.api("/api/pipelines/guarded/instances/big/log?from=0&max=100");
    assert_eq!(from["text"], "first line\n");
    let (s, _, raw) = server.get_raw("/api/pipelines/guarded/instances/big/log/raw", &[auth]);
    assert_eq!((s, raw.len() as u64), (200, size));
    let peak = server.peak_rss_kib();
    assert!(peak < 64 * 1024, "serving a 100 MB log took {peak} KiB");

    // Outputs: a file, a folder's listing and one of its files, a 20 MB blob (streamed, checked).
    let (s, _, out) = server.get_raw("/api/pipelines/guarded/instances/big/outputs/out", &[auth]);
    assert_eq!((s, out.as_slice()), (200, b"data\n".as_slice()));
    let listing = server.api("/api/pipelines/guarded/instances/files/outputs/dir");
    let files: Vec<&str> = listing["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(files, ["a.txt", "sub/b.txt"]);
    let (s, _, b) = server.get_raw(listing["files"][1]["url"].as_str().unwrap(), &[auth]);
    assert_eq!((s, b.as_slice()), (200, b"two\n".as_slice()));
    let (s, _, blob) = server.get_raw(
        "/api/pipelines/guarded/instances/files/outputs/blob",
        &[auth],
    );
    assert_eq!((s, blob.len()), (200, 20_000_000));

    // Nothing the server did changed anything in the cache.
    assert_eq!(tree(&cache), before, "the cache changed while serving");

    // A symlink out of the cache is not followed.
    let secret = proj.path("secret.txt");
    std::fs::write(&secret, "TOP SECRET").unwrap();
    let detail = server.api("/api/pipelines/guarded/instances/files");
    let run = detail["log"]["run"].as_str().unwrap();
    let log = cache.join("runs").join(run).join("log");
    std::fs::remove_file(&log).unwrap();
    std::os::unix::fs::symlink(&secret, &log).unwrap();
    for target in ["/log", "/log/raw", "/log/stream"] {
        let (s, _, body) = server.get_raw(
            &format!("/api/pipelines/guarded/instances/files{target}"),
            &[auth],
        );
        assert_eq!(s, 404, "{target}");
        assert!(!String::from_utf8_lossy(&body).contains("TOP SECRET"));
    }
    // A missing log says so.
    std::fs::remove_file(&log).unwrap();
    let (s, body) = instance_log(&server, "files");
    assert_eq!(s, 404);
    assert!(
        String::from_utf8_lossy(&body).contains("missing"),
        "{}",
        String::from_utf8_lossy(&body)
    );

    // Corrupt objects are reported, never served as if intact.
    let big = server.api("/api/pipelines/guarded/instances/big");
    assert_eq!(big["metrics"]["answer"], 42);
    let blob_digest = detail["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "blob")
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let metrics_digest = {
        let key = big["key"].as_str().unwrap();
        let m: Value = serde_json::from_slice(
            &std::fs::read(cache.join("manifests").join(format!("{key}.json"))).unwrap(),
        )
        .unwrap();
        m["metrics"].as_str().unwrap().to_string()
    };
    for d in [&metrics_digest, &blob_digest] {
        let p = cache.join("objects").join(&d[..2]).join(&d[2..]);
        let mut bytes = std::fs::read(&p).unwrap();
        bytes[0] ^= 1;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::write(&p, bytes).unwrap();
    }
    let big = server.api("/api/pipelines/guarded/instances/big");
    assert!(
        big["metrics_error"].as_str().unwrap().contains("corrupt"),
        "{}",
        big["metrics_error"]
    );
    let (s, _, body) = server.get_raw(
        "/api/pipelines/guarded/instances/files/outputs/blob",
        &[auth],
    );
    assert!(
        s != 200 || body.len() < 20_000_000,
        "a corrupt object was served whole"
    );
}

#[test]
#[ignore = "requires chromium + chromedriver (apt-get install -y chromium chromium-driver; `make test` installs them)"]
fn dashboard_shows_a_thousand_instances() {
    require_chromium();
    let proj = Project::new();
    let values: Vec<String> = (0..100).map(|v| v.to_string()).collect();
    proj.file(
        "p.yaml",
        &format!(
            "name: wide\nmatrix:\n  a: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]\n  b: [{}]\nstages:\n  cell:\n    run: echo ${{matrix.a}} ${{matrix.b}} > ${{outputs.out}}\n    outputs: [out]\n",
            values.join(", ")
        ),
    );
    let server = Server::start(proj.root(), &["p.yaml"]);
    let list = server.api("/api/pipelines/wide/instances");
    assert_eq!(list["instances"].as_array().unwrap().len(), 1000);
    let shots = shots_dir("thousand");
    let b = Browser::start(&shots);
    b.goto(&server.url);
    b.wait_js::<bool>(
        "the page",
        MINUTE,
        "return document.body.dataset.ready === '1';",
    );
    let n: usize =
        b.js("return document.querySelectorAll('#dag .node[data-state=never_run]').length;");
    assert_eq!(n, 1000);
    click_node(&b, "cell[a=7,b=42]");
    let reasons: String = b.js("return document.querySelector('#panel ul.reasons').textContent;");
    assert_eq!(reasons, "no previous run");
    b.screenshot("thousand.png");
}

#[test]
fn serve_explains_what_it_cannot_serve() {
    let proj = Project::new();
    proj.file("a.yaml", "name: same\nstages:\n  x: { run: 'true' }\n");
    proj.file("b.yaml", "name: same\nstages:\n  y: { run: 'true' }\n");
    proj.run(&["serve", "a.yaml", "b.yaml", "--port", "0"])
        .exit(2)
        .stderr_has("are both named `same`");
    proj.run(&["serve", "missing.yaml", "--port", "0"]).exit(2);
    proj.run(&["serve", "a.yaml", "--port", "0", "--token", "a b"])
        .exit(2)
        .stderr_has("--token must be");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    proj.run(&["serve", "a.yaml", "--port", &port])
        .exit(3)
        .stderr_has("--port 0");
    let mut open = Command::new(bin())
        .current_dir(proj.root())
        .args([
            "serve",
            "a.yaml",
            "--port",
            "0",
            "--bind",
            "0.0.0.0",
            "--no-token",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(open.stderr.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let _ = open.kill();
    let _ = open.wait();
    assert!(
        line.starts_with("warning: listening on 0.0.0.0") && line.contains("WITHOUT a token"),
        "{line}"
    );
}
