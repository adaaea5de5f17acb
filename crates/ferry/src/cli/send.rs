//! `ferry send`: publish one record, or one record per line of stdin, to a topic.
//!
//! Lines of stdin go through the client's batching [`Producer`] with one request in flight at a time, so
//! records reach each partition in input order and many lines share one request (and one fsync). Offsets
//! are printed in input order as their records are acknowledged. On the first line that fails, reading
//! stops; what was acknowledged before it is printed, the error names the line, and a record sent
//! before the failure was known that was stored anyway is reported on stderr: nothing stored goes
//! unreported.

use std::collections::HashSet;
use std::io::{self, BufRead, BufWriter, Write};

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use ferry_client::{Client, DeliveryFuture, ProduceRecord, ProducerConfig, RecordId};
use tokio::sync::{mpsc, watch};

use crate::cli::parse_header;
use crate::cli::remote::{self, ConnectArgs, Shutdown, name_flag, print_json_line, write_json_line};

/// Arguments of `ferry send`.
#[derive(Debug, Args)]
pub struct SendArgs {
    #[command(flatten)]
    conn: ConnectArgs,

    /// The topic to publish to.
    #[arg(long, value_name = "TOPIC")]
    topic: String,

    /// Key of every record sent; records with the same key go to the same partition.
    #[arg(long, value_name = "KEY")]
    key: Option<String>,

    /// A header of every record sent; repeat for more (each name at most once).
    #[arg(long = "header", value_name = "KEY=VALUE", value_parser = parse_header)]
    headers: Vec<(String, String)>,

    /// Publish to this partition, whatever the key.
    #[arg(long, value_name = "P")]
    partition: Option<u32>,

    /// Send each value as a JSON string, even when it parses as JSON (`42` is stored as "42").
    #[arg(long)]
    raw: bool,

    /// The record's value. Stored as JSON when it is one JSON document (`42`, `{"a": 1}`, `"x"`;
    /// whitespace around it is dropped), else as a JSON string of the text (`hello` is stored as
    /// "hello"). `-`: one record per line of stdin (without its `\n`), offsets printed in input order.
    #[arg(value_name = "VALUE|-", allow_hyphen_values = true)]
    value: String,
}

/// What every record of one `ferry send` shares.
#[derive(Debug)]
struct Template {
    key: Option<String>,
    headers: Vec<(String, String)>,
    partition: Option<u32>,
    raw: bool,
}

impl Template {
    fn new(args: &SendArgs) -> Result<Self> {
        let mut seen = HashSet::new();
        for (name, _) in &args.headers {
            if !seen.insert(name.as_str()) {
                bail!("--header `{name}` is given twice: a record has each header name at most once");
            }
        }
        Ok(Self {
            key: args.key.clone(),
            headers: args.headers.clone(),
            partition: args.partition,
            raw: args.raw,
        })
    }

    /// The record for one value; refused when it is not UTF-8 (values travel as JSON text).
    fn record(&self, value: &[u8]) -> Result<ProduceRecord, String> {
        let text = std::str::from_utf8(value)
            .map_err(|_| "not UTF-8 text, and values are sent as JSON text".to_string())?;
        let mut record = if self.raw {
            ProduceRecord::text(text)
        } else {
            ProduceRecord::json_bytes(value.to_vec()).unwrap_or_else(|_| ProduceRecord::text(text))
        };
        if let Some(key) = &self.key {
            record = record.key(key);
        }
        for (name, value) in &self.headers {
            record = record.header(name, value);
        }
        if let Some(p) = self.partition {
            record = record.partition(p);
        }
        Ok(record)
    }

    /// What the server counts against a topic's `max_record_bytes`.
    fn size(&self, record: &ProduceRecord) -> usize {
        record.value().len()
            + self.key.as_ref().map_or(0, String::len)
            + self.headers.iter().map(|(n, v)| n.len() + v.len()).sum::<usize>()
    }
}

/// Runs `ferry send`.
///
/// # Errors
/// A bad flag, the server refusing a record (naming the stdin line), the server not answering, stdin
/// not readable.
pub fn run(args: SendArgs) -> Result<()> {
    let template = Template::new(&args)?;
    remote::run(&args.conn, |client| async move {
        if args.value == "-" {
            send_lines(client, args.topic, template).await
        } else {
            let record = template
                .record(args.value.as_bytes())
                .map_err(|e| anyhow!("VALUE: {e}"))?;
            let at = client
                .publish(&args.topic, &[record])
                .await
                .map_err(|e| name_flag(e, &[("records[0].partition", "--partition")]))?;
            for at in at {
                print_json_line(&at)?;
            }
            Ok(())
        }
    })
}

/// One stdin line on its way: sent (its outcome to come) or refused before sending.
enum Item {
    Sent(u64, DeliveryFuture),
    Refused(u64, anyhow::Error),
}

/// Most records whose outcome is awaited at once: bounds memory when stdin is faster than the server.
const MAX_PENDING: usize = 64 * 1024;

async fn send_lines(client: Client, topic: String, template: Template) -> Result<()> {
    // Asked first: an unknown topic fails before stdin is read, and a line too large for the topic is
    // refused by number, before it could fail the lines batched with it.
    // A ferry whose engine cannot describe topics (501) checks each batch instead.
    let info = match client.describe_topic(&topic).await {
        Ok(info) => Some(info),
        Err(e) if e.code() == Some("engine_unsupported") => None,
        Err(e) => return Err(e.into()),
    };
    if let Some(info) = &info
        && let Some(p) = template.partition
        && p as usize >= info.partitions.len()
    {
        bail!(
            "--partition {p}: topic `{topic}` has {} partition(s), 0..={}",
            info.partitions.len(),
            info.partitions.len().saturating_sub(1)
        );
    }
    let max_record_bytes = info.and_then(|i| i.config.max_record_bytes).map(|b| b as usize);

    let (line_tx, line_rx) = mpsc::channel(1024);
    std::thread::Builder::new()
        .name("ferry-stdin".into())
        .spawn(move || read_lines(&line_tx))
        .context("starting the stdin reader")?;
    let (item_tx, item_rx) = mpsc::channel(MAX_PENDING);
    let (stop_tx, stop_rx) = watch::channel(false);
    // One request in flight: batches of a topic are stored in the order they were sent.
    let producer = client.producer_with(ProducerConfig::default().max_in_flight(1));
    let feeder = tokio::spawn(async move {
        let mut shutdown = Shutdown::listen();
        let mut stop = stop_rx;
        let mut lines = line_rx;
        let mut line_no = 0u64;
        loop {
            let line = tokio::select! {
                biased;
                _ = stop.changed() => break,
                () = shutdown.recv() => break,
                line = lines.recv() => match line {
                    Some(line) => line,
                    None => break,
                },
            };
            line_no += 1;
            let item = match line {
                Err(e) => Item::Refused(line_no, anyhow::Error::new(e).context("reading stdin")),
                Ok(line) => match template.record(&line) {
                    Err(e) => Item::Refused(line_no, anyhow!(e)),
                    Ok(record) => match max_record_bytes.filter(|max| template.size(&record) > *max) {
                        Some(max) => Item::Refused(
                            line_no,
                            anyhow!(
                                "the record has {} bytes (value, key and headers), more than topic `{topic}` \
                                 accepts (max_record_bytes {max})",
                                template.size(&record)
                            ),
                        ),
                        None => Item::Sent(line_no, producer.enqueue(&topic, record).await),
                    },
                },
            };
            let refused = matches!(item, Item::Refused(..));
            if item_tx.send(item).await.is_err() || refused {
                break;
            }
        }
        // Sends what is still batched; every delivery handed out resolves.
        producer.close().await;
    });
    let printed = print_offsets(item_rx, &stop_tx).await;
    feeder.await.context("the stdin feeder failed")?;
    printed
}

/// Reads stdin line by line (blocking, on its own thread) until it ends or nobody listens.
fn read_lines(tx: &mpsc::Sender<io::Result<Vec<u8>>>) {
    let mut input = io::stdin().lock();
    loop {
        let mut line = Vec::new();
        match input.read_until(b'\n', &mut line) {
            Ok(0) => return,
            Ok(_) => {
                if line.last() == Some(&b'\n') {
                    line.pop();
                }
                if tx.blocking_send(Ok(line)).is_err() {
                    return;
                }
            }
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                return;
            }
        }
    }
}

/// Prints each line's partition and offset in input order as they are acknowledged. After the first
/// failure (or a closed stdout) it asks the feeder to stop and keeps waiting for what was sent, so that
/// it can say what was stored anyway.
async fn print_offsets(mut items: mpsc::Receiver<Item>, stop: &watch::Sender<bool>) -> Result<()> {
    let mut out = BufWriter::new(io::stdout().lock());
    let mut failed: Option<(u64, anyhow::Error)> = None;
    let mut closed: Option<io::Error> = None;
    let mut stored_after = 0u64;
    loop {
        let item = match items.try_recv() {
            Ok(item) => item,
            Err(mpsc::error::TryRecvError::Empty) => {
                // Nothing waiting: show what we have before blocking, so offsets appear as records land.
                flush(&mut out, &mut closed, stop);
                match items.recv().await {
                    Some(item) => item,
                    None => break,
                }
            }
            Err(mpsc::error::TryRecvError::Disconnected) => break,
        };
        let (line_no, outcome) = match item {
            Item::Sent(line_no, mut delivery) => {
                let outcome = tokio::select! {
                    biased;
                    outcome = &mut delivery => outcome,
                    () = std::future::ready(()) => {
                        flush(&mut out, &mut closed, stop);
                        delivery.await
                    }
                };
                (line_no, outcome.map_err(anyhow::Error::from))
            }
            Item::Refused(line_no, e) => (line_no, Err(e)),
        };
        match (outcome, &failed) {
            (Ok(at), None) => {
                if closed.is_none()
                    && let Err(e) = write_json_line(&mut out, &at)
                {
                    closed = Some(e);
                    stop.send_replace(true);
                }
            }
            (Ok(at), Some((first, _))) => {
                stored_after += 1;
                report_stored_after(line_no, at, *first);
            }
            (Err(e), None) => {
                failed = Some((line_no, e));
                stop.send_replace(true);
            }
            (Err(_), Some(_)) => {}
        }
    }
    flush(&mut out, &mut closed, stop);
    if let Some((line_no, e)) = failed {
        let after = if stored_after > 0 {
            format!(
                "{stored_after} line(s) after it were stored anyway, each reported above; the others were not"
            )
        } else if e
            .downcast_ref::<ferry_client::Error>()
            .is_some_and(outcome_unknown)
        {
            "whether it and the lines after it were stored is not known: the request failed without \
             a refusal"
                .to_string()
        } else {
            "it and the lines after it were not".to_string()
        };
        return Err(e.context(format!(
            "stdin line {line_no} (the lines before it were stored and their offsets printed; {after})"
        )));
    }
    match closed {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

fn flush(out: &mut impl Write, closed: &mut Option<io::Error>, stop: &watch::Sender<bool>) {
    if closed.is_none()
        && let Err(e) = out.flush()
    {
        *closed = Some(e);
        stop.send_replace(true);
    }
}

/// A record sent before an earlier line's failure was known, and stored: said, so it is not lost track of.
fn report_stored_after(line_no: u64, at: RecordId, failed_line: u64) {
    tracing::warn!(
        line = line_no,
        partition = at.partition,
        offset = at.offset,
        failed_line,
        "stdin line {line_no} was stored (partition {}, offset {}) although line {failed_line} failed",
        at.partition,
        at.offset
    );
}

/// True when a failed send may still have been stored: no answer came, or the server failed (5xx)
/// rather than refused.
fn outcome_unknown(e: &ferry_client::Error) -> bool {
    match e {
        ferry_client::Error::Transport { .. } => true,
        ferry_client::Error::Api(api) => api.status >= 500,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(raw: bool) -> Template {
        Template {
            key: Some("k".into()),
            headers: vec![("h".into(), "v".into())],
            partition: None,
            raw,
        }
    }

    #[test]
    fn values_are_json_when_they_parse_else_strings() {
        let value = |raw, v: &str| template(raw).record(v.as_bytes()).unwrap().value().clone();
        assert_eq!(&value(false, " {\"a\": 1} ")[..], b"{\"a\": 1}");
        assert_eq!(&value(false, "42")[..], b"42");
        assert_eq!(&value(false, "\"x\"")[..], b"\"x\"");
        assert_eq!(&value(false, "hello")[..], b"\"hello\"");
        assert_eq!(&value(false, "")[..], b"\"\"");
        assert_eq!(&value(false, "{} {}")[..], b"\"{} {}\"");
        assert_eq!(&value(true, "42")[..], b"\"42\"");
        assert!(template(false).record(&[0xff]).unwrap_err().contains("UTF-8"));
        let r = template(false).record(b"42").unwrap();
        assert_eq!(template(false).size(&r), 2 + 1 + 2);
    }
}
