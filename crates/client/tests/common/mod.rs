//! A ferry server started in-process on 127.0.0.1:0 over a temporary data directory, and a client of it.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use ferry_broker::Broker;
use ferry_client::{Client, Fsync, TopicConfig};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running server. Dropping it shuts the server down; [`TestServer::stop`] also waits for it.
pub struct TestServer {
    pub url: String,
    pub client: Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
    _dir: tempfile::TempDir,
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
        let task = tokio::spawn(ferry_server::serve_with(broker, listener, options, async move {
            let _ = stopped.await;
        }));
        let client = Client::new(&url).unwrap();
        // The listener is bound before `serve` runs, so this answers at once (and needs no token).
        client.health().await.expect("server answers /healthz");
        Self {
            url,
            client,
            stop: Some(stop),
            task: Some(task),
            _dir: dir,
        }
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

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
