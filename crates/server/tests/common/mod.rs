//! A ferry server started in-process on 127.0.0.1:0, and a small HTTP client for it.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use ferry_broker::Broker;
use ferry_server::ServerOptions;
use reqwest::StatusCode;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running server. [`TestServer::stop`] shuts it down gracefully and waits until the broker is closed.
pub struct TestServer {
    pub url: String,
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

/// A response: status and body parsed as JSON (`Value::Null` for an empty body).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
    pub text: String,
}

impl TestServer {
    /// Opens a broker in `dir` and serves it. The broker is closed when the server stops.
    pub async fn start(dir: &Path) -> Self {
        Self::serve(Broker::open(dir).expect("open broker")).await
    }

    /// Serves `broker` (the caller may keep a clone to look at the broker directly).
    pub async fn serve(broker: Broker) -> Self {
        Self::serve_with(broker, ServerOptions::default()).await
    }

    /// Serves `broker` with `options` (tokens, metrics).
    pub async fn serve_with(broker: Broker, options: ServerOptions) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(ferry_server::serve_with(broker, listener, options, async move {
            let _ = stopped.await;
        }));
        let server = Self {
            url,
            client: reqwest::Client::new(),
            stop: Some(stop),
            task: Some(task),
        };
        // The listener is bound before `serve` runs, so this connects at once; it proves the routes answer.
        let health = server.get("/healthz").await;
        assert_eq!(health.status, StatusCode::OK, "{health:?}");
        assert_eq!(health.body, serde_json::json!({"status": "ok"}));
        server
    }

    /// Graceful shutdown; returns once `serve` returned (the broker is closed if nobody else holds it).
    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap().unwrap();
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> Answer {
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let is_json = resp
            .headers()
            .get("content-type")
            .is_some_and(|v| v.to_str().unwrap().starts_with("application/json"));
        let text = resp.text().await.unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            assert!(is_json, "{status}: a non-JSON body: {text}");
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
        };
        Answer { status, body, text }
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send(self.client.get(self.url(path))).await
    }

    pub async fn delete(&self, path: &str) -> Answer {
        self.send(self.client.delete(self.url(path))).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Answer {
        self.send(self.client.post(self.url(path)).json(body)).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Answer {
        self.send(self.client.put(self.url(path)).json(body)).await
    }

    /// POST with a raw body and content type (`None`: no Content-Type header).
    pub async fn post_raw(
        &self,
        path: &str,
        content_type: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> Answer {
        let mut req = self.client.post(self.url(path)).body(body);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        self.send(req).await
    }

    /// Creates a topic; panics unless 201.
    pub async fn create_topic(&self, config: Value) -> Value {
        let a = self.post("/v1/topics", &config).await;
        assert_eq!(a.status, StatusCode::CREATED, "{a:?}");
        a.body
    }

    /// Publishes; panics unless 200; returns the offsets.
    pub async fn publish(&self, topic: &str, body: &Value) -> Vec<(u64, u64)> {
        let a = self.post(&format!("/v1/topics/{topic}/records"), body).await;
        assert_eq!(a.status, StatusCode::OK, "{a:?}");
        offsets(&a.body)
    }

    /// Every record of one partition from `offset` (up to 10000), as returned.
    pub async fn fetch(&self, topic: &str, partition: u32, offset: u64) -> Vec<Value> {
        let a = self
            .get(&format!(
                "/v1/topics/{topic}/partitions/{partition}/records?offset={offset}&max_records=10000"
            ))
            .await;
        assert_eq!(a.status, StatusCode::OK, "{a:?}");
        a.body["records"].as_array().unwrap().clone()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// `{"offsets":[{"partition","offset"}]}` as pairs.
pub fn offsets(body: &Value) -> Vec<(u64, u64)> {
    body["offsets"]
        .as_array()
        .unwrap_or_else(|| panic!("no offsets in {body}"))
        .iter()
        .map(|o| (o["partition"].as_u64().unwrap(), o["offset"].as_u64().unwrap()))
        .collect()
}

/// Forwards every event of the server (`ferry_server` targets) to a channel as its message, followed by
/// ` <route>` when the event has a `route` field: how a test knows that a request is being handled or a
/// long-poll is waiting, without sleeping.
pub struct Events(pub tokio::sync::mpsc::UnboundedSender<String>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Events {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Message(String);
        impl tracing::field::Visit for Message {
            // `message` and `%route` both arrive here, formatted as plain text.
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                match field.name() {
                    "message" => self.0.insert_str(0, &format!("{value:?}")),
                    "route" => self.0.push_str(&format!(" {value:?}")),
                    _ => {}
                }
            }
        }
        if event.metadata().target().starts_with("ferry_server") {
            let mut message = Message(String::new());
            event.record(&mut message);
            let _ = self.0.send(message.0);
        }
    }
}

/// Waits for the event `message` (as [`Events`] renders it), skipping others.
pub async fn wait_for(events: &mut tokio::sync::mpsc::UnboundedReceiver<String>, message: &str) {
    while let Some(m) = events.recv().await {
        if m == message {
            return;
        }
    }
    panic!("no `{message}` event");
}
