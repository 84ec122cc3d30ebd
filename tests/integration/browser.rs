//! A real headless Chromium driven over WebDriver (chromedriver + fantoccini), and the
//! `orchestrator serve` process the browser looks at. Synchronous wrappers, so tests read like
//! the rest of the suite; every wait polls the page's state (no sleeps standing in for events).

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde_json::Value;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Poll `f` every 50 ms until it returns `Some`, or panic after `timeout` naming `what`.
#[track_caller]
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let t0 = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            t0.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A headless Chromium session. Dropping it ends the session and the driver.
pub struct Browser {
    rt: tokio::runtime::Runtime,
    client: Option<fantoccini::Client>,
    driver: Child,
    _profile: tempfile::TempDir,
    pub shots: PathBuf,
}

impl Browser {
    /// Start chromedriver and a headless Chromium with a fresh profile (the flags the machine
    /// needs: no sandbox as root, no GPU, no network features). Screenshots go to `shots`.
    pub fn start(shots: &Path) -> Browser {
        let (chromium, chromedriver) = crate::support::require_chromium();
        let port = free_port();
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromedriver.display()));
        wait_for("chromedriver to listen", Duration::from_secs(30), || {
            TcpStream::connect(("127.0.0.1", port)).ok()
        });
        let profile = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": chromium,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--hide-scrollbars", "--window-size=1440,900",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        let client = rt
            .block_on(
                fantoccini::ClientBuilder::new(
                    hyper_util::client::legacy::connect::HttpConnector::new(),
                )
                .capabilities(caps)
                .connect(&format!("http://127.0.0.1:{port}")),
            )
            .unwrap_or_else(|e| panic!("cannot start a Chromium session: {e}"));
        std::fs::create_dir_all(shots).unwrap();
        Browser {
            rt,
            client: Some(client),
            driver,
            _profile: profile,
            shots: shots.to_path_buf(),
        }
    }

    fn c(&self) -> &fantoccini::Client {
        self.client.as_ref().expect("session open")
    }

    pub fn goto(&self, url: &str) {
        self.rt
            .block_on(self.c().goto(url))
            .unwrap_or_else(|e| panic!("cannot open {url}: {e}"));
    }

    pub fn url(&self) -> String {
        self.rt
            .block_on(self.c().current_url())
            .unwrap()
            .to_string()
    }

    /// Run `script` (a function body; `return` a value) in the page.
    #[track_caller]
    pub fn js<T: DeserializeOwned>(&self, script: &str) -> T {
        let v = self
            .rt
            .block_on(self.c().execute(script, vec![]))
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"));
        serde_json::from_value(v.clone())
            .unwrap_or_else(|e| panic!("script returned {v}, not the expected shape: {e}"))
    }

    /// Wait until `script` returns something other than null/false/undefined; that value.
    #[track_caller]
    pub fn wait_js<T: DeserializeOwned>(&self, what: &str, timeout: Duration, script: &str) -> T {
        wait_for(what, timeout, || {
            let v: Value = self.js(script);
            match v {
                Value::Null | Value::Bool(false) => None,
                v => Some(serde_json::from_value(v).expect("expected shape")),
            }
        })
    }

    /// A PNG of the window, saved as `shots/name` (its path is returned and printed).
    pub fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.rt.block_on(self.c().screenshot()).unwrap();
        let path = self.shots.join(name);
        std::fs::write(&path, png).unwrap();
        eprintln!("screenshot: {}", path.display());
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            let _ = self.rt.block_on(c.close());
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// A running `orchestrator serve`; killed when dropped.
pub struct Server {
    pub child: Child,
    /// The URL it printed (with `?token=` when it has one).
    pub url: String,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    pub port: u16,
}

impl Server {
    /// Start `orchestrator serve ARGS --port 0` in `dir` (polling every 200 ms unless ARGS say
    /// otherwise); returns once it printed its URL.
    pub fn start(dir: &Path, args: &[&str]) -> Server {
        let poll: &[&str] = if args.contains(&"--poll-ms") {
            &[]
        } else {
            &["--poll-ms", "200"]
        };
        let mut child = Command::new(crate::support::bin())
            .current_dir(dir)
            .arg("serve")
            .args(args)
            .args(["--port", "0"])
            .args(poll)
            .env_remove("ORCHESTRATOR_CACHE")
            .env_remove("ORCHESTRATOR_SERVE_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn orchestrator serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        if line.is_empty() {
            let mut err = String::new();
            let _ = child.stderr.take().unwrap().read_to_string(&mut err);
            panic!("orchestrator serve printed no URL; stderr:\n{err}");
        }
        let url = line.trim().to_string();
        let base = url
            .split("/?")
            .next()
            .unwrap()
            .trim_end_matches('/')
            .to_string();
        let port = base.rsplit(':').next().unwrap().parse().unwrap();
        Server {
            child,
            url,
            base,
            port,
        }
    }

    pub fn token(&self) -> Option<&str> {
        self.url.split("token=").nth(1)
    }

    /// A raw HTTP/1.1 GET of `target` exactly as written (no client-side path clean-up), with
    /// extra header lines. Returns (status, headers lowercased, body).
    pub fn get_raw(&self, target: &str, headers: &[&str]) -> (u16, String, Vec<u8>) {
        self.request("GET", target, headers)
    }

    pub fn request(&self, method: &str, target: &str, headers: &[&str]) -> (u16, String, Vec<u8>) {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut req = format!("{method} {target} HTTP/1.1\r\nConnection: close\r\n");
        if !headers
            .iter()
            .any(|h| h.to_ascii_lowercase().starts_with("host:"))
        {
            req.push_str(&format!("Host: 127.0.0.1:{}\r\n", self.port));
        }
        for h in headers {
            req.push_str(h);
            req.push_str("\r\n");
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).unwrap();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        let split = buf
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("an HTTP response");
        let head = String::from_utf8_lossy(&buf[..split]).to_ascii_lowercase();
        let status = head[9..12].parse().unwrap();
        let mut body = buf[split + 4..].to_vec();
        if head.contains("transfer-encoding: chunked") {
            body = dechunk(&body);
        }
        (status, head, body)
    }

    /// GET with the token as a bearer header; the body as JSON.
    #[track_caller]
    pub fn api(&self, path: &str) -> Value {
        let auth = format!("Authorization: Bearer {}", self.token().unwrap_or(""));
        let (status, _, body) = self.get_raw(path, &[&auth]);
        assert_eq!(
            status,
            200,
            "GET {path}: {}",
            String::from_utf8_lossy(&body)
        );
        serde_json::from_slice(&body).unwrap()
    }

    /// Peak resident memory of the server so far, in KiB (VmHWM).
    pub fn peak_rss_kib(&self) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        s.lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(nl) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size = usize::from_str_radix(String::from_utf8_lossy(&b[..nl]).trim(), 16).unwrap_or(0);
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&b[nl + 2..nl + 2 + size]);
        b = &b[nl + 2 + size + 2..];
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Percent-encode an instance id for a URL path.
pub fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Folder for a test's screenshots: `target/tmp/serve-screenshots/<test>/`, emptied first.
pub fn shots_dir(test: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("serve-screenshots")
        .join(test);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    eprintln!("screenshots of {test}: {}", d.display());
    d
}
