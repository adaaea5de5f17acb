//! `ferry propagate`: POST events from a file to an HTTP endpoint, one every interval, printing each
//! answer: the event propagator ferry replaces. Its `.env` variables (`INPUT_FILE_LOCATION`,
//! `WAIT_SECONDS`, `ENDPOINT`) are the defaults of the argument and flags.
//!
//! An endpoint that cannot be reached is reported on stderr and the next event is tried at the next
//! tick, so a propagator started before its consumer catches up once the consumer is up. An HTTP error
//! status is an answer like any other: its body is printed.

use std::error::Error as _;
use std::ffi::OsString;
use std::io::{self, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, ValueEnum};
use ferry_pipeline::config::Order;
use ferry_pipeline::sources::generate::{Generator, load_events};
use reqwest::Url;
use serde_json::Value;
use tokio::time::MissedTickBehavior;

use crate::cli::remote::Shutdown;

/// Where events go without `--to` or `ENDPOINT` (the propagator's default consumer).
const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:4444/event";

/// Time between two events without `--every` or `WAIT_SECONDS`.
const DEFAULT_EVERY: Duration = Duration::from_secs(5);

/// How long one send may take, connecting included, before it counts as a failure: without a bound, an
/// endpoint that accepts connections but never answers would stop the propagator for good.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Arguments of `ferry propagate`. An empty environment variable counts as unset (the propagator's
/// `.env` ships `INPUT_FILE_LOCATION = ''`).
#[derive(Debug, Args)]
pub struct PropagateArgs {
    /// The events to send: a JSON array of events, or one JSON event per line.
    #[arg(value_name = "FILE", env = "INPUT_FILE_LOCATION")]
    file: Option<OsString>,

    /// Time between two sends: a number of seconds (`5`, `0.5`) or a duration (`5s`, `250ms`)
    /// [default: 5s]. The first event is sent at once.
    #[arg(long, value_name = "DURATION", env = "WAIT_SECONDS")]
    every: Option<String>,

    /// Where each event is POSTed as JSON (`host:port/path` alone means http)
    /// [default: http://127.0.0.1:4444/event].
    #[arg(long, value_name = "URL", env = "ENDPOINT")]
    to: Option<String>,

    /// Stop after N sends, failed ones included; without it, run until Ctrl-C or SIGTERM.
    #[arg(long, value_name = "N")]
    count: Option<u64>,

    /// Which event is sent next.
    #[arg(long, value_enum, value_name = "ORDER", default_value_t = OrderArg::Random)]
    order: OrderArg,
}

/// `--order`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum OrderArg {
    /// One at random each time (the propagator's way).
    Random,
    /// In file order, starting over after the last.
    Sequential,
}

impl From<OrderArg> for Order {
    fn from(order: OrderArg) -> Self {
        match order {
            OrderArg::Random => Order::Random,
            OrderArg::Sequential => Order::Sequential,
        }
    }
}

/// Sends so far.
#[derive(Debug, Default)]
struct Tally {
    /// Answered, whatever the status.
    sent: u64,
    /// Not answered: no connection, a timeout, a broken response.
    failed: u64,
}

/// Runs `ferry propagate`: sends events until `--count` sends were made or a signal came, then prints
/// `propagate: sent N, failed M` on stderr. Each answer's body is printed on stdout followed by `\n`;
/// each failure is reported on stderr and does not stop the run.
///
/// # Errors
/// No FILE, a bad `--every` or `--to`, an events file that cannot be read or holds no event, stdout
/// closed.
pub fn run(args: PropagateArgs) -> Result<()> {
    let file = args
        .file
        .filter(|f| !f.is_empty())
        .map(PathBuf::from)
        .ok_or_else(|| {
            anyhow!("FILE: give the events file as an argument or in INPUT_FILE_LOCATION (e.g. in .env)")
        })?;
    let every = match args.every.filter(|e| !e.trim().is_empty()) {
        Some(text) => parse_every(&text).map_err(|e| anyhow!("--every (or WAIT_SECONDS) `{text}`: {e}"))?,
        None => DEFAULT_EVERY,
    };
    let to = args
        .to
        .filter(|t| !t.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned());
    let url = endpoint(&to)?;
    // Read before the first tick, so a bad file fails at once rather than after a wait.
    let mut generator = Generator::from_events(load_events(&file)?, args.order.into());
    let client = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .context("starting the HTTP client")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let mut tally = Tally::default();
    let result = runtime.block_on(propagate(
        &client,
        (&url, &to),
        &mut generator,
        every,
        args.count,
        &mut tally,
    ));
    // Also after an error (stdout closed): what was sent is worth knowing.
    eprintln!("propagate: sent {}, failed {}", tally.sent, tally.failed);
    result
}

/// The send loop; `tally` counts as it goes so the caller can sum up whatever ends it.
async fn propagate(
    client: &reqwest::Client,
    (url, shown): (&Url, &str),
    generator: &mut Generator,
    every: Duration,
    count: Option<u64>,
    tally: &mut Tally,
) -> Result<()> {
    let mut shutdown = Shutdown::listen();
    // The first tick is at once; `Delay`: after a slow send the next one waits a full interval, rather
    // than a burst catching up on missed ticks.
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut attempts = 0u64;
    while count.is_none_or(|max| attempts < max) {
        tokio::select! {
            biased;
            () = shutdown.recv() => return Ok(()),
            _ = ticker.tick() => {}
        }
        attempts += 1;
        let event = generator.next_event();
        let outcome = tokio::select! {
            biased;
            // A send cut short by a signal counts as neither sent nor failed: its outcome is unknown.
            () = shutdown.recv() => return Ok(()),
            outcome = send(client, url, &event) => outcome,
        };
        match outcome {
            Ok(body) => {
                tally.sent += 1;
                print_body(&body).context("writing to stdout")?;
            }
            Err(e) => {
                tally.failed += 1;
                eprintln!(
                    "propagate: {shown} unreachable ({} failures so far): {}",
                    tally.failed,
                    describe(e)
                );
            }
        }
    }
    Ok(())
}

/// POSTs `event` as JSON; the answer's body, whatever the status.
async fn send(client: &reqwest::Client, url: &Url, event: &Value) -> Result<bytes::Bytes, reqwest::Error> {
    let response = client.post(url.clone()).json(event).send().await?;
    response.bytes().await
}

/// The body as it came, then `\n`, as the propagator's `print(response.text)` did.
fn print_body(body: &[u8]) -> io::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(body)?;
    out.write_all(b"\n")?;
    out.flush()
}

/// The error and its causes on one line; the URL is left out (the message names it already).
fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // Some errors print their cause in their own message: said once is enough.
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// `--every`: a number of seconds (`5`, `0.5`, as `WAIT_SECONDS` was) or a humantime duration (`5s`).
fn parse_every(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let every = match text.parse::<f64>() {
        Ok(secs) => Duration::try_from_secs_f64(secs)
            .map_err(|_| "expected a number of seconds of 0 or more".to_string())?,
        Err(_) => humantime::parse_duration(text)
            .map_err(|e| format!("expected seconds (`5`) or a duration (`5s`, `250ms`): {e}"))?,
    };
    if every.is_zero() {
        return Err("must be more than 0".into());
    }
    Ok(every)
}

/// `--to`: an http(s) URL; without a scheme, http.
fn endpoint(text: &str) -> Result<Url> {
    let text = text.trim();
    let full = if text.contains("://") {
        text.to_owned()
    } else {
        format!("http://{text}")
    };
    let url = Url::parse(&full).with_context(|| format!("--to (or ENDPOINT) `{text}`: not a URL"))?;
    if !matches!(url.scheme(), "http" | "https") {
        bail!("--to (or ENDPOINT) `{text}`: expected an http:// or https:// URL");
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_is_seconds_or_a_duration() {
        assert_eq!(parse_every("5"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_every(" 0.25 "), Ok(Duration::from_millis(250)));
        assert_eq!(parse_every("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_every("10ms"), Ok(Duration::from_millis(10)));
        assert_eq!(parse_every("1m 30s"), Ok(Duration::from_secs(90)));
        for bad in ["0", "0s", "-1", "soon", "inf", "NaN"] {
            assert!(parse_every(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn endpoints_are_http_urls() {
        assert_eq!(endpoint("http://h:1/event").unwrap().as_str(), "http://h:1/event");
        assert_eq!(
            endpoint("127.0.0.1:4444/event").unwrap().as_str(),
            "http://127.0.0.1:4444/event"
        );
        assert!(endpoint("ftp://h/x").is_err());
        assert!(endpoint("http://").is_err());
    }
}
