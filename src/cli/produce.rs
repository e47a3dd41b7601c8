//! `runnel produce`: sends one record per input line (stdin or `--file`) to a topic.
//!
//! A reader thread reads the input with one reused line buffer, strips `\n` / `\r\n`, takes the
//! key from a JSON field when `--key-field` is given, and hands the lines over in chunks. On the
//! embedded log the async side encodes each chunk into one log batch per partition and the
//! [`Producer`] appends them whole, their deliveries tracked batch by batch without awaiting
//! each (see [`Deliveries`]); over a broker the lines go record by record. An empty line is a record with an empty value. A line whose key cannot be
//! read stops the command: what was sent before it is flushed and counted, and the error names
//! the input and the line number.

use super::deliveries::{CountedDeliveries, Deliveries, Outcome};
use super::output;
use super::{duration_arg, usize_arg};
use anyhow::{Context, Result, bail};
use clap::Args;
use runnel_log::batch::BatchBuilder;
use runnel_log::partitioner::partition_for_key;
use runnel_log::{
    Compression, Log, LogError, LogProducer, Producer, ProducerConfig, ProducerRecord,
    SharedLogClient,
};
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::borrow::Cow;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tokio::sync::mpsc;

#[derive(Debug, Args)]
pub struct ProduceArgs {
    /// The topic.
    topic: String,
    /// Read the records from this file instead of stdin.
    #[arg(long, value_name = "PATH")]
    file: Option<PathBuf>,
    /// Key each record by this field of its JSON line: a string gives its text, a number or
    /// boolean its JSON text.
    #[arg(long, value_name = "FIELD")]
    key_field: Option<String>,
    /// Send every record to this partition instead of choosing one by key.
    #[arg(long, value_name = "N")]
    partition: Option<u32>,
    /// Largest batch the producer appends at once (e.g. 1MiB).
    #[arg(long, value_name = "SIZE")]
    batch_size: Option<String>,
    /// How long a batch waits for more records before it is sent (e.g. 5ms).
    #[arg(long, value_name = "DURATION")]
    linger: Option<String>,
    /// Compress the batches: none, gzip, snappy, lz4 or zstd (Kafka's compression.type).
    #[arg(long, value_name = "CODEC", default_value = "none")]
    compression: Compression,
    /// Start at this line of the input (1 = the first), skipping the lines before it: to
    /// resume where a failed run says it stopped.
    #[arg(long, value_name = "LINE", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    from_line: u64,
}

/// Input bytes read in one go.
const READ_BUFFER: usize = 1 << 20;
/// A chunk is handed over at this many lines or bytes, or when the input has nothing buffered.
const CHUNK_LINES: usize = 8192;
const CHUNK_BYTES: usize = 1 << 20;

/// Lines read by the reader thread: values and keys back to back in `data`.
#[derive(Default)]
struct Chunk {
    data: Vec<u8>,
    lines: Vec<Line>,
    /// Input bytes these lines took, line ends included.
    input_bytes: u64,
}

struct Line {
    value: Range<usize>,
    key: Option<Range<usize>>,
}

enum Input {
    Lines(Chunk),
    /// The input could not be read or a key not found; no later line is sent.
    Failed(String),
}

/// Where the records go.
pub enum Target<'a> {
    /// The embedded log: each record's delivery is tracked, so a failure names how many were lost.
    Embedded(&'a Log),
    /// Any log client (a broker with `--bootstrap`): the producer's per-partition counts say
    /// which records were stored.
    Client(&'a SharedLogClient),
}

/// The producer of a [`Target`].
enum Sending {
    /// The producer and, for encoding batches, its batch size and the topic's partitions.
    Embedded {
        producer: Producer,
        deliveries: Deliveries,
        batch_size: usize,
        partitions: u32,
    },
    Client(Box<dyn LogProducer>, CountedDeliveries),
}

impl Sending {
    /// Sends the chunk's lines as records of `topic`, to `partition` or by key.
    async fn send_chunk(
        &mut self,
        topic: &str,
        partition: Option<u32>,
        chunk: &Chunk,
    ) -> Result<(), LogError> {
        match self {
            Self::Embedded {
                producer,
                deliveries,
                batch_size,
                partitions,
            } => {
                let batches = encode_batches(*batch_size, *partitions, partition, chunk);
                let first = deliveries.reserve(chunk.lines.len() as u64);
                for b in batches {
                    let sent = producer.send_batch(topic, b.partition, b.builder).await?;
                    let Some(delivery) = sent else { continue };
                    deliveries
                        .push_batch(first + b.first, first + b.last, b.records, delivery)
                        .await;
                }
            }
            Self::Client(p, deliveries) => {
                for line in &chunk.lines {
                    let key = line.key.clone().map(|k| &chunk.data[k]);
                    let partition = deliveries.partition_for(partition, key);
                    let record = ProducerRecord {
                        topic,
                        partition: Some(partition),
                        key,
                        value: Some(&chunk.data[line.value.clone()]),
                        headers: &[],
                        timestamp: None,
                    };
                    p.send(record).await?;
                    deliveries.note_sent(partition);
                }
            }
        }
        Ok(())
    }

    /// Whether a partition refused a batch (later ones of that partition fail as well).
    fn has_failed(&mut self) -> bool {
        match self {
            Self::Embedded { producer, .. } => producer.has_failed(),
            Self::Client(p, deliveries) => {
                deliveries.prune(&**p);
                p.has_failed()
            }
        }
    }

    async fn finish(self) -> Outcome {
        match self {
            Self::Embedded {
                producer,
                deliveries,
                ..
            } => deliveries.finish(&producer).await,
            Self::Client(p, deliveries) => deliveries.finish(&*p).await,
        }
    }
}

pub async fn run(target: Target<'_>, args: ProduceArgs) -> Result<()> {
    let partitions = match target {
        Target::Embedded(log) => {
            let topic = log.topic(&args.topic)?;
            if let Some(p) = args.partition {
                topic.partition(p)?;
            }
            topic.partition_count()
        }
        Target::Client(client) => {
            let Some(count) = client.partition_count(&args.topic).await? else {
                return Err(LogError::UnknownTopic(args.topic.clone()).into());
            };
            if let Some(p) = args.partition.filter(|&p| p >= count) {
                return Err(LogError::UnknownPartition {
                    topic: args.topic.clone(),
                    partition: p,
                    partitions: count,
                }
                .into());
            }
            count
        }
    };
    let mut config = ProducerConfig {
        compression: args.compression,
        ..Default::default()
    };
    if let Some(s) = &args.batch_size {
        config.batch_size = usize_arg("--batch-size", s)?;
    }
    if let Some(s) = &args.linger {
        config.linger = duration_arg("--linger", s)?;
    }
    let (source, name, len) = open_input(args.file.as_deref())?;
    let progress = match len {
        Some(len) => output::bar(
            len,
            "{spinner} [{bar:30}] {binary_bytes}/{binary_total_bytes} ({binary_bytes_per_sec}, {eta} left)",
            "",
        ),
        None => output::spinner("{spinner} {human_pos} records ({elapsed})", ""),
    };
    let (tx, mut rx) = mpsc::channel(16);
    let key_field = args.key_field.clone();
    let from_line = args.from_line;
    std::thread::Builder::new()
        .name("runnel-produce-input".into())
        .spawn(move || {
            read_input(
                BufReader::with_capacity(READ_BUFFER, source),
                &name,
                key_field.as_deref(),
                from_line,
                &tx,
            )
        })
        .context("cannot start the input reader thread")?;

    let started = Instant::now();
    let mut producer = match target {
        Target::Embedded(log) => Sending::Embedded {
            batch_size: config.batch_size,
            producer: Producer::new(log.clone(), config),
            deliveries: Deliveries::starting_at(args.from_line),
            partitions,
        },
        Target::Client(client) => Sending::Client(
            client.producer(config),
            CountedDeliveries::starting_at(&args.topic, partitions, args.from_line),
        ),
    };
    let mut input_bytes = 0;
    let mut stopped = None;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let input = tokio::select! {
            input = rx.recv() => input,
            signal = &mut ctrl_c => {
                stopped = Some(match signal {
                    Ok(()) => "interrupted".to_string(),
                    Err(e) => format!("cannot listen for Ctrl-C: {e}"),
                });
                break;
            }
        };
        match input {
            None => break,
            Some(Input::Failed(reason)) => {
                stopped = Some(reason);
                break;
            }
            Some(Input::Lines(chunk)) => {
                let sent = producer.send_chunk(&args.topic, args.partition, &chunk);
                if let Err(e) = sent.await {
                    stopped = Some(e.to_string());
                    break;
                }
                input_bytes += chunk.input_bytes;
                progress.inc(match len {
                    Some(_) => chunk.input_bytes,
                    None => chunk.lines.len() as u64,
                });
                if producer.has_failed() {
                    // Stop at the first failure: the report below says where to resume.
                    break;
                }
            }
        }
    }
    let outcome = producer.finish().await;
    progress.finish_and_clear();
    let resume = resume_report(&outcome, &args);
    let stored = outcome.stored;
    let summary = output::throughput(
        stored,
        "record",
        &args.topic,
        input_bytes,
        started.elapsed(),
    );
    eprintln!("produced {summary}");
    match (stopped, outcome.into_result()) {
        (None, Ok(_)) => Ok(()),
        (None, Err(lost)) => match resume {
            Some(resume) => Err(anyhow::anyhow!("{lost:#}\n{resume}")),
            None => Err(lost),
        },
        (Some(reason), Ok(_)) => bail!(
            "{reason}; stopped there, after storing {} in {}",
            output::count(stored, "record"),
            args.topic
        ),
        (Some(reason), Err(lost)) => bail!(
            "{reason}; stopped there, and {lost:#}{}",
            resume.map(|r| format!("\n{r}")).unwrap_or_default()
        ),
    }
}

/// After a failure: per partition, the last line stored and the first not stored, and the
/// command that sends the rest when one line number splits stored from not stored.
fn resume_report(outcome: &Outcome, args: &ProduceArgs) -> Option<String> {
    let mut out = String::new();
    outcome.first_not_stored()?;
    for (p, progress) in &outcome.partitions {
        let Some(failed) = progress.first_failed else {
            continue;
        };
        let stored = match progress.last_stored {
            Some(line) => format!("stored its records up to line {line}"),
            None => "stored none of this run's records".to_string(),
        };
        out.push_str(&format!(
            "{}-{p}: {stored}; its records from line {failed} on were not stored\n",
            args.topic
        ));
    }
    let file = match &args.file {
        Some(f) => format!(" --file {}", f.display()),
        None => String::new(),
    };
    match outcome.resume_from() {
        Some(line) => out.push_str(&format!(
            "nothing from line {line} on was stored and nothing before it is missing: send the rest with `runnel produce {}{file} --from-line {line}` (add the other options of this run)",
            args.topic
        )),
        None => out.push_str(
            "each partition holds its records up to the line above, without a gap; other partitions stored later lines, so re-sending from the smallest line above would repeat those",
        ),
    }
    Some(out)
}

/// The input, its name for messages, and its length when it is a regular file.
fn open_input(file: Option<&Path>) -> Result<(Box<dyn Read + Send>, String, Option<u64>)> {
    Ok(match file {
        Some(path) => {
            let f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
            let len = f.metadata().ok().filter(|m| m.is_file()).map(|m| m.len());
            (Box::new(f), path.display().to_string(), len)
        }
        None => (Box::new(std::io::stdin()), "stdin".into(), None),
    })
}

/// One log batch of a chunk's lines, all for one partition (`None`: keyless, where the producer
/// puts such records): lines `first..=last` of the chunk, `records` of them.
struct ChunkBatch {
    partition: Option<u32>,
    builder: BatchBuilder,
    first: u64,
    last: u64,
    records: u64,
}

/// Encodes the chunk's lines into log batches of at most `batch_size` bytes, one run per
/// partition (the key's, by the producers' partitioner, or `partition`), so the producer
/// appends each whole instead of taking the lines one by one (a lock, an encoding step and a
/// delivery future per record cost as much as reading and splitting the line). The records
/// get one timestamp, the time the chunk is sent, as a producer stamps records at `send`.
fn encode_batches(
    batch_size: usize,
    partitions: u32,
    partition: Option<u32>,
    chunk: &Chunk,
) -> Vec<ChunkBatch> {
    let now = runnel_log::types::now_ms();
    let mut open: Vec<Option<ChunkBatch>> = Vec::new();
    let mut done = Vec::new();
    for (i, line) in chunk.lines.iter().enumerate() {
        let key = line.key.clone().map(|k| &chunk.data[k]);
        let value = &chunk.data[line.value.clone()];
        let target = match (partition, key) {
            (Some(p), _) => Some(p),
            (None, Some(k)) => Some(partition_for_key(k, partitions)),
            (None, None) => None,
        };
        let slot = target.map_or(0, |p| p as usize + 1);
        if open.len() <= slot {
            open.resize_with(slot + 1, || None);
        }
        let size = BatchBuilder::estimate(key, Some(value), &[]);
        if let Some(b) = &open[slot]
            && b.builder.size_bytes() + size > batch_size
        {
            done.extend(open[slot].take());
        }
        let b = open[slot].get_or_insert_with(|| ChunkBatch {
            partition: target,
            builder: BatchBuilder::new(batch_size.min(chunk.data.len() + 64 * chunk.lines.len())),
            first: i as u64,
            last: i as u64,
            records: 0,
        });
        b.builder.push(now, key, Some(value), &[]);
        b.last = i as u64;
        b.records += 1;
    }
    done.extend(open.into_iter().flatten());
    done
}

/// The reader thread: reads lines until the input ends, a key cannot be read, or the receiver
/// is gone (the command stopped).
fn read_input(
    mut reader: BufReader<Box<dyn Read + Send>>,
    name: &str,
    key_field: Option<&str>,
    from_line: u64,
    tx: &mpsc::Sender<Input>,
) {
    let mut line = Vec::with_capacity(64 << 10);
    let mut chunk = Chunk::default();
    let mut line_no = 0u64;
    loop {
        // Hand the lines over before a read that may block, so slow input still flows.
        let full = chunk.lines.len() >= CHUNK_LINES || chunk.data.len() >= CHUNK_BYTES;
        let ready = !chunk.lines.is_empty() && (full || reader.buffer().is_empty());
        if ready
            && tx
                .blocking_send(Input::Lines(std::mem::take(&mut chunk)))
                .is_err()
        {
            return;
        }
        line.clear();
        let failure = match reader.read_until(b'\n', &mut line) {
            Ok(0) => break,
            Ok(n) => {
                line_no += 1;
                chunk.input_bytes += n as u64;
                if line_no < from_line {
                    continue;
                }
                push_line(&mut chunk, strip_line_end(&line), key_field)
                    .err()
                    .map(|reason| format!("{name} line {line_no}: {reason}"))
            }
            Err(e) => Some(format!("cannot read {name}: {e}")),
        };
        if let Some(reason) = failure {
            if !chunk.lines.is_empty() && tx.blocking_send(Input::Lines(chunk)).is_err() {
                return;
            }
            let _ = tx.blocking_send(Input::Failed(reason));
            return;
        }
    }
    if !chunk.lines.is_empty() {
        let _ = tx.blocking_send(Input::Lines(chunk));
    }
}

fn strip_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn push_line(chunk: &mut Chunk, value: &[u8], key_field: Option<&str>) -> Result<(), String> {
    let key = match key_field {
        Some(field) => {
            let key = key_of(value, field)?;
            let at = chunk.data.len();
            chunk.data.extend_from_slice(&key);
            Some(at..chunk.data.len())
        }
        None => None,
    };
    let at = chunk.data.len();
    chunk.data.extend_from_slice(value);
    chunk.lines.push(Line {
        value: at..chunk.data.len(),
        key,
    });
    Ok(())
}

/// The key of a JSON line: the value of its top-level `field`. A string gives its text, any
/// other value its JSON text; a line that is not one JSON object, lacks the field, or has it
/// null is an error. Other fields are skipped without being decoded.
fn key_of<'a>(line: &'a [u8], field: &str) -> Result<Cow<'a, [u8]>, String> {
    let mut de = serde_json::Deserializer::from_slice(line);
    let found = FindField(field)
        .deserialize(&mut de)
        .and_then(|found| de.end().map(|()| found))
        .map_err(|e| {
            let text = e.to_string();
            let at = format!(" at line {} column {}", e.line(), e.column());
            let message = text.strip_suffix(&at).unwrap_or(&text);
            match e.classify() {
                serde_json::error::Category::Data => format!("{message} (column {})", e.column()),
                _ => format!("not valid JSON: {message} at column {}", e.column()),
            }
        })?;
    found.ok_or_else(|| format!("the JSON object has no field {field:?}"))
}

/// Finds one field of a JSON object, skipping the others.
struct FindField<'f>(&'f str);

impl<'de> DeserializeSeed<'de> for FindField<'_> {
    type Value = Option<Cow<'de, [u8]>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for FindField<'_> {
    type Value = Option<Cow<'de, [u8]>>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(is_field) = map.next_key_seed(IsField(self.0))? {
            if is_field {
                found = Some(map.next_value_seed(KeyText(self.0))?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

/// Compares an object key with the field name.
struct IsField<'f>(&'f str);

impl<'de> DeserializeSeed<'de> for IsField<'_> {
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for IsField<'_> {
    type Value = bool;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a field name")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        Ok(v == self.0)
    }
}

/// The key bytes of the field's value (the field name is kept for the error message).
struct KeyText<'f>(&'f str);

impl<'de> DeserializeSeed<'de> for KeyText<'_> {
    type Value = Cow<'de, [u8]>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for KeyText<'_> {
    type Value = Cow<'de, [u8]>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "a value for the key field {:?}", self.0)
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v.as_bytes()))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.as_bytes().to_vec()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.into_bytes()))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(if v { b"true" } else { b"false" }))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_string().into_bytes()))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_string().into_bytes()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        json_text(&v)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Err(E::custom(format!("the key field {:?} is null", self.0)))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        json_text(&serde_json::Value::deserialize(
            de::value::MapAccessDeserializer::new(map),
        )?)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        json_text(&serde_json::Value::deserialize(
            de::value::SeqAccessDeserializer::new(seq),
        )?)
    }
}

fn json_text<'de, E: de::Error>(v: &impl serde::Serialize) -> Result<Cow<'de, [u8]>, E> {
    serde_json::to_vec(v).map(Cow::Owned).map_err(E::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(line: &str) -> Result<String, String> {
        key_of(line.as_bytes(), "id").map(|k| String::from_utf8(k.into_owned()).unwrap())
    }

    #[test]
    fn key_field_values() {
        assert_eq!(key(r#"{"a":[1,{"id":0}],"id":"d-7"}"#).unwrap(), "d-7");
        assert_eq!(key(r#"{"id":"tab\tbed"}"#).unwrap(), "tab\tbed");
        assert_eq!(key(r#"{"id":42}"#).unwrap(), "42");
        assert_eq!(key(r#"{"id":-3}"#).unwrap(), "-3");
        assert_eq!(key(r#"{"id":true}"#).unwrap(), "true");
        assert_eq!(key(r#"{"id":1.5}"#).unwrap(), "1.5");
        assert_eq!(key(r#"{"id":{"b":[1, 2]}}"#).unwrap(), r#"{"b":[1,2]}"#);
    }

    #[test]
    fn key_field_errors() {
        assert!(
            key(r#"{"other":1}"#)
                .unwrap_err()
                .contains("no field \"id\"")
        );
        assert!(key(r#"{"id":null}"#).unwrap_err().contains("is null"));
        assert!(key("not json").unwrap_err().starts_with("not valid JSON"));
        assert!(
            key(r#"{"id":1} trailing"#)
                .unwrap_err()
                .starts_with("not valid JSON")
        );
        assert!(key("[1,2]").unwrap_err().contains("expected a JSON object"));
        assert!(key("").unwrap_err().starts_with("not valid JSON"));
    }

    #[test]
    fn line_ends() {
        assert_eq!(strip_line_end(b"a\r\n"), b"a");
        assert_eq!(strip_line_end(b"a\n"), b"a");
        assert_eq!(strip_line_end(b"a"), b"a");
        assert_eq!(strip_line_end(b"\n"), b"");
    }
}
