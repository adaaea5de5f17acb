//! The shop (seed 002) end to end, with the real processes: `ferry up` and `ferry-shop products` /
//! `ferry-shop likes` on free loopback ports, each with its own directory, on ferry's embedded engine
//! (the services speaking HTTP, and again the wire protocol), on NATS JetStream and on RabbitMQ
//! (private servers from `ferry_engines::servers`; skipped with a message when not installed, failing
//! with `FERRY_REQUIRE_SERVICES=1`).
//!
//! One scenario per engine: create, update and delete reach likes within 2 s; a like raises likes to 1
//! and a second like by the same user is refused and leaves it at 1; with ferry killed, a product
//! created meanwhile reaches likes once ferry is back on the same data; ferry, products and likes are
//! each killed with SIGKILL (while events are in flight) and restarted once; at the end both databases
//! agree: likes' products are products' products, every count of likes is the number of like rows,
//! each like was counted once, and both outboxes are empty. On the way, bad requests are refused with
//! JSON errors, and a duplicate, a stale and a malformed event published straight to ferry change
//! nothing (the malformed one is dead-lettered).
//!
//! The `ferry` binary is taken from the same target directory as `ferry-shop` (`scripts/test` builds
//! the whole workspace; alone: `cargo build -p ferry`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ferry_engines::servers::{NatsServer, RabbitServer, require};
use serde_json::{Value, json};

/// How long create, update and delete may take to reach likes.
const PROPAGATION: Duration = Duration::from_secs(2);
/// How long recovery after a kill may take: a redelivery waits for the group's visibility timeout (5 s).
const RECOVERY: Duration = Duration::from_secs(30);
/// The token ferry requires and the services send; it must appear in no log.
const TOKEN: &str = "shop-e2e-secret-token-41c7";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `ferry`, built next to `ferry-shop`.
fn ferry_binary() -> PathBuf {
    let shop = Path::new(env!("CARGO_BIN_EXE_ferry-shop"));
    let ferry = shop.with_file_name("ferry");
    assert!(
        ferry.is_file(),
        "{} is missing: build it first with `cargo build -p ferry` (scripts/test builds the whole workspace)",
        ferry.display()
    );
    ferry
}

/// A process of the scenario: started, killed and started again with the same arguments; its stderr
/// appended to `<dir>/<name>.log`.
struct Proc {
    name: &'static str,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(&'static str, String)>,
    log: PathBuf,
    child: Option<Child>,
}

impl Proc {
    fn new(name: &'static str, program: PathBuf, args: Vec<String>, dir: &Path) -> Self {
        Self {
            name,
            program,
            args,
            env: Vec::new(),
            log: dir.join(format!("{name}.log")),
            child: None,
        }
    }

    /// Starts it and waits for its first stdout line (it listens then); returns the line.
    fn start(&mut self) -> Value {
        assert!(self.child.is_none(), "{} runs already", self.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut child = Command::new(&self.program)
            .args(&self.args)
            .env_remove("RUST_LOG")
            .env_remove("FERRY_CONFIG")
            .env_remove("FERRY_WIRE")
            .env_remove("FERRY_TOKENS_FILE")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.program.display()));
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let _ = tx.send(line);
            // Keep reading so that a later write never meets a closed pipe.
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
        self.child = Some(child);
        let line = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_default();
        assert!(
            !line.is_empty(),
            "{} printed no first line; the end of its log:\n{}",
            self.name,
            tail(&self.log)
        );
        serde_json::from_str(&line).unwrap()
    }

    /// SIGKILL, and reaps it.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// One HTTP/1.1 request with `connection: close`; the status and the body.
fn http(method: &str, url: &str, body: Option<&str>) -> (u16, String) {
    request(method, url, body, None)
}

/// [`http`] with a bearer token.
fn request(method: &str, url: &str, body: Option<&str>, token: Option<&str>) -> (u16, String) {
    let rest = url.strip_prefix("http://").unwrap();
    let (addr, path) = rest.split_at(rest.find('/').unwrap());
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let body = body.unwrap_or("");
    let auth = token.map_or(String::new(), |t| format!("authorization: Bearer {t}\r\n"));
    // A failed write (the server refused a large body early) shows in the answer read below.
    let _ = write!(
        s,
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\n{auth}content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    // Read to the end; a server that answered before reading all of a refused body may reset the
    // connection after its answer, which is then still here.
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if raw.is_empty() => panic!("{method} {url}: {e}"),
            Err(_) => break,
        }
    }
    let answer = String::from_utf8(raw).unwrap();
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("{method} {url}: no complete answer: {answer:?}"));
    let status = head[9..12].parse().unwrap();
    assert!(
        !head.to_ascii_lowercase().contains("transfer-encoding: chunked"),
        "unexpected chunked answer to {method} {url}"
    );
    (status, body.to_string())
}

fn get_json(url: &str) -> Value {
    let (status, body) = http("GET", url, None);
    assert_eq!(status, 200, "GET {url}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// Polls `f` every 20 ms until it gives `Some`, for at most `limit`; panics naming `what` after. The
/// value and how long it took.
fn within<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> (T, Duration) {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return (v, start.elapsed());
        }
        assert!(start.elapsed() < limit, "not within {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The three processes and their data.
struct Shop {
    dir: tempfile::TempDir,
    ferry_url: String,
    ferry: Proc,
    products: Proc,
    likes: Proc,
    products_url: String,
    likes_url: String,
}

impl Drop for Shop {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for p in [&self.ferry, &self.products, &self.likes] {
                eprintln!("----- the end of {}'s log:\n{}", p.name, tail(&p.log));
            }
        }
    }
}

impl Shop {
    /// Starts ferry (on `engine`, a line of `[engine]`, or the embedded one; with `wire`, also serving
    /// the wire protocol, which the services then publish and receive over), products and likes.
    fn start(engine: Option<&str>, wire: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("ferry.toml");
        let mut config = std::fs::read_to_string(shipped).unwrap();
        if let Some(engine) = engine {
            config = format!("[engine]\n{engine}\n\n{config}");
        }
        let config_file = dir.path().join("ferry.toml");
        std::fs::write(&config_file, config).unwrap();
        let ferry_port = free_port();
        let mut ferry = Proc::new(
            "ferry",
            ferry_binary(),
            vec![
                "up".into(),
                "--config".into(),
                config_file.display().to_string(),
                "--data-dir".into(),
                dir.path().join("ferry-data").display().to_string(),
                "--listen".into(),
                format!("127.0.0.1:{ferry_port}"),
            ],
            dir.path(),
        );
        ferry.env.push(("FERRY_TOKENS", TOKEN.into()));
        let wire = wire.then(|| format!("127.0.0.1:{}", free_port()));
        if let Some(addr) = &wire {
            ferry.args.extend(["--wire-listen".into(), addr.clone()]);
        }
        let line = ferry.start();
        assert_eq!(line["wire"].as_str(), wire.as_deref(), "{line}");
        let expected = engine.map_or("embedded", |e| e.split_whitespace().next().unwrap());
        assert_eq!(line["engine"], expected, "{line}");
        let ferry_url = format!("http://127.0.0.1:{ferry_port}");

        let shop = PathBuf::from(env!("CARGO_BIN_EXE_ferry-shop"));
        let (products_port, likes_port) = (free_port(), free_port());
        let products_url = format!("http://127.0.0.1:{products_port}");
        let likes_url = format!("http://127.0.0.1:{likes_port}");
        let service = |name: &'static str, port: u16, extra: &[String]| {
            let mut args = vec![
                name.to_string(),
                "--listen".into(),
                format!("127.0.0.1:{port}"),
                "--db".into(),
                dir.path().join(format!("{name}.sqlite3")).display().to_string(),
                "--log-level".into(),
                "info".into(),
            ];
            args.extend_from_slice(extra);
            let mut p = Proc::new(name, shop.clone(), args, dir.path());
            p.env.push(("FERRY_URL", ferry_url.clone()));
            p.env.push(("FERRY_TOKEN", TOKEN.into()));
            if let Some(addr) = &wire {
                p.env.push(("FERRY_WIRE", addr.clone()));
            }
            p
        };
        let mut products = service("products", products_port, &[]);
        let mut likes = service(
            "likes",
            likes_port,
            &["--products-url".into(), products_url.clone()],
        );
        for p in [&mut products, &mut likes] {
            let line = p.start();
            assert_eq!(line["service"], p.name, "{line}");
            assert_eq!(line["ferry"], ferry_url, "{line}");
        }
        Self {
            dir,
            ferry_url,
            ferry,
            products,
            likes,
            products_url,
            likes_url,
        }
    }

    fn create(&self, title: &str) -> i64 {
        let body = json!({"title": title, "description": format!("about {title}"), "image": format!("https://img.example/{title}.png")});
        let (status, answer) = http(
            "POST",
            &format!("{}/api/products", self.products_url),
            Some(&body.to_string()),
        );
        assert_eq!(status, 201, "{answer}");
        let product: Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(product["title"], title);
        assert_eq!(product["likes"], 0);
        product["id"].as_i64().unwrap()
    }

    fn update(&self, id: i64, title: &str) {
        let body = json!({"title": title, "description": format!("about {title}"), "image": format!("https://img.example/{title}.png")});
        let (status, answer) = http(
            "PUT",
            &format!("{}/api/products/{id}", self.products_url),
            Some(&body.to_string()),
        );
        assert_eq!(status, 202, "{answer}");
        assert_eq!(serde_json::from_str::<Value>(&answer).unwrap()["title"], title);
    }

    fn delete(&self, id: i64) {
        let (status, answer) = http(
            "DELETE",
            &format!("{}/api/products/{id}", self.products_url),
            None,
        );
        assert_eq!(status, 204, "{answer}");
    }

    /// POSTs a like (by `user`, or a random user from products); the status and body.
    fn like(&self, id: i64, user: Option<i64>) -> (u16, Value) {
        let body = user.map(|u| json!({"user_id": u}).to_string());
        let (status, answer) = http(
            "POST",
            &format!("{}/api/products/{id}/like", self.likes_url),
            body.as_deref(),
        );
        (status, serde_json::from_str(&answer).unwrap())
    }

    fn like_ok(&self, id: i64, user: Option<i64>) {
        let (status, body) = self.like(id, user);
        assert_eq!(
            (status, &body),
            (200, &json!({"message": "success"})),
            "like of {id} by {user:?}"
        );
    }

    /// Products' products by id, likes included.
    fn at_products(&self) -> BTreeMap<i64, Value> {
        by_id(get_json(&format!("{}/api/products", self.products_url)))
    }

    /// Likes' products by id.
    fn at_likes(&self) -> BTreeMap<i64, Value> {
        by_id(get_json(&format!("{}/api/products", self.likes_url)))
    }

    fn likes_of(&self, id: i64) -> Option<i64> {
        self.at_products().get(&id).map(|p| p["likes"].as_i64().unwrap())
    }

    /// Publishes `value` to `topic` straight through ferry's API, keyed by `key`.
    fn publish(&self, topic: &str, key: &str, value: &Value) {
        let record =
            json!({"key": key, "headers": {"type": value["type"].as_str().unwrap_or("?")}, "value": value});
        let (status, body) = request(
            "POST",
            &format!("{}/v1/topics/{topic}/records", self.ferry_url),
            Some(&record.to_string()),
            Some(TOKEN),
        );
        assert_eq!(status, 200, "{body}");
    }

    /// A counter of a service's consumer since it started.
    fn counter(&self, url: &str, name: &str) -> u64 {
        self.health(url)["consumer"][name].as_u64().unwrap()
    }

    fn health(&self, url: &str) -> Value {
        get_json(&format!("{url}/healthz"))
    }

    fn db(&self, name: &str) -> rusqlite::Connection {
        rusqlite::Connection::open_with_flags(
            self.dir.path().join(format!("{name}.sqlite3")),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap()
    }

    /// `deleted` of a product in likes' database.
    fn tombstoned(&self, id: i64) -> bool {
        self.db("likes")
            .query_row("SELECT deleted FROM products WHERE id = ?1", [id], |r| {
                r.get::<_, i64>(0)
            })
            .is_ok_and(|d| d == 1)
    }

    /// Why the two services do not agree yet, if they do not.
    fn disagreement(&self) -> Option<String> {
        let products = self.at_products();
        let copy = self.at_likes();
        let mut without_likes = products.clone();
        for p in without_likes.values_mut() {
            p.as_object_mut().unwrap().remove("likes");
        }
        if copy != without_likes {
            return Some(format!("likes has {copy:?}, products {without_likes:?}"));
        }
        let rows: BTreeMap<i64, i64> = {
            let db = self.db("likes");
            let mut stmt = db
                .prepare("SELECT product_id, COUNT(*) FROM product_user GROUP BY product_id")
                .unwrap();
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .map(Result::unwrap)
                .collect()
        };
        for (id, p) in &products {
            let counted = p["likes"].as_i64().unwrap();
            let liked = rows.get(id).copied().unwrap_or(0);
            if counted != liked {
                return Some(format!(
                    "product {id}: products counts {counted} likes, likes has {liked} rows"
                ));
            }
        }
        for url in [&self.products_url, &self.likes_url] {
            let h = self.health(url);
            if h["outbox_pending"] != 0 {
                return Some(format!("{url} has events waiting: {h}"));
            }
        }
        // Each like event applied exactly once: products processed one product_liked per like row.
        let processed: i64 = self
            .db("products")
            .query_row(
                "SELECT COUNT(*) FROM processed WHERE event_type = 'product_liked'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let total: i64 = rows.values().sum();
        (processed != total).then(|| format!("products processed {processed} likes, likes has {total} rows"))
    }
}

fn by_id(list: Value) -> BTreeMap<i64, Value> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_i64().unwrap(), p.clone()))
        .collect()
}

/// The whole scenario on one engine, the services speaking HTTP or (`wire`) the wire protocol.
fn scenario(engine: Option<&str>, wire: bool) {
    let started = Instant::now();
    let mut shop = Shop::start(engine, wire);
    let engine_name = engine.map_or("embedded", |e| e.split_whitespace().next().unwrap());
    let name = if wire {
        format!("{engine_name}+wire")
    } else {
        engine_name.to_string()
    };

    // Create, update and delete reach likes within 2 s each.
    let mug = shop.create("mug");
    let (_, t) = within(PROPAGATION, "a created product reaches likes", || {
        shop.at_likes().get(&mug).filter(|p| p["title"] == "mug").cloned()
    });
    eprintln!("{name}: product_created reached likes in {t:?}");
    let copy = &shop.at_likes()[&mug];
    assert_eq!(
        copy,
        &json!({"id": mug, "title": "mug", "description": "about mug", "image": "https://img.example/mug.png"})
    );
    shop.update(mug, "big mug");
    let (_, t) = within(PROPAGATION, "an update reaches likes", || {
        (shop.at_likes()[&mug]["title"] == "big mug").then_some(())
    });
    eprintln!("{name}: product_updated reached likes in {t:?}");
    let plate = shop.create("plate");
    within(PROPAGATION, "a second product reaches likes", || {
        shop.at_likes().contains_key(&plate).then_some(())
    });
    shop.delete(plate);
    let (_, t) = within(PROPAGATION, "a delete reaches likes", || {
        (!shop.at_likes().contains_key(&plate) && shop.tombstoned(plate)).then_some(())
    });
    eprintln!("{name}: product_deleted reached likes in {t:?}");
    let (status, body) = shop.like(plate, Some(1));
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("product_not_found")),
        "{body}"
    );
    let (status, body) = shop.like(9999, None);
    assert_eq!(status, 404, "{body}");
    // Bad requests are answered with ferry's JSON errors naming what is wrong, and change nothing.
    let refused = |method: &str, url: &str, body: &str, status: u16, code: &str, field: Value| {
        let (got, answer) = http(method, url, Some(body));
        let answer: Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(
            (got, &answer["error"], &answer["field"]),
            (status, &json!(code), &field),
            "{method} {url}: {answer}"
        );
    };
    let products = format!("{}/api/products", shop.products_url);
    let title = |t: &str| json!({"title": t}).to_string();
    let not_text = r#"{"title": 1}"#;
    refused("POST", &products, not_text, 400, "invalid_field", json!("title"));
    let likes = r#"{"title": "a", "likes": 3}"#;
    refused("POST", &products, likes, 400, "invalid_field", json!("likes"));
    refused("POST", &products, "{", 400, "invalid_json", Value::Null);
    let huge = title(&"x".repeat(100_000));
    refused("POST", &products, &huge, 413, "body_too_large", Value::Null);
    let long = title(&"x".repeat(201));
    refused("POST", &products, &long, 422, "out_of_range", json!("title"));
    let url = format!("{products}/abc");
    refused("PUT", &url, &title("a"), 400, "invalid_parameter", json!("id"));
    let url = format!("{products}/{plate}");
    refused("GET", &url, "", 404, "product_not_found", json!("id"));
    refused("PATCH", &products, "", 405, "method_not_allowed", Value::Null);
    let url = format!("{}/api/nothing", shop.likes_url);
    refused("GET", &url, "", 404, "route_not_found", Value::Null);
    let url = format!("{}/api/products/{mug}/like", shop.likes_url);
    refused(
        "POST",
        &url,
        r#"{"user_id": -1}"#,
        400,
        "invalid_field",
        json!("user_id"),
    );
    assert_eq!(shop.at_products().len(), 1, "a bad request changed something");

    // A like raises likes to 1; the same user's second like is refused and changes nothing.
    shop.like_ok(mug, Some(1));
    within(PROPAGATION, "a like is counted by products", || {
        (shop.likes_of(mug) == Some(1)).then_some(())
    });
    let (status, body) = shop.like(mug, Some(1));
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["message"], "You already liked this product", "{body}");
    // A like of another product as a barrier: once it is counted, so would a second like of the mug.
    let bowl = shop.create("bowl");
    within(PROPAGATION, "the bowl reaches likes", || {
        shop.at_likes().contains_key(&bowl).then_some(())
    });
    shop.like_ok(bowl, None); // a random user, from products' GET /api/user
    within(PROPAGATION, "the bowl's like is counted", || {
        (shop.likes_of(bowl) == Some(1)).then_some(())
    });
    assert_eq!(shop.likes_of(mug), Some(1), "a refused like was counted");

    // What a relay that crashed between publishing and deleting, a redelivery out of order or a
    // foreign producer would send, published straight to ferry: none of it changes anything.
    let counted: String = shop
        .db("products")
        .query_row(
            "SELECT event_id FROM processed WHERE event_type = 'product_liked' LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let liked = json!({"id": counted, "type": "product_liked", "product": {"id": mug}, "user_id": 1});
    shop.publish("shop.likes", &mug.to_string(), &liked);
    let stale = |id: i64, kind: &str, title: &str, version: i64| {
        json!({"id": format!("{:032x}", rand::random::<u128>()), "type": kind,
               "product": {"id": id, "title": title, "description": "", "image": "", "version": version}})
    };
    shop.publish(
        "shop.products",
        &mug.to_string(),
        &stale(mug, "product_created", "mug", 1),
    );
    shop.publish(
        "shop.products",
        &plate.to_string(),
        &stale(plate, "product_updated", "plate", 2),
    );
    let garbage = json!({"hello": "not an event"});
    shop.publish("shop.products", "x", &garbage);
    within(RECOVERY, "the duplicate and the stale events are skipped", || {
        (shop.counter(&shop.products_url, "duplicates") == 1
            && shop.counter(&shop.likes_url, "stale") == 2
            && shop.counter(&shop.likes_url, "rejected") >= 1)
            .then_some(())
    });
    assert_eq!(shop.likes_of(mug), Some(1), "a duplicate like was counted");
    assert_eq!(shop.likes_of(bowl), Some(1));
    let copy = shop.at_likes();
    assert_eq!(
        copy[&mug]["title"], "big mug",
        "an old version overwrote a newer one"
    );
    assert!(
        !copy.contains_key(&plate),
        "a late update brought a deleted product back"
    );
    // The record that is not an event is dead-lettered by ferry, not dropped.
    let dlq = format!(
        "{}/v1/queues/ferry-dlq-replay/topics/shop.products.likes.dlq/receive",
        shop.ferry_url
    );
    let (dead, t) = within(
        RECOVERY,
        "the record that is not an event is dead-lettered",
        || {
            let (status, body) = request(
                "POST",
                &dlq,
                Some(r#"{"max_records": 10, "max_wait_ms": 200}"#),
                Some(TOKEN),
            );
            if status != 200 {
                return None;
            }
            let records: Value = serde_json::from_str(&body).unwrap();
            records["records"].as_array().and_then(|r| r.first().cloned())
        },
    );
    assert_eq!(dead["value"], garbage, "{dead}");
    assert!(dead["headers"]["ferry-dlq-reason"].is_string(), "{dead}");
    eprintln!(
        "{name}: a record that is not an event was dead-lettered after {t:?}: {}",
        dead["headers"]["ferry-dlq-reason"]
    );

    // ferry killed: both services keep answering; what they change waits in their outboxes.
    within(PROPAGATION, "both outboxes are empty", || {
        let pending = |url: &str| shop.health(url)["outbox_pending"].as_u64();
        (pending(&shop.products_url) == Some(0) && pending(&shop.likes_url) == Some(0)).then_some(())
    });
    shop.ferry.kill();
    let cup = shop.create("cup");
    shop.like_ok(mug, Some(2));
    assert_eq!(shop.health(&shop.products_url)["outbox_pending"], 1);
    assert_eq!(shop.health(&shop.likes_url)["outbox_pending"], 1);
    assert!(!shop.at_likes().contains_key(&cup));
    shop.ferry.start(); // same data directory, same port
    let (_, t) = within(RECOVERY, "events written while ferry was down arrive", || {
        (shop.at_likes().contains_key(&cup) && shop.likes_of(mug) == Some(2)).then_some(())
    });
    eprintln!("{name}: events held while ferry was down arrived {t:?} after it restarted");

    // products killed right after a burst of updates (some still in its outbox or in flight).
    for i in 1..=10 {
        shop.update(cup, &format!("cup v{i}"));
    }
    shop.products.kill();
    let (status, body) = shop.like(bowl, None);
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("unavailable")),
        "{body}"
    );
    // With a user named, likes does not need products (42 is not one of products' random users).
    shop.like_ok(bowl, Some(42));
    shop.products.start();
    let (_, t) = within(RECOVERY, "products catches up after its restart", || {
        (shop.likes_of(bowl) == Some(2) && shop.at_likes()[&cup]["title"] == "cup v10").then_some(())
    });
    eprintln!("{name}: products caught up {t:?} after its restart");

    // likes killed while product events and likes are in flight; changes made while it is down.
    let saucer = shop.create("saucer");
    for i in 1..=10 {
        shop.update(saucer, &format!("saucer v{i}"));
    }
    shop.like_ok(cup, Some(3));
    shop.likes.kill();
    shop.update(mug, "the last mug");
    let spoon = shop.create("spoon");
    shop.delete(saucer);
    shop.likes.start();
    let (_, t) = within(RECOVERY, "likes catches up after its restart", || {
        let copy = shop.at_likes();
        (copy.get(&mug).is_some_and(|p| p["title"] == "the last mug")
            && copy.contains_key(&spoon)
            && !copy.contains_key(&saucer))
        .then_some(())
    });
    eprintln!("{name}: likes caught up {t:?} after its restart");

    // In the end the two databases agree, and every like was counted once.
    let (_, t) = within(RECOVERY, "products and likes agree", || {
        match shop.disagreement() {
            None => Some(()),
            Some(why) => {
                eprintln!("{name}: not yet consistent: {why}");
                None
            }
        }
    });
    let products = shop.at_products();
    let ids: Vec<i64> = products.keys().copied().collect();
    assert_eq!(ids, [mug, bowl, cup, spoon]);
    let likes: Vec<i64> = products.values().map(|p| p["likes"].as_i64().unwrap()).collect();
    assert_eq!(likes, [2, 2, 1, 0]);
    assert!(shop.tombstoned(plate) && shop.tombstoned(saucer));
    eprintln!(
        "{name}: consistent after {t:?}; products' consumer {}, likes' consumer {}",
        shop.health(&shop.products_url)["consumer"],
        shop.health(&shop.likes_url)["consumer"]
    );

    // The bearer token was sent and never logged.
    for p in [&shop.ferry, &shop.products, &shop.likes] {
        let log = std::fs::read_to_string(&p.log).unwrap_or_default();
        assert!(!log.contains(TOKEN), "{}'s log holds the token", p.name);
    }
    eprintln!("{name}: the scenario took {:?}", started.elapsed());
}

#[test]
fn shop_on_the_embedded_engine() {
    scenario(None, false);
}

#[test]
fn shop_on_the_embedded_engine_over_the_wire_protocol() {
    scenario(None, true);
}

#[test]
fn shop_on_nats_jetstream() {
    let Some(nats) = require(NatsServer::start(), "nats-server") else {
        return;
    };
    scenario(Some(&format!("nats = {{ url = \"{}\" }}", nats.url())), false);
}

#[test]
fn shop_on_rabbitmq() {
    let Some(rabbit) = require(RabbitServer::start(), "rabbitmq-server") else {
        return;
    };
    scenario(
        Some(&format!("rabbitmq = {{ url = \"{}\" }}", rabbit.url())),
        false,
    );
}
