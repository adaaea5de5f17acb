//! `type = "email"`: one plain-text e-mail per record, sent over SMTP (lettre), or written as an RFC 5322
//! `.eml` file to an outbox directory when no `host` is set.
//!
//! A record is acked once the SMTP server accepted the message (its 250 to the end of DATA), or once its
//! file is fsynced and renamed into the outbox. Outbox files of records read from a topic are named by
//! where the record was read (`<topic>-<partition>-<offset>.eml`), so a redelivered record overwrites its
//! file instead of adding a second one; over SMTP the Message-ID is derived the same way, which lets
//! mail stores that deduplicate by Message-ID drop the copy.
//!
//! The SMTP password is read when the sink is built and is never logged: error messages are scrubbed of
//! it, and `Debug` does not show it.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::transport::smtp::AsyncSmtpTransportBuilder;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::bus::BoxFuture;
use crate::component::{BuildContext, Sink};
use crate::config::{EmailSinkConfig, SmtpTls};
use crate::error::StageError;
use crate::event::Event;
use crate::template::Template;

/// Problems of an `email` sink's settings, each with its key.
pub fn validate(c: &EmailSinkConfig) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Err(e) = c.from.parse::<Mailbox>() {
        out.push((
            "from".into(),
            format!("`{}` is not an e-mail address: {e}", c.from),
        ));
    }
    if c.to.is_empty() {
        out.push(("to".into(), "give at least one recipient".into()));
    }
    for to in &c.to {
        if let Err(e) = to.parse::<Mailbox>() {
            out.push(("to".into(), format!("`{to}` is not an e-mail address: {e}")));
        }
    }
    for (key, text) in [("subject", &c.subject), ("body", &c.body)] {
        if let Err(e) = Template::parse(text) {
            out.push((key.into(), format!("not a valid template: {e}")));
        }
    }
    if c.host.as_deref().is_some_and(|h| h.trim().is_empty()) {
        out.push((
            "host".into(),
            "must not be empty (leave it out to write to the outbox)".into(),
        ));
    }
    if c.port == Some(0) {
        out.push(("port".into(), "must be 1..=65535".into()));
    }
    if c.password_env.is_some() && c.password_file.is_some() {
        out.push((
            "password_file".into(),
            "give `password_env` or `password_file`, not both".into(),
        ));
    }
    if let Some(var) = &c.password_env
        && (var.is_empty() || var.contains(['=', '\0']))
    {
        out.push((
            "password_env".into(),
            "must be the name of an environment variable".into(),
        ));
    }
    let has_password = c.password_env.is_some() || c.password_file.is_some();
    if has_password && c.username.is_none() {
        out.push((
            "username".into(),
            "required when `password_env` or `password_file` is set".into(),
        ));
    }
    if c.username.is_some() && !has_password {
        out.push((
            "username".into(),
            "needs a password: set `password_env` or `password_file`".into(),
        ));
    }
    if c.username.is_some() && c.host.is_none() {
        out.push((
            "username".into(),
            "is only used with `host` (without one, messages are written to the outbox)".into(),
        ));
    }
    if c.timeout.0.is_zero() {
        out.push(("timeout".into(), "must be longer than 0s".into()));
    }
    out
}

/// Sends one e-mail per record, or writes it to the outbox.
pub struct EmailSink {
    from: Mailbox,
    to: Vec<Mailbox>,
    subject: Template,
    body: Template,
    /// `<pipeline>.<stage>`, sanitized: part of Message-IDs derived from a record's origin.
    stage_id: String,
    delivery: Delivery,
}

enum Delivery {
    Smtp {
        builder: Box<AsyncSmtpTransportBuilder>,
        /// Built on first use: building starts the connection pool's cleanup task, which needs the
        /// runtime, while a sink may be built outside one.
        transport: OnceLock<AsyncSmtpTransport<Tokio1Executor>>,
        /// `host:port`, for messages.
        server: String,
        /// Only kept to scrub it from error messages.
        password: Option<String>,
    },
    Outbox(PathBuf),
}

impl std::fmt::Debug for EmailSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut s = f.debug_struct("EmailSink");
        s.field("from", &self.from.to_string())
            .field("to", &self.to.len());
        match &self.delivery {
            Delivery::Smtp { server, .. } => s.field("smtp", server),
            Delivery::Outbox(dir) => s.field("outbox", dir),
        };
        s.finish_non_exhaustive()
    }
}

impl EmailSink {
    /// A sink for `c`: reads the password, prepares the SMTP client (no connection is made until the first
    /// write) or creates the outbox directory.
    ///
    /// # Errors
    /// Invalid settings, a password variable that is unset, a password file that cannot be read, an
    /// outbox that cannot be created.
    pub fn new(c: &EmailSinkConfig, ctx: &BuildContext) -> anyhow::Result<Self> {
        if let Some((key, message)) = validate(c).into_iter().next() {
            anyhow::bail!("{key}: {message}");
        }
        let from = c
            .from
            .parse::<Mailbox>()
            .with_context(|| format!("from: `{}`", c.from))?;
        let to =
            c.to.iter()
                .map(|t| t.parse::<Mailbox>().with_context(|| format!("to: `{t}`")))
                .collect::<anyhow::Result<Vec<_>>>()?;
        let subject = Template::parse(&c.subject).map_err(|e| anyhow::anyhow!("subject: {e}"))?;
        let body = Template::parse(&c.body).map_err(|e| anyhow::anyhow!("body: {e}"))?;
        let delivery = match &c.host {
            Some(host) => smtp(c, host)?,
            None => {
                let dir = if c.outbox.is_absolute() {
                    c.outbox.clone()
                } else {
                    ctx.data_dir.join(&c.outbox)
                };
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("outbox: cannot create `{}`", dir.display()))?;
                Delivery::Outbox(dir)
            }
        };
        Ok(Self {
            from,
            to,
            subject,
            body,
            stage_id: format!("{}.{}", sanitize(&ctx.pipeline), sanitize(&ctx.stage)),
            delivery,
        })
    }

    /// The message for `event`, and the name that identifies it (`<topic>-<partition>-<offset>` when the
    /// record was read from a topic).
    fn message(&self, event: &Event) -> Result<(Message, Option<String>), StageError> {
        let origin = event
            .origin
            .as_ref()
            .map(|o| format!("{}-{}-{}", sanitize(&o.topic), o.partition, o.offset));
        // A newline in a subject would end the header: fold the rendered text onto one line.
        let subject: String = self
            .subject
            .render(&event.value)
            .chars()
            .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
            .collect();
        let message_id = origin
            .as_ref()
            .map(|name| format!("<{name}.{}@{}>", self.stage_id, self.from.email.domain()));
        let mut builder = Message::builder()
            .from(self.from.clone())
            .subject(subject)
            .message_id(message_id)
            .header(ContentType::TEXT_PLAIN);
        for to in &self.to {
            builder = builder.to(to.clone());
        }
        let message = builder
            .body(self.body.render(&event.value))
            .map_err(|e| StageError::permanent(format!("email: cannot make the message: {e}")))?;
        Ok((message, origin))
    }
}

/// The SMTP delivery of `c`.
fn smtp(c: &EmailSinkConfig, host: &str) -> anyhow::Result<Delivery> {
    let password = match (&c.password_env, &c.password_file) {
        (Some(var), _) => Some(match std::env::var(var) {
            Ok(p) => p,
            Err(std::env::VarError::NotPresent) => {
                anyhow::bail!("password_env: environment variable `{var}` is not set")
            }
            Err(std::env::VarError::NotUnicode(_)) => {
                anyhow::bail!("password_env: environment variable `{var}` is not valid UTF-8")
            }
        }),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("password_file: cannot read `{}`", path.display()))?;
            // Editors and `echo` end the file with a newline that is not part of the password.
            Some(text.trim_end_matches(['\n', '\r']).to_owned())
        }
        (None, None) => None,
    };
    let port = c.port.unwrap_or(match c.tls {
        SmtpTls::Starttls => 587,
        SmtpTls::Tls => 465,
        SmtpTls::None => 25,
    });
    let builder = match c.tls {
        SmtpTls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host)
            .with_context(|| format!("host: cannot set up TLS for `{host}`"))?,
        SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(host)
            .with_context(|| format!("host: cannot set up TLS for `{host}`"))?,
        SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host),
    };
    let mut builder = builder.port(port).timeout(Some(c.timeout.0));
    if let (Some(user), Some(password)) = (&c.username, &password) {
        builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
    }
    Ok(Delivery::Smtp {
        builder: Box::new(builder),
        transport: OnceLock::new(),
        server: format!("{host}:{port}"),
        password: password.filter(|p| !p.is_empty()),
    })
}

impl Sink for EmailSink {
    fn write<'a>(&'a self, events: &'a [Event]) -> BoxFuture<'a, Result<(), StageError>> {
        Box::pin(async move {
            for event in events {
                let (message, origin) = self.message(event)?;
                match &self.delivery {
                    Delivery::Smtp {
                        builder,
                        transport,
                        server,
                        password,
                    } => {
                        let transport = transport.get_or_init(|| (**builder).clone().build());
                        if let Err(e) = transport.send(message).await {
                            let text = scrub(&format!("email: SMTP {server}: {e}"), password.as_deref());
                            return Err(if e.is_permanent() {
                                StageError::permanent(text)
                            } else {
                                StageError::transient(text)
                            });
                        }
                    }
                    Delivery::Outbox(dir) => {
                        let dir = dir.clone();
                        let name = origin.unwrap_or_else(unique_name);
                        let bytes = message.formatted();
                        tokio::task::spawn_blocking(move || {
                            write_eml(&dir, &name, &bytes).map_err(|e| {
                                StageError::transient(format!("email: outbox `{}`: {e}", dir.display()))
                            })
                        })
                        .await
                        .map_err(|e| {
                            StageError::transient(format!("email: the writing task failed: {e}"))
                        })??;
                    }
                }
            }
            Ok(())
        })
    }
}

/// `text` with every occurrence of `secret` replaced: a server may echo what it was sent.
fn scrub(text: &str, secret: Option<&str>) -> String {
    match secret {
        Some(s) if !s.is_empty() => text.replace(s, "[redacted]"),
        _ => text.to_owned(),
    }
}

/// Only ASCII letters, digits, `.`, `_` and `-`, so that it can be part of a file name and a Message-ID.
fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A name for a record without an origin: its time, then random bits for records made in the same
/// millisecond.
fn unique_name() -> String {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis();
    format!("{millis:013}-{:016x}", rand::random::<u64>())
}

/// Writes `<dir>/<name>.eml` atomically: a temporary file in the same directory, fsynced, then renamed
/// over the final name (replacing an earlier copy), then the directory fsynced so the rename persists.
fn write_eml(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("{name}.eml"));
    // Hidden and without the `.eml` suffix, so that readers of the outbox never pick up a partial file.
    let tmp = dir.join(format!(".{name}.{:08x}.tmp", rand::random::<u32>()));
    let written = (|| {
        let mut file = File::create_new(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, &path)?;
        super::file::sync_dir(dir)
    })();
    if written.is_err() {
        // Best effort: the original error is the one worth reporting.
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, TcpListener};
    use std::process::{Child, Command, Stdio};

    use serde_json::json;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    use super::*;
    use crate::config::Span;
    use crate::event::Origin;
    use crate::sinks::topic::tests::context;

    fn config() -> EmailSinkConfig {
        EmailSinkConfig {
            host: None,
            port: None,
            tls: SmtpTls::None,
            username: None,
            password_env: None,
            password_file: None,
            from: "Ferry <ferry@example.com>".into(),
            to: vec!["ops@example.com".into(), "Ann <ann@example.com>".into()],
            subject: "New message from {user}".into(),
            body: "From user: {user}\n\nMessage: {message}".into(),
            outbox: PathBuf::from("outbox"),
            timeout: Span::secs(10),
        }
    }

    fn event(user: &str, message: &str, offset: Option<u64>) -> Event {
        let mut e = Event::new(json!({"user": user, "message": message}));
        e.origin = offset.map(|offset| Origin {
            topic: "scream.filter".into(),
            partition: 0,
            offset,
            timestamp_ms: 0,
        });
        e
    }

    fn eml_files(dir: &Path) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "eml"))
            .collect();
        files.sort();
        files
    }

    #[test]
    fn validation_names_keys() {
        assert!(validate(&config()).is_empty(), "{:?}", validate(&config()));
        let mut c = config();
        c.from = "not an address".into();
        c.to = vec![];
        c.subject = "{unclosed".into();
        c.body = "lone }".into();
        c.password_env = Some("SMTP_PASSWORD".into());
        c.password_file = Some("pw.txt".into());
        let problems = validate(&c);
        let keys: Vec<&str> = problems.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            ["from", "to", "subject", "body", "password_file", "username"],
            "{problems:?}"
        );

        let mut c = config();
        c.to = vec!["ok@example.com".into(), "bad@".into()];
        c.username = Some("ferry".into());
        c.password_env = Some("SMTP_PASSWORD".into());
        let problems = validate(&c);
        let keys: Vec<&str> = problems.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            ["to", "username"],
            "a bad recipient, a user name without host: {problems:?}"
        );
        assert!(problems[0].1.contains("bad@"));
    }

    #[tokio::test]
    async fn outbox_gets_one_eml_per_record() {
        let dir = tempfile::tempdir().unwrap();
        let (ctx, _) = context(dir.path());
        let sink = EmailSink::new(&config(), &ctx).unwrap();
        sink.write(&[
            event("ann", "HELLO THERE", Some(7)),
            event("bob", "SECOND ONE", None),
        ])
        .await
        .unwrap();

        let files = eml_files(&dir.path().join("outbox"));
        assert_eq!(files.len(), 2, "{files:?}");
        let by_origin = dir.path().join("outbox/scream.filter-0-7.eml");
        assert!(files.contains(&by_origin), "{files:?}");
        let text = std::fs::read_to_string(&by_origin).unwrap();
        assert!(text.contains("Subject: New message from ann\r\n"), "{text}");
        assert!(text.contains("From: Ferry <ferry@example.com>\r\n"), "{text}");
        assert!(
            text.contains("ops@example.com") && text.contains("ann@example.com"),
            "{text}"
        );
        assert!(text.contains("Content-Type: text/plain; charset=utf-8"), "{text}");
        assert!(text.contains("Message: HELLO THERE"), "{text}");
        assert!(
            text.contains("Message-ID: <scream.filter-0-7.p.s@example.com>"),
            "{text}"
        );
        let other = files.iter().find(|f| **f != by_origin).unwrap();
        assert!(
            std::fs::read_to_string(other)
                .unwrap()
                .contains("Message: SECOND ONE")
        );
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(dir.path().join("outbox")).unwrap().count(), 2);
    }

    #[tokio::test]
    async fn redelivered_record_overwrites_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let (ctx, _) = context(dir.path());
        let mut c = config();
        let outbox = dir.path().join("elsewhere/mail");
        c.outbox = outbox.clone();
        let sink = EmailSink::new(&c, &ctx).unwrap();
        sink.write(&[event("ann", "ONCE", Some(3))]).await.unwrap();
        sink.write(&[event("ann", "ONCE", Some(3))]).await.unwrap();
        let files = eml_files(&outbox);
        assert_eq!(files.len(), 1, "{files:?}");
        assert!(
            std::fs::read_to_string(&files[0])
                .unwrap()
                .contains("Message: ONCE")
        );
    }

    #[test]
    fn password_from_env_or_file() {
        let dir = tempfile::tempdir().unwrap();
        let (ctx, _) = context(dir.path());
        let mut c = config();
        c.host = Some("127.0.0.1".into());
        c.username = Some("ferry".into());
        c.password_env = Some("FERRY_TEST_SURELY_UNSET_PW_9Z".into());
        let err = EmailSink::new(&c, &ctx).unwrap_err().to_string();
        assert!(
            err.contains("FERRY_TEST_SURELY_UNSET_PW_9Z") && err.contains("password_env"),
            "{err}"
        );

        let file = dir.path().join("pw");
        std::fs::write(&file, "p4ss word\n").unwrap();
        c.password_env = None;
        c.password_file = Some(file);
        let sink = EmailSink::new(&c, &ctx).unwrap();
        match &sink.delivery {
            Delivery::Smtp { password, server, .. } => {
                assert_eq!(password.as_deref(), Some("p4ss word"));
                assert_eq!(server, "127.0.0.1:25");
            }
            Delivery::Outbox(_) => panic!("a host means SMTP"),
        }
        assert!(!format!("{sink:?}").contains("p4ss"));
        assert_eq!(
            scrub("535 bad p4ss word here", Some("p4ss word")),
            "535 bad [redacted] here"
        );
    }

    /// An SMTP server that answers RCPT with `rcpt_reply` (`"550 no such user"`); returns its port.
    async fn scripted_smtp(rcpt_reply: &'static str) -> u16 {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut lines = BufReader::new(read).lines();
                    write.write_all(b"220 scripted ESMTP\r\n").await?;
                    while let Some(line) = lines.next_line().await? {
                        let command = line.to_ascii_uppercase();
                        let reply = if command.starts_with("RCPT") {
                            rcpt_reply
                        } else if command.starts_with("QUIT") {
                            write.write_all(b"221 bye\r\n").await?;
                            break;
                        } else {
                            "250 ok"
                        };
                        write.write_all(format!("{reply}\r\n").as_bytes()).await?;
                    }
                    io::Result::Ok(())
                });
            }
        });
        port
    }

    fn smtp_config(port: u16) -> EmailSinkConfig {
        EmailSinkConfig {
            host: Some("127.0.0.1".into()),
            port: Some(port),
            tls: SmtpTls::None,
            ..config()
        }
    }

    #[tokio::test]
    async fn smtp_rejections_are_permanent_or_transient_by_code() {
        let dir = tempfile::tempdir().unwrap();
        let (ctx, _) = context(dir.path());
        for (reply, permanent) in [("550 no such user", true), ("451 try again later", false)] {
            let port = scripted_smtp(reply).await;
            let sink = EmailSink::new(&smtp_config(port), &ctx).unwrap();
            let err = sink.write(&[event("ann", "HI", None)]).await.unwrap_err();
            assert_eq!(err.permanent, permanent, "{reply}: {err}");
            assert!(err.message.contains(&reply[..3]), "{err}");
        }
        // Nothing listens on a port that was just freed: a connection error, retried.
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let sink = EmailSink::new(&smtp_config(port), &ctx).unwrap();
        let err = sink.write(&[event("ann", "HI", None)]).await.unwrap_err();
        assert!(!err.permanent, "{err}");
    }

    /// Kills the SMTP server when the test ends, however it ends.
    struct KillOnDrop(Child);

    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn aiosmtpd_installed() -> bool {
        Command::new("python3")
            .args(["-c", "import aiosmtpd"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    #[tokio::test]
    async fn delivers_to_a_real_smtp_server() {
        if !aiosmtpd_installed() {
            if std::env::var("FERRY_REQUIRE_SERVICES").as_deref() == Ok("1") {
                panic!("FERRY_REQUIRE_SERVICES=1 but aiosmtpd is not installed (pip install aiosmtpd)");
            }
            eprintln!("delivers_to_a_real_smtp_server skipped: aiosmtpd not installed");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let maildir = dir.path().join("maildir");
        let log = dir.path().join("aiosmtpd.log");
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = KillOnDrop(
            Command::new("python3")
                .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")])
                .args(["-c", "aiosmtpd.handlers.Mailbox"])
                .arg(&maildir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(File::create(&log).unwrap())
                .spawn()
                .unwrap(),
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port))
            .await
            .is_err()
        {
            if let Some(status) = server.0.try_wait().unwrap() {
                panic!(
                    "aiosmtpd exited ({status}): {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(
                std::time::Instant::now() < deadline,
                "aiosmtpd did not listen on {port} within 20s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        let (ctx, _) = context(dir.path());
        let sink = EmailSink::new(&smtp_config(port), &ctx).unwrap();
        sink.write(&[event("ann", "HELLO FROM FERRY", Some(1))])
            .await
            .unwrap();

        // The server stores the message before it answers 250, so it is there once `write` returned.
        let new: Vec<PathBuf> = std::fs::read_dir(maildir.join("new"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(new.len(), 1, "{new:?}");
        let text = std::fs::read_to_string(&new[0]).unwrap();
        assert!(text.contains("Subject: New message from ann"), "{text}");
        assert!(text.contains("Message: HELLO FROM FERRY"), "{text}");
        assert!(
            text.contains("ops@example.com") && text.contains("ann@example.com"),
            "{text}"
        );
    }
}
