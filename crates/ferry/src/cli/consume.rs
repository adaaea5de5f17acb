//! `ferry consume`: print a topic's records as JSON lines, read directly by partition and offset or as a
//! member of a stream group.
//!
//! - **Directly** (no `--group`): each partition (or `--partition`) from `--from`, in partition order;
//!   without `--follow` it stops at the end each partition had when the command started. Nothing is
//!   committed anywhere.
//! - **In a stream group** (`--group`): the command joins the group as a member, so several of them
//!   share the partitions; each batch is written and flushed to stdout, then committed, so what was
//!   committed was printed (at-least-once: a batch printed and not committed, on a crash or a rebalance,
//!   is delivered again). It leaves the group when it stops, whatever the reason.
//!
//! SIGINT and SIGTERM stop it cleanly (exit 0), as does a closed stdout (`ferry consume ... | head`).

use std::io::{self, BufWriter, Write};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use ferry_client::{Client, MAX_FETCH_RECORDS, PartitionInfo, Record, SeekTo, StreamConsumer};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::cli::json::JsonTopicRecord;
use crate::cli::remote::{self, ConnectArgs, Shutdown, write_json_line};

/// Where reading starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum From {
    Earliest,
    Latest,
    Offset(u64),
}

fn parse_from(s: &str) -> Result<From, String> {
    match s {
        "earliest" => Ok(From::Earliest),
        "latest" => Ok(From::Latest),
        _ => s
            .parse::<u64>()
            .map(From::Offset)
            .map_err(|_| format!("expected `earliest`, `latest` or an offset, got `{s}`")),
    }
}

/// Arguments of `ferry consume`.
#[derive(Debug, Args)]
pub struct ConsumeArgs {
    #[command(flatten)]
    conn: ConnectArgs,

    /// The topic to read.
    #[arg(long, value_name = "TOPIC")]
    topic: String,

    /// Read as a member of this stream group: members share the topic's partitions (run several
    /// `ferry consume --group G` to share the work), each commits what it printed after every batch, and
    /// the group continues where it left off (a new group: at the oldest record).
    #[arg(long, value_name = "GROUP", conflicts_with = "partition")]
    group: Option<String>,

    /// Where to start, in every partition read: `earliest` (the oldest record still stored; the default
    /// without --group), `latest` (only records published from now on) or an offset. With --group it
    /// first moves the group there, which the server allows only while the group has no members (no
    /// other `ferry consume --group` of it running).
    #[arg(long, value_name = "earliest|latest|OFFSET", value_parser = parse_from)]
    from: Option<From>,

    /// Stop after N records (with --group: exactly those N are committed).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    max: Option<u64>,

    /// Keep waiting for new records (stop with Ctrl-C). Without it, the command stops once caught up:
    /// at the end each partition had when it started, or with --group when a poll finds nothing new.
    #[arg(long)]
    follow: bool,

    /// Read only this partition (not with --group: the group assigns partitions).
    #[arg(long, value_name = "P")]
    partition: Option<u32>,
}

/// How long one long-poll of `--follow` waits for records before asking again.
const FOLLOW_WAIT: Duration = Duration::from_secs(30);
/// Most records one poll of a group asks for.
const POLL_RECORDS: u64 = 1000;
/// Bytes of keys and values one poll of a group asks for.
const POLL_BYTES: u64 = 1024 * 1024;

/// Runs `ferry consume`.
///
/// # Errors
/// A bad flag, the server refusing (an unknown topic, `--from` out of range, a seek while the group has
/// members) or not answering. Not a closed stdout (see [`crate::cli::is_broken_pipe`]) or a signal.
pub fn run(args: ConsumeArgs) -> Result<()> {
    let ConsumeArgs {
        conn,
        topic,
        group,
        from,
        max,
        follow,
        partition,
    } = args;
    let read = Read {
        topic,
        from,
        left: max.unwrap_or(u64::MAX),
        follow,
        partition,
    };
    remote::run(&conn, |client| async move {
        let mut shutdown = Shutdown::listen();
        let mut out = BufWriter::new(io::stdout().lock());
        match group {
            Some(group) => read_group(&client, &group, read, &mut out, &mut shutdown).await,
            None => read_partitions(&client, read, &mut out, &mut shutdown).await,
        }
    })
}

/// What to read, and how many records are still to print.
#[derive(Debug)]
struct Read {
    topic: String,
    from: Option<From>,
    left: u64,
    follow: bool,
    partition: Option<u32>,
}

fn write_records(out: &mut impl Write, records: &[Record]) -> io::Result<()> {
    for r in records {
        write_json_line(out, &JsonTopicRecord::new(r))?;
    }
    out.flush()
}

async fn read_partitions(
    client: &Client,
    mut read: Read,
    out: &mut impl Write,
    shutdown: &mut Shutdown,
) -> Result<()> {
    let info = client.describe_topic(&read.topic).await?;
    let partitions: Vec<PartitionInfo> = match read.partition {
        None => info.partitions,
        Some(p) => {
            let count = info.partitions.len();
            let one = info.partitions.into_iter().find(|i| i.partition == p);
            vec![one.ok_or_else(|| {
                anyhow!(
                    "--partition {p}: topic `{}` has {count} partition(s), 0..={}",
                    read.topic,
                    count.saturating_sub(1)
                )
            })?]
        }
    };
    let from = read.from.unwrap_or(From::Earliest);
    let start = |p: &PartitionInfo| match from {
        From::Earliest => p.start_offset,
        From::Latest => p.next_offset,
        From::Offset(o) => o,
    };
    let explicit = match from {
        From::Offset(o) => Some(o),
        _ => None,
    };
    if let Some(o) = explicit
        && let Some(p) = partitions
            .iter()
            .find(|p| o < p.start_offset || o > p.next_offset)
    {
        bail!(
            "--from {o}: out of range for partition {}: its oldest record is at offset {}, the next one \
             will be at {}",
            p.partition,
            p.start_offset,
            p.next_offset
        );
    }
    if read.follow {
        return follow_partitions(client, &read, &partitions, start, explicit, out, shutdown).await;
    }
    for p in &partitions {
        let (mut pos, end) = (start(p), p.next_offset);
        let mut explicit = explicit;
        while pos < end && read.left > 0 {
            let n = (end - pos).min(read.left).min(MAX_FETCH_RECORDS as u64) as usize;
            let records = tokio::select! {
                biased;
                () = shutdown.recv() => return Ok(()),
                r = fetch(client, &read.topic, p.partition, &mut pos, n, Duration::ZERO, explicit) => r?,
            };
            explicit = None;
            let Some(last) = records.last() else { break };
            pos = last.offset + 1;
            write_records(out, &records)?;
            read.left -= records.len() as u64;
        }
    }
    Ok(())
}

/// One long-polling reader per partition; batches are printed as they come, each partition's in order.
async fn follow_partitions(
    client: &Client,
    read: &Read,
    partitions: &[PartitionInfo],
    start: impl Fn(&PartitionInfo) -> u64,
    explicit: Option<u64>,
    out: &mut impl Write,
    shutdown: &mut Shutdown,
) -> Result<()> {
    let (tx, mut rx) = mpsc::channel::<Result<Vec<Record>>>(partitions.len().max(1) * 2);
    // Dropped on return, which stops every reader.
    let mut readers = JoinSet::new();
    for p in partitions {
        let (client, tx, topic) = (client.clone(), tx.clone(), read.topic.clone());
        let (partition, mut pos) = (p.partition, start(p));
        readers.spawn(async move {
            let mut explicit = explicit;
            loop {
                let batch = fetch(&client, &topic, partition, &mut pos, 1000, FOLLOW_WAIT, explicit).await;
                explicit = None;
                if let Ok(records) = &batch {
                    match records.last() {
                        Some(last) => pos = last.offset + 1,
                        None => continue,
                    }
                }
                let failed = batch.is_err();
                if tx.send(batch).await.is_err() || failed {
                    return;
                }
            }
        });
    }
    drop(tx);
    let mut left = read.left;
    loop {
        let batch = tokio::select! {
            biased;
            () = shutdown.recv() => return Ok(()),
            batch = rx.recv() => batch,
        };
        let Some(batch) = batch else { return Ok(()) };
        let records = batch?;
        let take = records.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        write_records(out, &records[..take])?;
        left -= take as u64;
        if left == 0 {
            return Ok(());
        }
    }
}

/// Fetches from `*pos`. When retention deleted the records there while the command ran, moves `*pos` to
/// the oldest record left (with a warning) and fetches from there; an offset given with `--from`
/// (`explicit`) that is out of range is an error about that flag.
async fn fetch(
    client: &Client,
    topic: &str,
    partition: u32,
    pos: &mut u64,
    n: usize,
    wait: Duration,
    explicit: Option<u64>,
) -> Result<Vec<Record>> {
    match client.fetch(topic, partition, *pos, n, wait).await {
        Err(e) if e.code() == Some("offset_out_of_range") => {
            if let Some(o) = explicit {
                return Err(anyhow::Error::new(e).context(format!("--from {o}: partition {partition}")));
            }
            let info = client.describe_topic(topic).await?;
            let start = info
                .partitions
                .iter()
                .find(|p| p.partition == partition)
                .map_or(0, |p| p.start_offset);
            if *pos >= start {
                return Err(e.into());
            }
            tracing::warn!(
                topic,
                partition,
                from = *pos,
                to = start,
                "records were deleted by retention while reading; continuing at the oldest record left"
            );
            *pos = start;
            Ok(client.fetch(topic, partition, *pos, n, wait).await?)
        }
        r => Ok(r?),
    }
}

async fn read_group(
    client: &Client,
    group: &str,
    read: Read,
    out: &mut impl Write,
    shutdown: &mut Shutdown,
) -> Result<()> {
    let mut consumer = client.stream_consumer(group, &read.topic);
    consumer.set_max_bytes(POLL_BYTES as usize);
    if let Some(from) = read.from {
        let (to, text) = match from {
            From::Earliest => (SeekTo::Earliest, "earliest".to_string()),
            From::Latest => (SeekTo::Latest, "latest".to_string()),
            From::Offset(o) => (SeekTo::Offset(o), o.to_string()),
        };
        consumer
            .seek(to)
            .await
            .with_context(|| format!("--from {text}: moving group `{group}`"))?;
    }
    let joined = consumer.join().await?;
    tracing::info!(group, topic = %read.topic, member = %joined.member_id, generation = joined.generation,
        partitions = ?joined.partitions, "joined the stream group");
    let result = poll_group(client, &mut consumer, read, out, shutdown).await;
    // Leaving hands the partitions to the other members at once, instead of after the session timeout.
    match consumer.leave().await {
        Ok(()) => {}
        // The session had ended already: nothing to leave.
        Err(e) if e.code() == Some("unknown_member") => {}
        Err(e) => tracing::warn!(group, "could not leave the stream group: {e}"),
    }
    result
}

async fn poll_group(
    client: &Client,
    consumer: &mut StreamConsumer,
    mut read: Read,
    out: &mut impl Write,
    shutdown: &mut Shutdown,
) -> Result<()> {
    let wait = if read.follow { FOLLOW_WAIT } else { Duration::ZERO };
    // Empty polls still allowed before the member counts as caught up; set at the first empty poll.
    let mut empty_polls_left: Option<u64> = None;
    loop {
        let n = read.left.min(POLL_RECORDS);
        let records = tokio::select! {
            biased;
            () = shutdown.recv() => return Ok(()),
            r = consumer.poll(n as usize, wait) => r?,
        };
        if records.is_empty() {
            if read.follow {
                continue;
            }
            let left = match empty_polls_left {
                Some(left) => left,
                None => polls_to_catch_up(client, consumer, n).await?,
            };
            if left == 0 {
                return Ok(());
            }
            empty_polls_left = Some(left - 1);
            continue;
        }
        empty_polls_left = None;
        write_records(out, &records)?;
        match consumer.commit(&records).await {
            Ok(()) => {}
            // The partitions moved to another member meanwhile: it starts from the last commit, so these
            // records will be delivered again there. Not an error of this member (at-least-once).
            Err(e)
                if matches!(
                    e.code(),
                    Some("stale_generation" | "partition_not_assigned" | "unknown_member")
                ) =>
            {
                tracing::warn!(
                    group = consumer.group(),
                    records = records.len(),
                    "commit refused after a rebalance; these records may be delivered again: {e}"
                );
            }
            Err(e) => return Err(e.into()),
        }
        read.left -= records.len() as u64;
        if read.left == 0 {
            return Ok(());
        }
    }
}

/// After an empty poll, how many more empty polls may pass before this member is caught up.
///
/// An empty poll alone does not say so: a stream subscription's filter drops records from a poll's
/// answer, so a poll may read past many records and return none although more follow. Such records stay
/// in the group's lag (nothing commits past them), so: no lag on the member's partitions means caught
/// up; else each empty poll reads at least `per_poll` records or `POLL_BYTES` bytes of every partition,
/// which bounds how many it takes to reach the end.
async fn polls_to_catch_up(client: &Client, consumer: &StreamConsumer, per_poll: u64) -> Result<u64> {
    let mine = consumer
        .membership()
        .map(|m| m.partitions.clone())
        .unwrap_or_default();
    let lag = consumer.lag().await?;
    let max_lag = lag
        .partitions
        .iter()
        .filter(|p| mine.contains(&p.partition))
        .map(|p| p.lag)
        .max()
        .unwrap_or(0);
    if max_lag == 0 {
        return Ok(0);
    }
    let topic = client.describe_topic(consumer.topic()).await?;
    let max_bytes = topic
        .partitions
        .iter()
        .filter(|p| mine.contains(&p.partition))
        .map(|p| p.size_bytes)
        .max()
        .unwrap_or(0);
    Ok(max_lag.div_ceil(per_poll.max(1)) + max_bytes.div_ceil(POLL_BYTES) + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_is_earliest_latest_or_an_offset() {
        assert_eq!(parse_from("earliest"), Ok(From::Earliest));
        assert_eq!(parse_from("latest"), Ok(From::Latest));
        assert_eq!(parse_from("7"), Ok(From::Offset(7)));
        let err = parse_from("soon").unwrap_err();
        assert!(
            err.contains("`earliest`, `latest` or an offset") && err.contains("`soon`"),
            "{err}"
        );
        assert!(parse_from("-1").is_err());
    }
}
