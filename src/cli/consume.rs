//! `runnel consume`: prints the records of a topic, one per line, as raw values or JSON objects.
//!
//! Without `--group` it reads the assigned partitions (all, or `--partition`) from `--offset`,
//! the beginning, or the end. With `--group` it joins the consumer group, resumes from the
//! group's committed offsets (earliest or latest where there are none) and commits as it goes
//! and when it stops. It stops after `--max-messages`, after `--timeout` without a record, on
//! Ctrl-C, or when stdout is closed (`| head`); in every case it commits exactly what it printed.

use super::duration_arg;
use super::output::{self, is_broken_pipe};
use anyhow::{Result, bail};
use clap::{Args, ValueEnum};
use runnel_log::{
    ConsumerConfig, ConsumerRecord, LogConsumer, LogError, OffsetReset, SharedLogClient,
    TopicPartition,
};
use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::time::Duration;

#[derive(Debug, Args)]
pub struct ConsumeArgs {
    /// The topic.
    topic: String,
    /// Start from the first record (with --group: where the group has no committed offset).
    #[arg(long)]
    from_beginning: bool,
    /// Start at this offset of --partition.
    #[arg(long, value_name = "N")]
    offset: Option<u64>,
    /// Read only this partition.
    #[arg(long, value_name = "P")]
    partition: Option<u32>,
    /// Read as a member of this consumer group, committing its progress.
    #[arg(long, value_name = "G")]
    group: Option<String>,
    /// Stop after this many records.
    #[arg(long, value_name = "N")]
    max_messages: Option<u64>,
    /// Stop when no record arrived for this long (e.g. 5s); default: run until Ctrl-C.
    #[arg(long, value_name = "DURATION")]
    timeout: Option<String>,
    /// How each record is printed.
    #[arg(long, value_enum, default_value_t = Format::Value)]
    format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// The value's bytes as they are.
    Value,
    /// {"partition":..,"offset":..,"timestamp":..,"key":..,"value":..}, key and value as strings.
    Json,
}

/// How long one poll waits when there is no --timeout (it is repeated until Ctrl-C).
const IDLE_POLL: Duration = Duration::from_secs(3600);

pub async fn run(log: &SharedLogClient, args: ConsumeArgs) -> Result<()> {
    let timeout = args
        .timeout
        .as_deref()
        .map(|t| duration_arg("--timeout", t))
        .transpose()?;
    if args.offset.is_some() && args.partition.is_none() {
        bail!("--offset needs --partition: an offset is a position in one partition");
    }
    if args.offset.is_some() && args.from_beginning {
        bail!("--offset and --from-beginning both say where to start; use one");
    }
    if args.group.is_some() && args.partition.is_some() {
        bail!(
            "--group and --partition cannot be combined: the group assigns the partitions; drop one of them"
        );
    }
    let config = ConsumerConfig {
        group_id: args.group.clone(),
        client_id: "runnel-consume".into(),
        auto_offset_reset: if args.from_beginning {
            OffsetReset::Earliest
        } else {
            OffsetReset::Latest
        },
        max_partition_fetch_bytes: 4 << 20,
        ..Default::default()
    };
    let Some(partitions) = log.partition_count(&args.topic).await? else {
        return Err(LogError::UnknownTopic(args.topic.clone()).into());
    };
    let mut consumer = log.consumer(config);
    match &args.group {
        Some(_) => consumer.subscribe(&[&args.topic])?,
        None => assign(log, &mut *consumer, partitions, &args).await?,
    }

    let stdout = std::io::stdout();
    let mut out = BufWriter::with_capacity(256 << 10, stdout.lock());
    let mut count = 0u64;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let polled: Result<()> = loop {
        if args.max_messages.is_some_and(|max| count >= max) {
            break Ok(());
        }
        let records = tokio::select! {
            records = consumer.poll(timeout.unwrap_or(IDLE_POLL)) => records,
            signal = &mut ctrl_c => break signal.map_err(anyhow::Error::from),
        };
        let records = match records {
            Ok(r) => r,
            Err(e) => break Err(e.into()),
        };
        if records.is_empty() {
            if timeout.is_some() {
                break Ok(());
            }
            continue;
        }
        let room = args.max_messages.map_or(u64::MAX, |max| max - count);
        let (printed, written) = print(&mut out, &records, room, args.format);
        count += printed as u64;
        if printed < records.len() {
            // Stopped inside the batch: move back so the commit covers only what was printed.
            rewind(&mut *consumer, &records[printed..])?;
        }
        match written.and_then(|()| out.flush()) {
            Ok(()) => {}
            Err(e) if is_broken_pipe(&e) => break Ok(()),
            Err(e) => break Err(e.into()),
        }
    };
    let closed = async {
        if args.group.is_some() {
            let positions = consumer
                .assignment()
                .into_iter()
                .filter_map(|tp| consumer.position(&tp).map(|p| (tp, p)))
                .collect();
            consumer.commit_offsets(positions).await?;
        }
        consumer.close().await
    }
    .await;
    eprintln!("consumed {}", output::count(count, "record"));
    polled?;
    Ok(closed?)
}

/// Without a group: assigns --partition or every partition and seeks to where reading starts.
async fn assign(
    log: &SharedLogClient,
    consumer: &mut dyn LogConsumer,
    count: u32,
    args: &ConsumeArgs,
) -> Result<()> {
    let tp = |p: u32| TopicPartition::new(&args.topic, p);
    let partitions: Vec<TopicPartition> = match args.partition {
        Some(p) if p < count => vec![tp(p)],
        Some(p) => {
            return Err(LogError::UnknownPartition {
                topic: args.topic.clone(),
                partition: p,
                partitions: count,
            }
            .into());
        }
        None => (0..count).map(tp).collect(),
    };
    consumer.assign(partitions.clone())?;
    let ends = log.end_offsets(&partitions).await?;
    match (args.offset, args.partition) {
        (Some(offset), Some(p)) => {
            let end = ends[0];
            if offset > end {
                bail!(
                    "--offset {offset} is out of range for {}: it ends at offset {end}; pick one below that or use --from-beginning",
                    tp(p)
                );
            }
            consumer.seek(&tp(p), offset)?;
        }
        _ if args.from_beginning => consumer.seek_to_beginning(),
        _ => {
            for (tp, end) in partitions.iter().zip(ends) {
                consumer.seek(tp, end)?;
            }
        }
    }
    Ok(())
}

/// Writes up to `room` records; returns how many were written, and the write error if one
/// stopped it.
fn print(
    out: &mut impl Write,
    records: &[ConsumerRecord],
    room: u64,
    format: Format,
) -> (usize, std::io::Result<()>) {
    let room = usize::try_from(room).unwrap_or(usize::MAX);
    for (written, r) in records.iter().take(room).enumerate() {
        if let Err(e) = print_one(out, r, format) {
            return (written, Err(e));
        }
    }
    (records.len().min(room), Ok(()))
}

fn print_one(out: &mut impl Write, r: &ConsumerRecord, format: Format) -> std::io::Result<()> {
    let rec = &r.record;
    match format {
        Format::Value => {
            out.write_all(rec.value.as_deref().unwrap_or_default())?;
            out.write_all(b"\n")
        }
        Format::Json => {
            write!(
                out,
                r#"{{"partition":{},"offset":{},"timestamp":{},"key":"#,
                r.partition, rec.offset, rec.timestamp
            )?;
            json_string(out, rec.key.as_deref())?;
            out.write_all(br#","value":"#)?;
            json_string(out, rec.value.as_deref())?;
            out.write_all(b"}\n")
        }
    }
}

/// Writes bytes as a JSON string (invalid UTF-8 replaced), or `null`.
fn json_string(out: &mut impl Write, bytes: Option<&[u8]>) -> std::io::Result<()> {
    match bytes {
        None => out.write_all(b"null"),
        Some(b) => serde_json::to_writer(&mut *out, &String::from_utf8_lossy(b))
            .map_err(std::io::Error::from),
    }
}

/// Seeks each partition back to its first record in `unprinted`.
fn rewind(consumer: &mut dyn LogConsumer, unprinted: &[ConsumerRecord]) -> Result<()> {
    let mut first = BTreeMap::new();
    for r in unprinted {
        first
            .entry(TopicPartition::new(&*r.topic, r.partition))
            .or_insert(r.record.offset);
    }
    for (tp, offset) in first {
        consumer.seek(&tp, offset)?;
    }
    Ok(())
}
