//! A ferry server started in-process on 127.0.0.1:0 over a temporary data directory, and a client of it;
//! with [`TestServer::start_wire`], also serving the wire protocol, and a client that uses it.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use ferry_broker::Broker;
use ferry_client::{Client, Fsync, TopicConfig};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running server. Dropping it shuts the server down; [`TestServer::stop`] also waits for it.
pub struct TestServer {
    pub url: String,
    /// The wire protocol's address (`host:port`), when started with [`TestServer::start_wire`].
    pub wire: Option<String>,
    pub client: Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
    options: ferry_server::ServerOptions,
    dir: tempfile::TempDir,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(ferry_server::ServerOptions::default()).await
    }

    /// A server with options (tokens); `client` carries no token.
    pub async fn start_with(options: ferry_server::ServerOptions) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let broker = Broker::open(dir.path()).expect("open broker");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(ferry_server::serve_with(
            broker,
            listener,
            options.clone(),
            async move {
                let _ = stopped.await;
            },
        ));
        let client = Client::new(&url).unwrap();
        // The listener is bound before `serve` runs, so this answers at once (and needs no token).
        client.health().await.expect("server answers /healthz");
        Self {
            url,
            wire: None,
            client,
            stop: Some(stop),
            task: Some(task),
            options,
            dir,
        }
    }

    /// A server that also serves the wire protocol, and a client (no token) that publishes and uses
    /// queue groups over it.
    pub async fn start_wire() -> Self {
        Self::start_wire_with(ferry_server::ServerOptions::default()).await
    }

    /// [`TestServer::start_wire`] with options (tokens); `client` carries no token.
    pub async fn start_wire_with(options: ferry_server::ServerOptions) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let wire = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let wire_addr = wire.local_addr().unwrap().to_string();
        let client = Client::builder().url(&url).wire(&wire_addr).build().unwrap();
        let (stop, task) = serve_wire(&dir, listener, wire, options.clone());
        client.health().await.expect("server answers /healthz");
        Self {
            url,
            wire: Some(wire_addr),
            client,
            stop: Some(stop),
            task: Some(task),
            options,
            dir,
        }
    }

    /// Stops the server (a graceful shutdown) and waits for it, keeping its data directory and
    /// ports for [`TestServer::resume`]; `client` is kept.
    pub async fn pause(&mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap().unwrap();
    }

    /// Starts a paused server started with [`TestServer::start_wire`] again, on the same ports and
    /// data directory.
    pub async fn resume(&mut self) {
        let listener = TcpListener::bind(self.url.trim_start_matches("http://"))
            .await
            .unwrap();
        let wire = TcpListener::bind(self.wire.as_deref().unwrap()).await.unwrap();
        let (stop, task) = serve_wire(&self.dir, listener, wire, self.options.clone());
        self.stop = Some(stop);
        self.task = Some(task);
        self.client.health().await.expect("server answers /healthz");
    }

    /// Creates a topic with `partitions` partitions and fsync `never` (tests do not need the disk to sync).
    pub async fn topic(&self, name: &str, partitions: u32) {
        self.client
            .create_topic(
                name,
                &TopicConfig::default().partitions(partitions).fsync(Fsync::Never),
            )
            .await
            .unwrap();
    }

    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap().unwrap();
    }
}

/// Serves HTTP on `listener` and the wire protocol on `wire` over the broker in `dir`.
fn serve_wire(
    dir: &tempfile::TempDir,
    listener: TcpListener,
    wire: TcpListener,
    options: ferry_server::ServerOptions,
) -> (oneshot::Sender<()>, JoinHandle<std::io::Result<()>>) {
    let broker = Broker::open(dir.path()).expect("open broker");
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(ferry_server::serve_with_wire(
        broker,
        listener,
        wire,
        options,
        async move {
            let _ = stopped.await;
        },
    ));
    (stop, task)
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
