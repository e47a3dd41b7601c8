//! Chunks: a run of input records as one Arrow batch, for the stateless front of a SQL job.
//!
//! A stream input is decoded a run at a time straight into Arrow columns ([`ChunkDecoder`]);
//! `WHERE` and `SELECT` evaluate on that batch ([`filter_project`]) and an output is encoded
//! from the columns ([`ChunkEncoder`]), so the rows of a stateless statement never become
//! `ScalarValue`s. Where a row-based operator follows (aggregates, joins, unions), a chunk
//! becomes rows ([`Chunk::into_rows`]).
//!
//! Contract: the same records, values, errors and dead letters as the row path
//! ([`RowDecoder`], [`RowEncoder`]). A JSON value the fast reader does not take as it is (a
//! number in a text column, a missing required field, malformed JSON, ...) goes through
//! `RowDecoder`, whose result or error is the one used.

use super::columns::{Column, Columns, Kind};
use super::flat_json::FlatReader;
use super::json_object::fields_in_order;
use super::json_text;
use super::plan::PhysExpr;
use super::row::{KeySerde, Row, RowDecoder, RowEncoder, parse_timestamp, rows_of, write_json};
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch, RecordBatchOptions,
    StringArray, TimestampMillisecondArray, new_null_array,
};
use datafusion::arrow::datatypes::{
    DataType, Field, Int64Type, Schema, SchemaRef, TimeUnit, TimestampMillisecondType,
};
use datafusion::common::ScalarValue;
use runnel_engine::operator::DecodedRun;
use runnel_engine::operator::Refused;
use runnel_engine::record::Rec;
use runnel_engine::serdes::Serde;
use runnel_log::{Header, RecordRun};
use serde::de::{Deserialize, Deserializer, Visitor};
use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

/// Rows of one run of input records: the values as columns, and per row its event time, the
/// offset of its input record and that record's headers.
#[derive(Debug, Clone)]
pub struct Chunk {
    pub batch: RecordBatch,
    pub timestamps: Vec<i64>,
    pub offsets: Vec<u64>,
    /// Per row; empty when no row has headers.
    pub headers: Vec<Vec<Header>>,
}

impl Chunk {
    fn headers(&self, row: usize) -> Vec<Header> {
        self.headers.get(row).cloned().unwrap_or_default()
    }

    /// The rows as the row-based operators take them (no key).
    pub fn into_rows(self) -> Result<Vec<Rec<Row, Option<Row>>>, String> {
        let rows = rows_of(self.batch.columns(), self.batch.num_rows())?;
        let mut headers = self.headers.into_iter();
        Ok(rows
            .into_iter()
            .zip(self.timestamps.iter().zip(&self.offsets))
            .map(|(row, (&timestamp, &offset))| Rec {
                key: Row::default(),
                value: Some(row),
                timestamp,
                headers: headers.next().unwrap_or_default(),
                offset,
            })
            .collect())
    }

    /// Each row's time, offset and headers, as a record without key or value.
    pub fn records(&self) -> Vec<Rec<(), ()>> {
        (0..self.offsets.len())
            .map(|i| Rec {
                key: (),
                value: (),
                timestamp: self.timestamps[i],
                headers: self.headers(i),
                offset: self.offsets[i],
            })
            .collect()
    }

    /// The rows `keep` selects (a row per `true`), with their metadata.
    fn select(self, keep: &[bool], batch: RecordBatch) -> Chunk {
        fn pick<T>(mut v: Vec<T>, keep: &[bool]) -> Vec<T> {
            let mut keep = keep.iter();
            v.retain(|_| keep.next().is_some_and(|k| *k));
            v
        }
        Chunk {
            batch,
            timestamps: pick(self.timestamps, keep),
            offsets: pick(self.offsets, keep),
            headers: if self.headers.is_empty() {
                Vec::new()
            } else {
                pick(self.headers, keep)
            },
        }
    }

    /// The same rows with null columns appended (`window_start`, `window_end`), as `schema`.
    pub fn with_nulls(mut self, extra: &[DataType], schema: &SchemaRef) -> Result<Chunk, String> {
        let n = self.batch.num_rows();
        let mut columns = self.batch.columns().to_vec();
        columns.extend(extra.iter().map(|t| new_null_array(t, n)));
        self.batch = batch_of(schema.clone(), columns, n)?;
        Ok(self)
    }
}

fn batch_of(schema: SchemaRef, columns: Vec<ArrayRef>, n: usize) -> Result<RecordBatch, String> {
    let options = RecordBatchOptions::new().with_row_count(Some(n));
    RecordBatch::try_new_with_options(schema, columns, &options).map_err(|e| e.to_string())
}

/// One JSON field's value as written, strings borrowed from the record where they can be.
/// Objects and arrays are refused (the record then goes through `RowDecoder`).
pub(crate) enum Cell<'a> {
    Null,
    Bool(bool),
    I64(i64),
    U64(u64),
    F64(f64),
    Str(Cow<'a, str>),
}

impl<'de> Deserialize<'de> for Cell<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(CellVisitor)
    }
}

struct CellVisitor;

impl<'de> Visitor<'de> for CellVisitor {
    type Value = Cell<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON scalar")
    }
    fn visit_unit<E>(self) -> Result<Cell<'de>, E> {
        Ok(Cell::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Cell<'de>, E> {
        Ok(Cell::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Cell<'de>, E> {
        Ok(Cell::I64(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Cell<'de>, E> {
        Ok(Cell::U64(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Cell<'de>, E> {
        Ok(Cell::F64(v))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Cell<'de>, E> {
        Ok(Cell::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Cell<'de>, E> {
        Ok(Cell::Str(Cow::Owned(v.to_string())))
    }
    fn visit_string<E>(self, v: String) -> Result<Cell<'de>, E> {
        Ok(Cell::Str(Cow::Owned(v)))
    }
}

/// A value ready for its column's builder: the variant matches the column's type.
enum Typed<'a> {
    Null,
    I64(i64),
    F64(f64),
    Str(Cow<'a, str>),
    Bool(bool),
}

impl<'a> Typed<'a> {
    /// `cell` as a value of `ty`, when it is one without conversion rules the row path owns.
    fn of_cell(cell: Option<Cell<'a>>, ty: &DataType, nullable: bool) -> Option<Typed<'a>> {
        Some(match (ty, cell) {
            (_, None | Some(Cell::Null)) => return nullable.then_some(Typed::Null),
            (DataType::Int64 | DataType::Timestamp(..), Some(Cell::I64(i))) => Typed::I64(i),
            (DataType::Int64 | DataType::Timestamp(..), Some(Cell::U64(u))) => {
                Typed::I64(i64::try_from(u).ok()?)
            }
            (DataType::Timestamp(..), Some(Cell::Str(s))) => Typed::I64(parse_timestamp(&s).ok()?),
            (DataType::Float64, Some(Cell::F64(f))) => Typed::F64(f),
            (DataType::Float64, Some(Cell::I64(i))) => Typed::F64(i as f64),
            (DataType::Float64, Some(Cell::U64(u))) => Typed::F64(u as f64),
            (DataType::Utf8, Some(Cell::Str(s))) => Typed::Str(s),
            (DataType::Boolean, Some(Cell::Bool(b))) => Typed::Bool(b),
            _ => return None,
        })
    }

    /// A value `RowDecoder` made, for the column it made it for.
    fn of_scalar(v: ScalarValue) -> Typed<'static> {
        match v {
            ScalarValue::Int64(Some(i)) | ScalarValue::TimestampMillisecond(Some(i), _) => {
                Typed::I64(i)
            }
            ScalarValue::Float64(Some(f)) => Typed::F64(f),
            ScalarValue::Utf8(Some(s)) => Typed::Str(Cow::Owned(s)),
            ScalarValue::Boolean(Some(b)) => Typed::Bool(b),
            _ => Typed::Null,
        }
    }
}

impl Typed<'_> {
    fn push_into(self, column: &mut Column) {
        match (column.kind, self) {
            (Kind::I64 | Kind::Timestamp, Typed::I64(i)) => column.push_i64(i),
            (Kind::F64, Typed::F64(f)) => column.push_f64(f),
            (Kind::Str, Typed::Str(s)) => column.push_utf8(s.as_bytes()),
            (Kind::Bool, Typed::Bool(b)) => column.push_bool(b),
            _ => column.push_null(),
        }
    }
}

/// Decodes runs of an input's records into chunks of its schema.
pub struct ChunkDecoder {
    pub rows: RowDecoder,
    /// The column holding the event time, if the input declares one.
    pub event_time: Option<usize>,
}

impl ChunkDecoder {
    /// The run's records as one chunk; watermark markers are skipped, and the records that do
    /// not decode are refused by their index in the run. `Err` when the decoded columns do
    /// not make a batch of the input's schema.
    pub fn decode(&self, run: &RecordRun) -> Result<DecodedRun<Chunk>, String> {
        let schema = &self.rows.schema;
        let fields = schema.fields();
        let mut columns = Columns::new(fields, run.len());
        let reader = FlatReader::new(fields);
        let json = self.rows.format == super::row::Format::Json;
        let mut refused = Vec::new();
        let (mut record_ts, mut offsets) = (Vec::with_capacity(run.len()), Vec::new());
        offsets.reserve(run.len());
        // Headers are kept per row only once a record has some.
        let (mut headers, mut any_headers) = (Vec::<Vec<Header>>::new(), false);
        for (i, r) in run.iter().enumerate() {
            if r.has_headers() && runnel_engine::operator::is_marker(&r) {
                continue;
            }
            let Some(data) = r.value else {
                refused.push((
                    i,
                    "a null value (tombstone) where a row was expected".into(),
                ));
                continue;
            };
            if !(json && reader.read(data, &mut columns))
                && let Err(reason) = self.decode_slowly(data, json, &mut columns)
            {
                refused.push((i, reason));
                continue;
            }
            record_ts.push(r.timestamp);
            offsets.push(r.offset);
            if r.has_headers() && !any_headers {
                headers.resize(offsets.len() - 1, Vec::new());
                any_headers = true;
            }
            if any_headers {
                headers.push(r.owned_headers());
            }
        }
        let kept = offsets.len();
        if kept == 0 {
            return Ok(DecodedRun {
                value: None,
                kept,
                max_ts: None,
                refused,
            });
        }
        let columns = columns.finish(fields);
        let timestamps = match self.event_time {
            Some(c) => event_times(&columns[c], record_ts),
            None => record_ts,
        };
        let max_ts = timestamps.iter().copied().max();
        let batch = batch_of(schema.clone(), columns, kept)
            .map_err(|e| format!("cannot build a batch of {schema}: {e}"))?;
        Ok(DecodedRun {
            value: Some(Chunk {
                batch,
                timestamps,
                offsets,
                headers,
            }),
            kept,
            max_ts,
            refused,
        })
    }

    /// A record the hand reader left: serde reads its fields, or (for values that need the row
    /// path's conversions, and for CSV and raw inputs) [`RowDecoder`] decodes it, whose error
    /// is the record's.
    fn decode_slowly(&self, data: &[u8], json: bool, columns: &mut Columns) -> Result<(), String> {
        let fields = self.rows.schema.fields();
        if json && let Ok(cells) = fields_in_order::<Cell>(data, fields) {
            let mut typed = Vec::with_capacity(fields.len());
            let fits = cells.into_iter().zip(fields).all(|(c, f)| {
                Typed::of_cell(c, f.data_type(), f.is_nullable())
                    .map(|t| typed.push(t))
                    .is_some()
            });
            if fits {
                for (column, v) in columns.columns.iter_mut().zip(typed) {
                    v.push_into(column);
                }
                columns.end_row();
                return Ok(());
            }
        }
        let row = self.rows.decode(data)?;
        for (column, v) in columns.columns.iter_mut().zip(row.0) {
            Typed::of_scalar(v).push_into(column);
        }
        columns.end_row();
        Ok(())
    }
}

/// Each row's event time: the column's value, or the record's timestamp where it is null.
fn event_times(column: &ArrayRef, mut record_ts: Vec<i64>) -> Vec<i64> {
    let values: &[i64] = match column.data_type() {
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            column.as_primitive::<TimestampMillisecondType>().values()
        }
        DataType::Int64 => column.as_primitive::<Int64Type>().values(),
        _ => return record_ts,
    };
    match column.nulls() {
        None => record_ts.copy_from_slice(values),
        Some(nulls) => {
            for i in nulls.valid_indices() {
                record_ts[i] = values[i];
            }
        }
    }
    record_ts
}

/// What a statement's `WHERE` and `SELECT` do to a chunk.
pub struct FilterProject {
    pub predicate: Option<PhysExpr>,
    /// The `SELECT` expressions and the names of their columns.
    pub project: Option<(Vec<PhysExpr>, Vec<String>)>,
}

impl FilterProject {
    /// The rows that pass, projected (`None` when none does). When an expression fails on
    /// the batch, the rows are evaluated one by one so that only those it fails on are
    /// refused; `Err` when the rows evaluated one by one do not join into one batch again.
    pub fn apply(&self, chunk: Chunk, refused: &mut Vec<Refused>) -> Result<Option<Chunk>, String> {
        if let Ok((keep, batch)) = self.evaluate(&chunk.batch) {
            return Ok(Some(chunk.select(&keep, batch)).filter(|c| c.batch.num_rows() > 0));
        }
        let mut keep = Vec::with_capacity(chunk.batch.num_rows());
        let mut kept = Vec::new();
        for i in 0..chunk.batch.num_rows() {
            let row = chunk.batch.slice(i, 1);
            match self.evaluate(&row) {
                Ok((k, batch)) => {
                    keep.push(k[0]);
                    kept.push(batch);
                }
                Err(reason) => {
                    keep.push(false);
                    refused.push(Refused {
                        offset: chunk.offsets[i],
                        timestamp: chunk.timestamps[i],
                        value: row_json(&row),
                        reason,
                    });
                }
            }
        }
        let Some(schema) = kept.first().map(RecordBatch::schema) else {
            return Ok(None);
        };
        let batch = datafusion::arrow::compute::concat_batches(&schema, &kept)
            .map_err(|e| format!("cannot join evaluated rows: {e}"))?;
        Ok(Some(chunk.select(&keep, batch)).filter(|c| c.batch.num_rows() > 0))
    }

    /// Which rows pass, and the projection of those.
    fn evaluate(&self, batch: &RecordBatch) -> Result<(Vec<bool>, RecordBatch), String> {
        let n = batch.num_rows();
        let (keep, kept) = match &self.predicate {
            None => (vec![true; n], batch.clone()),
            Some(p) => {
                let mask = p
                    .evaluate(batch)
                    .and_then(|v| v.into_array(n))
                    .map_err(|e| format!("cannot evaluate {p}: {}", e.strip_backtrace()))?;
                let mask = mask
                    .as_boolean_opt()
                    .ok_or("the predicate is not a boolean")?;
                // A null predicate keeps no row, as in SQL.
                let keep = match mask.nulls() {
                    Some(nulls) => mask.values() & nulls.inner(),
                    None => mask.values().clone(),
                };
                let keep = keep.iter().collect();
                let kept = datafusion::arrow::compute::filter_record_batch(batch, mask)
                    .map_err(|e| e.to_string())?;
                (keep, kept)
            }
        };
        let Some((exprs, names)) = &self.project else {
            return Ok((keep, kept));
        };
        let rows = kept.num_rows();
        let columns = exprs
            .iter()
            .map(|e| {
                e.evaluate(&kept)
                    .and_then(|v| v.into_array(rows))
                    .map_err(|err| format!("cannot evaluate {e}: {}", err.strip_backtrace()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        // The columns' own types (DataFusion's), under the statement's names.
        let fields: Vec<Field> = names
            .iter()
            .zip(&columns)
            .map(|(name, c)| Field::new(name, c.data_type().clone(), true))
            .collect();
        Ok((
            keep,
            batch_of(Arc::new(Schema::new(fields)), columns, rows)?,
        ))
    }
}

/// A one-row batch as a JSON object (what a refused record's dead letter holds).
fn row_json(row: &RecordBatch) -> Vec<u8> {
    let mut out = Vec::new();
    if let Ok(mut rows) = rows_of(row.columns(), 1) {
        let _ = RowEncoder {
            schema: row.schema(),
            format: super::row::Format::Json,
        }
        .serialize(&rows.pop(), &mut out);
    }
    out
}

/// Encodes a chunk's rows as an output's records.
pub struct ChunkEncoder {
    pub values: RowEncoder,
    /// The output's key: its columns and how they are written.
    pub key: Option<(Vec<usize>, KeySerde)>,
    /// `"name":` of each column, written once.
    names: Vec<Vec<u8>>,
}

impl ChunkEncoder {
    pub fn new(values: RowEncoder, key: Option<(Vec<usize>, KeySerde)>) -> Self {
        let names = values
            .schema
            .fields()
            .iter()
            .map(|f| {
                let mut name = serde_json::to_vec(f.name()).expect("a string");
                name.push(b':');
                name
            })
            .collect();
        Self { values, key, names }
    }

    /// Appends the chunk's rows to `out` as records of `topic`; returns how many.
    pub fn write(
        &self,
        chunk: Chunk,
        topic: &Arc<str>,
        out: &mut runnel_engine::operator::OutBuf,
    ) -> Result<u64, String> {
        let columns = chunk.batch.columns();
        let typed: Vec<TypedColumn> = columns.iter().map(TypedColumn::of).collect();
        for row in 0..chunk.batch.num_rows() {
            out.push(
                topic,
                None,
                chunk.timestamps[row],
                chunk.headers(row),
                |b| match &self.key {
                    None => Ok(false),
                    Some((idx, serde)) => {
                        let key = idx
                            .iter()
                            .map(|&c| ScalarValue::try_from_array(&columns[c], row))
                            .collect::<Result<Vec<_>, _>>()
                            .map_err(|e| e.to_string())?;
                        serde.serialize(&Row(key), b)
                    }
                },
                |b| self.write_value(columns, &typed, row, b),
            )?;
        }
        Ok(chunk.batch.num_rows() as u64)
    }

    fn write_value(
        &self,
        columns: &[ArrayRef],
        typed: &[TypedColumn],
        row: usize,
        out: &mut Vec<u8>,
    ) -> Result<bool, String> {
        if self.values.format != super::row::Format::Json {
            let values = columns
                .iter()
                .map(|c| ScalarValue::try_from_array(c, row))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())?;
            return self.values.serialize(&Some(Row(values)), out);
        }
        out.push(b'{');
        for (i, (name, c)) in self.names.iter().zip(typed).enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(name);
            c.write_json(row, out)?;
        }
        out.push(b'}');
        Ok(true)
    }
}

/// A column downcast once per chunk, so that writing a cell costs no dynamic type test.
enum TypedColumn<'a> {
    I64(&'a Int64Array),
    F64(&'a Float64Array),
    Str(&'a StringArray),
    Timestamp(&'a TimestampMillisecondArray),
    Other(&'a ArrayRef),
}

impl<'a> TypedColumn<'a> {
    fn of(c: &'a ArrayRef) -> Self {
        match c.data_type() {
            DataType::Int64 => TypedColumn::I64(c.as_primitive()),
            DataType::Float64 => TypedColumn::F64(c.as_primitive()),
            DataType::Utf8 => TypedColumn::Str(c.as_string()),
            DataType::Timestamp(TimeUnit::Millisecond, _) => {
                TypedColumn::Timestamp(c.as_primitive())
            }
            _ => TypedColumn::Other(c),
        }
    }

    /// One cell as JSON, as [`write_json`] writes its scalar.
    fn write_json(&self, row: usize, out: &mut Vec<u8>) -> Result<(), String> {
        match self {
            TypedColumn::I64(a) if a.is_valid(row) => json_text::int(a.value(row), out),
            TypedColumn::F64(a) if a.is_valid(row) => json_text::float(a.value(row), out),
            TypedColumn::Str(a) if a.is_valid(row) => json_text::string(a.value(row), out),
            TypedColumn::Timestamp(a) if a.is_valid(row) => json_text::int(a.value(row), out),
            TypedColumn::Other(c) if c.is_valid(row) => {
                let v = ScalarValue::try_from_array(c, row).map_err(|e| e.to_string())?;
                write_json(&v, out).map_err(|e| e.to_string())?;
            }
            _ => out.extend_from_slice(b"null"),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::row::Format;
    use runnel_log::Record;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
            Field::new("speed", DataType::Float64, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
            Field::new("ok", DataType::Boolean, true),
        ]))
    }

    fn json_decoder(event_time: Option<usize>) -> ChunkDecoder {
        ChunkDecoder {
            rows: RowDecoder {
                schema: schema(),
                format: Format::Json,
                extra_nulls: vec![],
            },
            event_time,
        }
    }

    fn record(offset: u64, value: Option<&str>) -> Record {
        Record {
            offset,
            timestamp: 1_000 + offset as i64,
            key: None,
            value: value.map(|v| bytes::Bytes::copy_from_slice(v.as_bytes())),
            headers: Vec::new(),
        }
    }

    /// Decodes `records` as one run read from the log.
    fn decode(decoder: &ChunkDecoder, records: &[Record]) -> DecodedRun<Chunk> {
        decoder
            .decode(&RecordRun::from_records(Arc::from("in"), 0, records))
            .expect("the decoded columns make a batch")
    }

    #[test]
    fn a_run_decodes_as_the_row_decoder_decodes_each_record() {
        let values = [
            Some(r#"{"id":1,"name":"a","speed":2.5,"ts":5000,"ok":true}"#),
            Some(
                r#"{"ok":false,"ts":"2024-05-01T10:00:00Z","speed":3,"name":"tab\there \"q\"","id":2}"#,
            ),
            Some(r#"{"id":3,"name":42,"extra":{"nested":[1,2]}}"#),
            Some(r#"{"id":4,"name":{"nested":1}}"#),
            Some(r#"{"name":"no id"}"#),
            Some(r#"{"id":5.5}"#),
            Some(r#"{"id":18446744073709551615}"#),
            Some(r#"{"id":6,"ts":"yesterday"}"#),
            Some(r#"{"id":7,"speed":null,"ts":null}"#),
            Some("not json"),
            Some("[1,2]"),
            None,
        ];
        let run: Vec<Record> = values
            .iter()
            .enumerate()
            .map(|(i, v)| record(i as u64, *v))
            .collect();
        let decoder = json_decoder(Some(3));
        let decoded = decode(&decoder, &run);
        let chunk = decoded.value.expect("some rows");
        let mut got_rows = chunk.clone().into_rows().unwrap().into_iter();
        let mut refused = decoded.refused.into_iter();
        let mut expected_times = Vec::new();
        for (i, r) in run.iter().enumerate() {
            let want = match r.value.as_deref() {
                None => Err("a null value (tombstone) where a row was expected".to_string()),
                Some(data) => decoder.rows.decode(data),
            };
            match want {
                Ok(row) => {
                    let got = got_rows.next().expect("a row per decodable record");
                    assert_eq!(got.value, Some(row.clone()), "record {i}");
                    assert_eq!(got.offset, i as u64);
                    let ts = super::super::row::millis(&row.0[3]).unwrap_or(r.timestamp);
                    assert_eq!(got.timestamp, ts, "record {i}");
                    expected_times.push(ts);
                }
                Err(reason) => assert_eq!(refused.next(), Some((i, reason)), "record {i}"),
            }
        }
        assert!(got_rows.next().is_none() && refused.next().is_none());
        assert_eq!(decoded.kept, expected_times.len());
        assert_eq!(decoded.max_ts, expected_times.iter().copied().max());
    }

    #[test]
    fn json_outputs_are_written_as_the_row_encoder_writes_them() {
        let decoder = json_decoder(None);
        let run = [
            record(
                0,
                Some(r#"{"id":1,"name":"é \"x\"","speed":0.1,"ts":5,"ok":true}"#),
            ),
            record(1, Some(r#"{"id":-2,"speed":1e300}"#)),
        ];
        let chunk = decode(&decoder, &run).value.unwrap();
        // Keyed rows are kept record by record, rows without key written into log batches.
        for (format, keyed) in [Format::Json, Format::Csv, Format::Raw]
            .into_iter()
            .flat_map(|f| [(f, true), (f, false)])
        {
            let values = RowEncoder {
                schema: schema(),
                format,
            };
            let key = keyed.then(|| {
                (
                    vec![0, 1],
                    KeySerde {
                        names: vec!["id".into(), "name".into()],
                        types: vec![DataType::Int64, DataType::Utf8],
                    },
                )
            });
            let encoder = ChunkEncoder::new(values, key);
            let mut out = runnel_engine::operator::OutBuf::default();
            let n = encoder
                .write(chunk.clone(), &Arc::from("out"), &mut out)
                .unwrap();
            assert_eq!(n, 2);
            let rows = chunk.clone().into_rows().unwrap();
            let records = out.into_records();
            assert_eq!(records.len(), 2);
            for ((topic, rec), row) in records.iter().zip(rows) {
                assert_eq!(&**topic, "out");
                let mut want = Vec::new();
                encoder.values.serialize(&row.value, &mut want).unwrap();
                let got = rec.value.as_deref().unwrap();
                assert_eq!(String::from_utf8_lossy(got), String::from_utf8_lossy(&want));
                assert_eq!(rec.timestamp, row.timestamp);
                let Some((_, serde)) = &encoder.key else {
                    assert_eq!(rec.key, None);
                    continue;
                };
                let mut want_key = Vec::new();
                let key = Row(row.value.unwrap().0[..2].to_vec());
                serde.serialize(&key, &mut want_key).unwrap();
                assert_eq!(rec.key.as_deref().unwrap(), &want_key[..]);
            }
        }
    }

    #[test]
    fn each_row_keeps_its_record_headers() {
        let decoder = json_decoder(None);
        let header = |v: &str| Header {
            key: "trace".into(),
            value: Some(bytes::Bytes::copy_from_slice(v.as_bytes())),
        };
        for with_headers in [
            [true, false, false],
            [false, true, false],
            [false, false, true],
        ] {
            let run: Vec<Record> = with_headers
                .iter()
                .enumerate()
                .map(|(i, h)| {
                    let mut r = record(i as u64, Some(r#"{"id":1}"#));
                    if *h {
                        r.headers = vec![header(&i.to_string())];
                    }
                    r
                })
                .collect();
            let rows = decode(&decoder, &run).value.unwrap().into_rows().unwrap();
            let got: Vec<Vec<Header>> = rows.into_iter().map(|r| r.headers).collect();
            let want: Vec<Vec<Header>> = run.iter().map(|r| r.headers.clone()).collect();
            assert_eq!(got, want, "{with_headers:?}");
        }
    }

    fn json_value() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            Just("null".to_string()),
            any::<bool>().prop_map(|b| b.to_string()),
            any::<i64>().prop_map(|i| i.to_string()),
            any::<u64>().prop_map(|u| u.to_string()),
            (-1e6f64..1e6).prop_map(|f| f.to_string()),
            // Every f64 in its shortest form (up to 17 digits) and in exponent form: the hand
            // reader must give serde_json's value to the last bit or leave the number to it.
            any::<f64>().prop_map(|f| f.to_string()),
            any::<f64>().prop_map(|f| format!("{f:e}")),
            (-1e30f64..1e30).prop_map(|f| format!("{f:E}")),
            proptest::sample::select(vec![
                "-0",
                "-0.0",
                "0.0",
                "1.5e3",
                "2E+2",
                "1e-7",
                "1e400",
                "-1e400",
                "12345678901234567890123",
                "-9223372036854775808",
                "-9223372036854775809",
                "18446744073709551616",
                "01",
                "1.",
                ".5",
                "-",
                "1e",
                "+1",
                "0.1e-22",
                "7e22",
                "7e23",
                "1.7976931348623157e308",
            ])
            .prop_map(String::from),
            ".{0,6}".prop_map(|s| format!(" {} ", serde_json::to_string(&s).unwrap())),
            ".{0,6}".prop_map(|s| serde_json::to_string(&s).unwrap()),
            Just(r#""2024-05-01 10:00:00.250""#.to_string()),
            Just(r#"{"a":[1,{"b":null}]}"#.to_string()),
        ]
    }

    proptest::proptest! {
        /// Any flat JSON object (fields in any order, present or not, of any JSON type, with
        /// fields the schema does not name) decodes as the row decoder decodes it, or is
        /// refused with its reason.
        #[test]
        fn any_object_decodes_as_the_row_decoder_decodes_it(
            fields in proptest::collection::vec(
                (proptest::sample::select(vec!["id", "name", "speed", "ts", "ok", "other"]), json_value()),
                0..8,
            )
        ) {
            let body: Vec<String> = fields.iter().map(|(k, v)| format!("{k:?}:{v}")).collect();
            same_as_row_decoder(&format!("{{{}}}", body.join(",")))?;
        }

        /// Records in the schema's order, as producers usually write them (the reader's
        /// first way), some fields absent, some with whitespace or extra fields around them.
        #[test]
        fn schema_ordered_objects_decode_as_the_row_decoder_decodes_them(
            values in proptest::collection::vec(proptest::option::of(json_value()), 5),
            spaced in proptest::collection::vec(proptest::bool::weighted(0.1), 5),
            extra in proptest::option::of(0..5usize),
        ) {
            let names = ["id", "name", "speed", "ts", "ok"];
            let mut body = Vec::new();
            for (i, (v, space)) in values.iter().zip(&spaced).enumerate() {
                if extra == Some(i) {
                    body.push(r#""other":1"#.to_string());
                }
                if let Some(v) = v {
                    let colon = if *space { " : " } else { ":" };
                    body.push(format!("{:?}{colon}{v}", names[i]));
                }
            }
            same_as_row_decoder(&format!("{{{}}}", body.join(",")))?;
        }
    }

    /// `text` as one record decodes as the row decoder decodes it, or is refused with its reason.
    fn same_as_row_decoder(text: &str) -> Result<(), proptest::test_runner::TestCaseError> {
        let decoder = json_decoder(Some(3));
        let decoded = decode(&decoder, &[record(0, Some(text))]);
        match decoder.rows.decode(text.as_bytes()) {
            Ok(row) => {
                let got = decoded.value.expect("a row").into_rows().unwrap();
                proptest::prop_assert_eq!(&got[0].value, &Some(row), "{}", text);
            }
            Err(reason) => {
                proptest::prop_assert!(decoded.value.is_none());
                proptest::prop_assert_eq!(decoded.refused, vec![(0, reason)]);
            }
        }
        Ok(())
    }
}
