//! `ferry propagate` as a user runs it: the real binary sending the example events to a small HTTP
//! endpoint run by the test (or to none at all).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use assert_cmd::cargo::cargo_bin_cmd;
use serde_json::Value;

/// One request the endpoint received.
#[derive(Debug, Clone)]
struct Request {
    method: String,
    path: String,
    content_type: Option<String>,
    body: String,
}

/// An HTTP/1.1 endpoint answering every request with one status and body, recording what it got.
struct Endpoint {
    url: String,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl Endpoint {
    fn start(status: u16, body: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&requests);
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let recorded = Arc::clone(&recorded);
                thread::spawn(move || {
                    let _ = answer(stream, status, body, &recorded);
                });
            }
        });
        Self {
            url: format!("http://{addr}/event"),
            requests,
        }
    }

    fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

/// Answers the requests of one connection (kept alive, as clients reuse connections) until it closes.
fn answer(stream: TcpStream, status: u16, body: &str, recorded: &Mutex<Vec<Request>>) -> io::Result<()> {
    let mut out = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut words = line.split_whitespace();
        let method = words.next().unwrap_or_default().to_string();
        let path = words.next().unwrap_or_default().to_string();
        let mut length = 0;
        let mut content_type = None;
        loop {
            let mut header = String::new();
            reader.read_line(&mut header)?;
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                match name.trim().to_ascii_lowercase().as_str() {
                    "content-length" => length = value.trim().parse().unwrap(),
                    "content-type" => content_type = Some(value.trim().to_string()),
                    _ => {}
                }
            }
        }
        let mut request_body = vec![0; length];
        reader.read_exact(&mut request_body)?;
        // Recorded before answering: once the binary has its answer, the test sees the request.
        recorded.lock().unwrap().push(Request {
            method,
            path,
            content_type,
            body: String::from_utf8(request_body).unwrap(),
        });
        write!(
            out,
            "HTTP/1.1 {status} Whatever\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )?;
        out.flush()?;
    }
}

fn examples() -> String {
    format!("{}/../../examples/events.json", env!("CARGO_MANIFEST_DIR"))
}

fn example_events() -> Vec<Value> {
    serde_json::from_str(&std::fs::read_to_string(examples()).unwrap()).unwrap()
}

/// `ferry propagate ARGS` in an empty directory (no `.env` to pick up), without the variables and
/// proxies of the environment the tests run in.
fn propagate(dir: &Path, args: &[&str]) -> assert_cmd::Command {
    let mut cmd = cargo_bin_cmd!("ferry");
    cmd.current_dir(dir)
        .timeout(Duration::from_secs(60))
        .arg("propagate")
        .args(args);
    for name in [
        "INPUT_FILE_LOCATION",
        "ENDPOINT",
        "WAIT_SECONDS",
        "http_proxy",
        "HTTP_PROXY",
        "all_proxy",
        "ALL_PROXY",
    ] {
        cmd.env_remove(name);
    }
    cmd
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn events_are_posted_and_answers_printed() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = Endpoint::start(200, "{\"status\":\"ok\"}");
    let out = propagate(
        dir.path(),
        &[
            &examples(),
            "--every",
            "10ms",
            "--to",
            &endpoint.url,
            "--count",
            "5",
        ],
    )
    .output()
    .unwrap();
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(text(&out.stdout), "{\"status\":\"ok\"}\n".repeat(5));
    assert!(stderr.contains("propagate: sent 5, failed 0"), "{stderr}");

    let events = example_events();
    let requests = endpoint.requests();
    assert_eq!(requests.len(), 5, "{requests:#?}");
    for r in &requests {
        assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/event"));
        assert_eq!(r.content_type.as_deref(), Some("application/json"));
        let body: Value = serde_json::from_str(&r.body).unwrap();
        assert!(events.contains(&body), "not an example event: {body}");
    }
}

#[test]
fn an_unreachable_endpoint_is_reported_and_the_run_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    // A port that was free a moment ago: nobody listens there.
    let url = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/event", listener.local_addr().unwrap())
    };
    let out = propagate(
        dir.path(),
        &[&examples(), "--every", "10ms", "--to", &url, "--count", "3"],
    )
    .output()
    .unwrap();
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(text(&out.stdout), "");
    let failures: Vec<&str> = stderr.lines().filter(|l| l.contains(" unreachable (")).collect();
    assert_eq!(failures.len(), 3, "{stderr}");
    for (i, line) in failures.iter().enumerate() {
        let expected = format!("propagate: {url} unreachable ({} failures so far): ", i + 1);
        assert!(line.starts_with(&expected), "{line}");
    }
    assert!(stderr.contains("propagate: sent 0, failed 3"), "{stderr}");
}

#[test]
fn error_statuses_are_answers_not_failures() {
    let dir = tempfile::tempdir().unwrap();
    let body = "{\"error\": \"Validation error\"}\n";
    let endpoint = Endpoint::start(400, body);
    let out = propagate(
        dir.path(),
        &[
            &examples(),
            "--every",
            "1ms",
            "--to",
            &endpoint.url,
            "--count",
            "2",
        ],
    )
    .output()
    .unwrap();
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // The body as it came, then `\n`: like the propagator's `print`, a body ending in `\n` gets two.
    assert_eq!(text(&out.stdout), format!("{body}\n").repeat(2));
    assert!(!stderr.contains("unreachable"), "{stderr}");
    assert!(stderr.contains("propagate: sent 2, failed 0"), "{stderr}");
}

#[test]
fn sequential_order_follows_the_file_and_starts_over() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = Endpoint::start(200, "ok");
    let out = propagate(
        dir.path(),
        &[
            &examples(),
            "--every",
            "1ms",
            "--to",
            &endpoint.url,
            "--count",
            "12",
            "--order",
            "sequential",
        ],
    )
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let sent: Vec<Value> = endpoint
        .requests()
        .iter()
        .map(|r| serde_json::from_str(&r.body).unwrap())
        .collect();
    let mut expected = example_events();
    expected.push(expected[0].clone());
    assert_eq!(sent, expected);
}

#[test]
fn the_environment_gives_the_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = Endpoint::start(200, "ok");
    let started = Instant::now();
    let out = propagate(dir.path(), &["--count", "3"])
        .env("INPUT_FILE_LOCATION", examples())
        .env("ENDPOINT", &endpoint.url)
        .env("WAIT_SECONDS", "0.01")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "ok\n".repeat(3));
    assert_eq!(endpoint.requests().len(), 3);
    // With the default of 5s, three sends would take 10s.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_dotenv_file_in_the_propagators_format_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = Endpoint::start(200, "ok");
    std::fs::write(
        dir.path().join(".env"),
        format!(
            "WAIT_SECONDS = '0.01'\nENDPOINT = '{}'\nINPUT_FILE_LOCATION = '{}'\n",
            endpoint.url,
            examples()
        ),
    )
    .unwrap();
    let out = propagate(dir.path(), &["--count", "2"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(endpoint.requests().len(), 2);
}

#[test]
fn no_file_names_the_argument_and_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    // The propagator's `.env` ships the variable empty: that is no file either.
    let out = propagate(dir.path(), &["--count", "1"])
        .env("INPUT_FILE_LOCATION", "")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("FILE") && stderr.contains("INPUT_FILE_LOCATION"),
        "{stderr}"
    );

    let empty = dir.path().join("empty.json");
    std::fs::write(&empty, "").unwrap();
    let out = propagate(dir.path(), &[empty.to_str().unwrap(), "--count", "1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("empty.json"), "{}", text(&out.stderr));
}
