//! What the end-to-end tests of the examples share: the real `ferry up`, raw HTTP, a real SMTP server
//! (aiosmtpd, installed by scripts/setup), and waiting for a condition with a deadline.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A path under `examples/`.
pub fn example(name: &str) -> PathBuf {
    root().join("examples").join(name)
}

/// A free loopback port (bound, read, released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `ferry up`, stopped with SIGTERM when dropped.
pub struct Up {
    pub child: Child,
    pub url: String,
    pub line: Value,
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// Starts `ferry up ARGS` in `dir` with `env`, and waits for its first line (it listens then).
pub fn up(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Up {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .current_dir(dir)
        .envs(env.iter().copied())
        .env_remove("FERRY_CONFIG")
        .arg("up")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(
        !line.is_empty(),
        "ferry up printed nothing (see its stderr above)"
    );
    let v: Value = serde_json::from_str(&line).unwrap();
    Up {
        child,
        url: v["listening"].as_str().unwrap().to_string(),
        line: v,
    }
}

/// A running `ferry run` of one stage, stopped with SIGTERM when dropped.
pub struct Run {
    pub child: Child,
    pub line: Value,
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// Starts `ferry run --config CONFIG --pipeline P --stage S ARGS` with `env`, and waits for its first
/// line (it runs then).
pub fn run(config: &Path, pipeline: &str, stage: &str, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .envs(env.iter().copied())
        .args([
            "run",
            "--config",
            config.to_str().unwrap(),
            "--pipeline",
            pipeline,
            "--stage",
            stage,
        ])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(
        !line.is_empty(),
        "ferry run printed nothing (see its stderr above)"
    );
    let line: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(line["stage"], stage);
    Run { child, line }
}

/// A response: status, headers (lower-case names), body.
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// One HTTP/1.1 request; `content_type` `None` sends none.
pub fn http(url: &str, method: &str, path: &str, content_type: Option<&str>, body: &str) -> Response {
    let addr = url.strip_prefix("http://").unwrap();
    let mut s = TcpStream::connect(addr).unwrap();
    let ct = content_type.map_or(String::new(), |c| format!("content-type: {c}\r\n"));
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\n{ct}content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines.next().unwrap()[9..12].parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect::<Vec<_>>();
    let body = if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v == "chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Response {
        status,
        headers,
        body,
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = s.split_once("\r\n").unwrap();
        let n = usize::from_str_radix(size.trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
}

/// POSTs JSON.
pub fn post(url: &str, path: &str, body: &str) -> Response {
    http(url, "POST", path, Some("application/json"), body)
}

/// Polls `f` every 20 ms until it returns `Some`, for at most `limit`; panics with `what` after.
pub fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < end,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The value of a metric series in `/metrics` whose line starts with `prefix`.
pub fn metric(url: &str, prefix: &str) -> Option<f64> {
    let r = http(url, "GET", "/metrics", None, "");
    r.body
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Records of a topic's partition 0 from offset 0, as JSON values.
pub fn records(url: &str, topic: &str) -> Vec<Value> {
    let r = http(
        url,
        "GET",
        &format!("/v1/topics/{topic}/partitions/0/records?offset=0&max_records=10000"),
        None,
        "",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let v: Value = serde_json::from_str(&r.body).unwrap();
    v["records"].as_array().unwrap().clone()
}

/// True when `FERRY_REQUIRE_SERVICES=1`: a missing server fails the test instead of skipping it.
pub fn services_required() -> bool {
    std::env::var("FERRY_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// Skips (returns false) or fails when `python3 -c "import MODULE"` fails.
pub fn have_python_module(module: &str, what: &str) -> bool {
    let ok = Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            !services_required(),
            "{what} is not installed and FERRY_REQUIRE_SERVICES=1 (run scripts/setup)"
        );
        eprintln!("skipped: {what} is not installed (scripts/setup installs it)");
    }
    ok
}

/// A real SMTP server (aiosmtpd) on loopback, delivering into a Maildir. Killed when dropped.
pub struct Smtp {
    pub port: u16,
    pub maildir: PathBuf,
    child: Option<Child>,
}

impl Smtp {
    /// Starts one on a free port; `None` (test skipped) when aiosmtpd is missing.
    pub fn start(dir: &Path) -> Option<Self> {
        if !have_python_module("aiosmtpd", "aiosmtpd (SMTP server)") {
            return None;
        }
        let mut s = Self {
            port: free_port(),
            maildir: dir.join("maildir"),
            child: None,
        };
        s.restart();
        Some(s)
    }

    /// Starts the server (again) on its port and waits until it accepts connections.
    pub fn restart(&mut self) {
        let child = Command::new("python3")
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{}", self.port)])
            .args(["-c", "aiosmtpd.handlers.Mailbox", self.maildir.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let port = self.port;
        wait_for(
            "the SMTP server to accept connections",
            Duration::from_secs(30),
            || TcpStream::connect(("127.0.0.1", port)).ok(),
        );
    }

    /// Stops the server; the port refuses connections afterwards.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The messages delivered so far, as raw text.
    pub fn messages(&self) -> Vec<String> {
        let mut out = Vec::new();
        for sub in ["new", "cur"] {
            if let Ok(rd) = std::fs::read_dir(self.maildir.join(sub)) {
                for e in rd.flatten() {
                    out.push(std::fs::read_to_string(e.path()).unwrap_or_default());
                }
            }
        }
        out
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The body of an RFC 5322 message (after the blank line), with CRLF as LF and soft line breaks of
/// quoted-printable undone.
pub fn mail_body(raw: &str) -> String {
    let raw = raw.replace("\r\n", "\n");
    let body = raw.split_once("\n\n").map_or("", |(_, b)| b);
    if raw
        .to_ascii_lowercase()
        .contains("content-transfer-encoding: quoted-printable")
    {
        body.replace("=\n", "").replace("=3D", "=")
    } else {
        body.to_string()
    }
}

/// A webhook on `port` that answers 200 after `delay` and keeps the JSON bodies, one request at a time.
pub fn webhook(port: u16, delay: Duration) -> Arc<Mutex<Vec<Value>>> {
    let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    let bodies = got.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut reader = BufReader::new(s.try_clone().unwrap());
            let mut len = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; len];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            std::thread::sleep(delay);
            bodies
                .lock()
                .unwrap()
                .push(serde_json::from_slice(&body).unwrap());
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    got
}
