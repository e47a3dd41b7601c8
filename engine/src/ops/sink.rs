//! Writes records to a topic (a user topic or a repartition topic), partitioned by the key's
//! murmur2 hash as Kafka's default partitioner does. A record that cannot be serialized stops
//! the task with an error naming the sink, the output topic and the input record (topic,
//! partition, offset). Sinks are terminal: control messages end here.

use crate::error::Result;
use crate::operator::{Operator, TaskCx};
use crate::out_buf::OutBuf;
use crate::record::{Control, Rec};
use crate::serdes::SerdeRef;
use crate::task::{ORIGIN_HEADER, encode_origin};
use std::sync::Arc;

pub(crate) struct Sink<K, V> {
    pub node: Arc<str>,
    /// Repartition sinks tag records with their origin; the last one written.
    pub origin: Option<(u64, u32)>,
    pub topic: Arc<str>,
    pub key_serde: SerdeRef<K>,
    pub value_serde: SerdeRef<V>,
}

impl<K, V> Operator<K, V> for Sink<K, V> {
    fn on_data(&mut self, cx: &mut TaskCx, batch: Vec<Rec<K, V>>) -> Result<()> {
        cx.metrics.records_out += batch.len() as u64;
        for r in batch {
            cx.at(&self.node, r.offset);
            let (ks, vs) = (&self.key_serde, &self.value_serde);
            let mut headers = r.headers;
            if let Some((offset, index)) = &mut self.origin {
                *index = if *offset == r.offset { *index + 1 } else { 0 };
                *offset = r.offset;
                headers.retain(|h| h.key != ORIGIN_HEADER);
                headers.push(runnel_log::Header {
                    key: ORIGIN_HEADER.into(),
                    value: Some(encode_origin(cx.partition, *offset, *index)),
                });
            }
            cx.out
                .push(
                    &self.topic,
                    None,
                    r.timestamp,
                    headers,
                    |b| ks.serialize(&r.key, b),
                    |b| vs.serialize(&r.value, b),
                )
                .map_err(|e| unserializable(cx, &self.topic, e))?;
        }
        Ok(())
    }

    fn forward(&mut self, _: &mut TaskCx, _: Control) -> Result<()> {
        Ok(())
    }
}

fn unserializable(cx: &TaskCx, topic: &str, reason: String) -> crate::EngineError {
    cx.fail(format!(
        "cannot serialize a record for topic {topic}: {reason}"
    ))
}

/// Writes one output record per row of each record's value (the SQL layer's Arrow batches):
/// `write` appends them to the task's output and returns how many it wrote.
pub type WriteRows<K, V> =
    Arc<dyn Fn(Rec<K, V>, &Arc<str>, &mut OutBuf) -> Result<u64, String> + Send + Sync>;

pub(crate) struct RowsSink<K, V> {
    pub node: Arc<str>,
    pub topic: Arc<str>,
    pub write: WriteRows<K, V>,
}

impl<K, V> Operator<K, V> for RowsSink<K, V> {
    fn on_data(&mut self, cx: &mut TaskCx, batch: Vec<Rec<K, V>>) -> Result<()> {
        for r in batch {
            cx.at(&self.node, r.offset);
            let n = (self.write)(r, &self.topic, &mut cx.out)
                .map_err(|e| unserializable(cx, &self.topic, e))?;
            cx.metrics.records_out += n;
        }
        Ok(())
    }

    fn forward(&mut self, _: &mut TaskCx, _: Control) -> Result<()> {
        Ok(())
    }
}
