//! Rows: what flows between the operators of a SQL job, and how they meet bytes.
//!
//! A [`Row`] is the values of one record, in the order of the plan node's schema. Rows are
//! turned into Arrow `RecordBatch`es for DataFusion to evaluate expressions on, and back.
//! Three encodings exist: the job's input/output formats ([`Format`]: JSON object, CSV line, raw
//! text), and [`RowCodec`], a compact self-describing binary form for repartition topics,
//! changelogs and accumulator states (only the engine reads it).

use super::json_text;
use datafusion::arrow::array::{ArrayRef, RecordBatch, new_null_array};
use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef, TimeUnit};
use datafusion::common::ScalarValue;
use runnel_engine::serdes::Serde;
use std::sync::Arc;

/// The values of one record.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Row(pub Vec<ScalarValue>);

/// How an input or output topic's values are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// One JSON object per record, a field per column.
    Json,
    /// One CSV line per record, the columns in schema order.
    Csv,
    /// The whole value as the only (text) column.
    Raw,
}

/// Rows of `schema` → an Arrow batch (columns built from the scalars).
///
/// # Errors
///
/// Arrow's message when a value does not fit its column's type.
///
/// # Panics
///
/// If a row has fewer values than `schema` has fields.
pub fn to_batch(schema: &SchemaRef, rows: &[&Row]) -> Result<RecordBatch, String> {
    to_batch_of(schema, rows, |_| true)
}

/// [`to_batch`] with only the columns `used` says are read: the others are all nulls of
/// their type (no values copied), their fields made nullable. For evaluating expressions
/// that read a few columns of wide rows (a join's condition over both sides' rows).
///
/// # Errors
///
/// Arrow's message when a value does not fit its column's type.
///
/// # Panics
///
/// If a row has fewer values than `schema` has fields.
pub fn to_batch_of(
    schema: &SchemaRef,
    rows: &[&Row],
    used: impl Fn(usize) -> bool,
) -> Result<RecordBatch, String> {
    let mut all_used = true;
    let mut fields = Vec::with_capacity(schema.fields().len());
    let mut columns = Vec::with_capacity(schema.fields().len());
    for (i, f) in schema.fields().iter().enumerate() {
        if used(i) {
            columns.push(column(
                rows.iter().map(|r| &r.0[i]),
                f.data_type(),
                rows.len(),
            )?);
            fields.push(f.clone());
        } else {
            all_used = false;
            columns.push(new_null_array(f.data_type(), rows.len()));
            fields.push(Arc::new(f.as_ref().clone().with_nullable(true)));
        }
    }
    let schema = if all_used {
        schema.clone()
    } else {
        Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
    };
    let options =
        datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(rows.len()));
    RecordBatch::try_new_with_options(schema, columns, &options).map_err(|e| e.to_string())
}

/// A column of scalars: the common types built from references (no value cloned), the others
/// through `ScalarValue::iter_to_array`.
fn column<'a>(
    values: impl Iterator<Item = &'a ScalarValue> + Clone,
    ty: &DataType,
    len: usize,
) -> Result<ArrayRef, String> {
    use datafusion::arrow::array::{
        BooleanArray, Float64Array, Int64Array, StringBuilder, TimestampMillisecondArray,
    };
    if len == 0 {
        return Ok(new_null_array(ty, 0));
    }
    // `None` when a value is not of the column's variant: then the general path decides.
    let fast: Option<ArrayRef> = match ty {
        DataType::Int64 => built::<Int64Array, _>(values.clone(), |v| match v {
            ScalarValue::Int64(x) => Some(*x),
            _ => None,
        }),
        DataType::Float64 => built::<Float64Array, _>(values.clone(), |v| match v {
            ScalarValue::Float64(x) => Some(*x),
            _ => None,
        }),
        DataType::Boolean => built::<BooleanArray, _>(values.clone(), |v| match v {
            ScalarValue::Boolean(x) => Some(*x),
            _ => None,
        }),
        DataType::Timestamp(TimeUnit::Millisecond, None) => {
            built::<TimestampMillisecondArray, _>(values.clone(), |v| match v {
                ScalarValue::TimestampMillisecond(x, None) => Some(*x),
                _ => None,
            })
        }
        DataType::Utf8 => {
            let mut b = StringBuilder::with_capacity(len, 0);
            values
                .clone()
                .try_for_each(|v| match v {
                    ScalarValue::Utf8(x) => {
                        b.append_option(x.as_deref());
                        Some(())
                    }
                    _ => None,
                })
                .map(|()| Arc::new(b.finish()) as ArrayRef)
        }
        _ => None,
    };
    if let Some(a) = fast {
        return Ok(a);
    }
    ScalarValue::iter_to_array(values.map(|v| {
        if v.is_null() && v.data_type() != *ty {
            ScalarValue::try_from(ty).unwrap_or(ScalarValue::Null)
        } else {
            v.clone()
        }
    }))
    .map_err(|e| e.to_string())
}

/// An array of the values `cell` reads (`None` when a value is not of the array's variant).
fn built<'a, A, T>(
    values: impl Iterator<Item = &'a ScalarValue>,
    cell: impl Fn(&ScalarValue) -> Option<Option<T>>,
) -> Option<ArrayRef>
where
    A: FromIterator<Option<T>> + datafusion::arrow::array::Array + 'static,
{
    values
        .map(cell)
        .collect::<Option<A>>()
        .map(|a| Arc::new(a) as ArrayRef)
}

/// An Arrow batch → rows.
///
/// # Errors
///
/// A message when a column of a type without a fast path cannot be read as scalars.
pub fn from_batch(batch: &RecordBatch) -> Result<Vec<Row>, String> {
    rows_of(batch.columns(), batch.num_rows())
}

/// Arrow columns of `n` rows → rows (the common types read directly, the others through
/// `ScalarValue`).
///
/// # Errors
///
/// A message when a column of a type without a fast path cannot be read as scalars.
///
/// # Panics
///
/// If a column of BIGINT, DOUBLE, VARCHAR or TIMESTAMP has fewer than `n` values.
pub fn rows_of(columns: &[ArrayRef], n: usize) -> Result<Vec<Row>, String> {
    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::datatypes::{Float64Type, Int64Type, TimestampMillisecondType};
    let mut rows: Vec<Row> = (0..n)
        .map(|_| Row(Vec::with_capacity(columns.len())))
        .collect();
    for c in columns {
        let valid = |i: usize| c.is_valid(i);
        match c.data_type() {
            DataType::Int64 => {
                let a = c.as_primitive::<Int64Type>();
                for (i, r) in rows.iter_mut().enumerate() {
                    r.0.push(ScalarValue::Int64(valid(i).then(|| a.value(i))));
                }
            }
            DataType::Float64 => {
                let a = c.as_primitive::<Float64Type>();
                for (i, r) in rows.iter_mut().enumerate() {
                    r.0.push(ScalarValue::Float64(valid(i).then(|| a.value(i))));
                }
            }
            DataType::Utf8 => {
                let a = c.as_string::<i32>();
                for (i, r) in rows.iter_mut().enumerate() {
                    r.0.push(ScalarValue::Utf8(valid(i).then(|| a.value(i).to_string())));
                }
            }
            DataType::Timestamp(TimeUnit::Millisecond, tz) => {
                let a = c.as_primitive::<TimestampMillisecondType>();
                for (i, r) in rows.iter_mut().enumerate() {
                    r.0.push(ScalarValue::TimestampMillisecond(
                        valid(i).then(|| a.value(i)),
                        tz.clone(),
                    ));
                }
            }
            _ => {
                for (i, r) in rows.iter_mut().enumerate() {
                    r.0.push(ScalarValue::try_from_array(c, i).map_err(|e| e.to_string())?);
                }
            }
        }
    }
    Ok(rows)
}

/// Milliseconds since the epoch of a timestamp or integer value (`None` for null).
pub fn millis(v: &ScalarValue) -> Option<i64> {
    match v {
        ScalarValue::TimestampMillisecond(v, _) => *v,
        ScalarValue::TimestampSecond(v, _) => v.map(|v| v * 1000),
        ScalarValue::TimestampMicrosecond(v, _) => v.map(|v| v / 1000),
        ScalarValue::TimestampNanosecond(v, _) => v.map(|v| v / 1_000_000),
        ScalarValue::Int64(v) => *v,
        ScalarValue::Int32(v) => v.map(i64::from),
        _ => None,
    }
}

/// A timestamp in milliseconds, as the SQL layer's TIMESTAMP columns hold them.
pub fn timestamp(ms: Option<i64>) -> ScalarValue {
    ScalarValue::TimestampMillisecond(ms, None)
}

/// Decodes input values of a declared schema.
pub struct RowDecoder {
    pub schema: SchemaRef,
    pub format: Format,
    /// Columns appended as nulls (filled by a window aggregate: `window_start`, `window_end`).
    pub extra_nulls: Vec<DataType>,
}

impl RowDecoder {
    /// Decodes one input value as a row of `schema` (then the `extra_nulls`).
    ///
    /// # Errors
    ///
    /// A message naming the field or column: JSON that is not an object, or a field of the wrong
    /// type, or missing while not nullable; CSV that is not UTF-8, has another number of columns,
    /// or a cell that does not parse as its type. Raw values never fail.
    pub fn decode(&self, data: &[u8]) -> Result<Row, String> {
        let mut values = match self.format {
            Format::Json => self.decode_json(data)?,
            Format::Csv => self.decode_csv(data)?,
            Format::Raw => {
                let text = String::from_utf8_lossy(data).into_owned();
                vec![ScalarValue::Utf8(Some(text))]
            }
        };
        for ty in &self.extra_nulls {
            values.push(ScalarValue::try_from(ty).unwrap_or(ScalarValue::Null));
        }
        Ok(Row(values))
    }

    fn decode_json(&self, data: &[u8]) -> Result<Vec<ScalarValue>, String> {
        let fields = self.schema.fields();
        if let Ok(slots) = super::json_object::fields_in_order::<serde_json::Value>(data, fields) {
            return fields
                .iter()
                .zip(slots)
                .map(|(f, v)| self.column_of(f, v.unwrap_or(serde_json::Value::Null)))
                .collect();
        }
        // Not a well-formed JSON object: the slower path says what is wrong.
        let value: serde_json::Value =
            serde_json::from_slice(data).map_err(|e| format!("invalid JSON: {e}"))?;
        let serde_json::Value::Object(map) = value else {
            return Err(format!(
                "expected a JSON object with the fields {}, found {}",
                self.field_names(),
                short(&value.to_string())
            ));
        };
        self.schema
            .fields()
            .iter()
            .map(|f| self.column_of(f, map.get(f.name()).cloned().unwrap_or_default()))
            .collect()
    }

    /// One field's JSON value as its column's scalar.
    fn column_of(
        &self,
        f: &datafusion::arrow::datatypes::Field,
        v: serde_json::Value,
    ) -> Result<ScalarValue, String> {
        let s = from_json(v, f.data_type()).map_err(|e| format!("field `{}`: {e}", f.name()))?;
        if s.is_null() && !f.is_nullable() {
            Err(format!("field `{}` is missing or null", f.name()))
        } else {
            Ok(s)
        }
    }

    fn decode_csv(&self, data: &[u8]) -> Result<Vec<ScalarValue>, String> {
        let line = std::str::from_utf8(data).map_err(|e| format!("invalid UTF-8: {e}"))?;
        let cells = split_csv(line.trim_end_matches(['\r', '\n']));
        if cells.len() != self.schema.fields().len() {
            return Err(format!(
                "expected {} CSV columns ({}), found {}",
                self.schema.fields().len(),
                self.field_names(),
                cells.len()
            ));
        }
        self.schema
            .fields()
            .iter()
            .zip(cells)
            .map(|(f, cell)| {
                from_text(&cell, f.data_type()).map_err(|e| format!("column `{}`: {e}", f.name()))
            })
            .collect()
    }

    fn field_names(&self) -> String {
        let names: Vec<_> = self
            .schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        names.join(", ")
    }
}

fn short(s: &str) -> String {
    if s.len() > 60 {
        format!("{}…", &s[..s.floor_char_boundary(60)])
    } else {
        s.to_string()
    }
}

/// Splits one CSV line (RFC 4180 quotes; no embedded newlines).
fn split_csv(line: &str) -> Vec<String> {
    let mut cells = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                cells.last_mut().unwrap().push('"');
            }
            '"' => quoted = !quoted,
            ',' if !quoted => cells.push(String::new()),
            c => cells.last_mut().unwrap().push(c),
        }
    }
    cells
}

fn type_name(ty: &DataType) -> &'static str {
    match ty {
        DataType::Int64 | DataType::Int32 | DataType::Int16 | DataType::Int8 => "BIGINT",
        DataType::Float64 | DataType::Float32 => "DOUBLE",
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "VARCHAR",
        DataType::Boolean => "BOOLEAN",
        DataType::Timestamp(..) => "TIMESTAMP",
        _ => "value",
    }
}

/// A JSON value as a column's scalar; a string is moved into a text column, not copied.
fn from_json(v: serde_json::Value, ty: &DataType) -> Result<ScalarValue, String> {
    match (ty, v) {
        (DataType::Utf8, serde_json::Value::String(s)) => Ok(ScalarValue::Utf8(Some(s))),
        (ty, v) => from_json_value(&v, ty),
    }
}

fn from_json_value(v: &serde_json::Value, ty: &DataType) -> Result<ScalarValue, String> {
    use serde_json::Value as J;
    let mismatch = || {
        Err(format!(
            "expected {}, found {}",
            type_name(ty),
            short(&v.to_string())
        ))
    };
    Ok(match (ty, v) {
        (_, J::Null) => ScalarValue::try_from(ty).map_err(|e| e.to_string())?,
        (DataType::Int64, J::Number(n)) => match n.as_i64() {
            Some(i) => ScalarValue::Int64(Some(i)),
            None => return mismatch(),
        },
        (DataType::Float64, J::Number(n)) => ScalarValue::Float64(n.as_f64()),
        (DataType::Utf8, J::String(s)) => ScalarValue::Utf8(Some(s.clone())),
        (DataType::Utf8, J::Number(_) | J::Bool(_)) => ScalarValue::Utf8(Some(v.to_string())),
        (DataType::Boolean, J::Bool(b)) => ScalarValue::Boolean(Some(*b)),
        (DataType::Timestamp(..), J::Number(n)) => match n.as_i64() {
            Some(ms) => timestamp(Some(ms)),
            None => return mismatch(),
        },
        (DataType::Timestamp(..), J::String(s)) => timestamp(Some(parse_timestamp(s)?)),
        _ => return mismatch(),
    })
}

fn from_text(s: &str, ty: &DataType) -> Result<ScalarValue, String> {
    if s.is_empty() && *ty != DataType::Utf8 {
        return ScalarValue::try_from(ty).map_err(|e| e.to_string());
    }
    let bad = || format!("expected {}, found {:?}", type_name(ty), short(s));
    Ok(match ty {
        DataType::Int64 => ScalarValue::Int64(Some(s.trim().parse().map_err(|_| bad())?)),
        DataType::Float64 => ScalarValue::Float64(Some(s.trim().parse().map_err(|_| bad())?)),
        DataType::Boolean => ScalarValue::Boolean(Some(s.trim().parse().map_err(|_| bad())?)),
        DataType::Timestamp(..) => timestamp(Some(match s.trim().parse::<i64>() {
            Ok(ms) => ms,
            Err(_) => parse_timestamp(s)?,
        })),
        _ => ScalarValue::Utf8(Some(s.to_string())),
    })
}

/// `2024-05-01T10:00:00Z`, `2024-05-01 10:00:00.250` (UTC when no offset is given).
pub(crate) fn parse_timestamp(s: &str) -> Result<i64, String> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis());
    }
    for f in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, f) {
            return Ok(t.and_utc().timestamp_millis());
        }
    }
    Err(format!(
        "expected a timestamp (epoch milliseconds or ISO 8601), found {:?}",
        short(s)
    ))
}

/// [`to_json`] written straight to `out` for the common types.
pub(crate) fn write_json(v: &ScalarValue, out: &mut Vec<u8>) -> serde_json::Result<()> {
    match v {
        ScalarValue::Int64(Some(i)) | ScalarValue::TimestampMillisecond(Some(i), _) => {
            json_text::int(*i, out)
        }
        ScalarValue::Float64(Some(f)) => json_text::float(*f, out),
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => json_text::string(s, out),
        other => return serde_json::to_writer(out, &to_json(other)),
    }
    Ok(())
}

/// A value as JSON (timestamps as epoch milliseconds, so outputs read back as inputs).
pub fn to_json(v: &ScalarValue) -> serde_json::Value {
    use serde_json::Value as J;
    if v.is_null() {
        return J::Null;
    }
    if let Some(ms) = millis(v).filter(|_| matches!(v.data_type(), DataType::Timestamp(..))) {
        return J::from(ms);
    }
    match v {
        ScalarValue::Boolean(Some(b)) => J::Bool(*b),
        ScalarValue::Int8(Some(i)) => J::from(*i),
        ScalarValue::Int16(Some(i)) => J::from(*i),
        ScalarValue::Int32(Some(i)) => J::from(*i),
        ScalarValue::Int64(Some(i)) => J::from(*i),
        ScalarValue::UInt8(Some(i)) => J::from(*i),
        ScalarValue::UInt16(Some(i)) => J::from(*i),
        ScalarValue::UInt32(Some(i)) => J::from(*i),
        ScalarValue::UInt64(Some(i)) => J::from(*i),
        ScalarValue::Float32(Some(f)) => J::from(*f as f64),
        ScalarValue::Float64(Some(f)) => J::from(*f),
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => J::String(s.clone()),
        other => J::String(other.to_string()),
    }
}

fn to_text(v: &ScalarValue) -> String {
    match to_json(v) {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(s) => s,
        other => other.to_string(),
    }
}

/// Encodes output values: a JSON object with the schema's column names, a CSV line, or the
/// first column as raw text. `None` (a deleted key of an upsert output) is a tombstone.
pub struct RowEncoder {
    pub schema: SchemaRef,
    pub format: Format,
}

impl Serde<Option<Row>> for RowEncoder {
    fn serialize(&self, value: &Option<Row>, out: &mut Vec<u8>) -> Result<bool, String> {
        let Some(row) = value else { return Ok(false) };
        match self.format {
            Format::Json => {
                // Written field by field in the SELECT's order, without a JSON value between.
                out.push(b'{');
                for (i, (f, v)) in self.schema.fields().iter().zip(&row.0).enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    serde_json::to_writer(&mut *out, f.name()).map_err(|e| e.to_string())?;
                    out.push(b':');
                    write_json(v, out).map_err(|e| e.to_string())?;
                }
                out.push(b'}');
            }
            Format::Csv => {
                let cells: Vec<String> = row
                    .0
                    .iter()
                    .map(|v| {
                        let t = to_text(v);
                        if t.contains([',', '"', '\n']) {
                            format!("\"{}\"", t.replace('"', "\"\""))
                        } else {
                            t
                        }
                    })
                    .collect();
                out.extend_from_slice(cells.join(",").as_bytes());
            }
            Format::Raw => {
                out.extend_from_slice(row.0.first().map(to_text).unwrap_or_default().as_bytes())
            }
        }
        Ok(true)
    }

    fn deserialize(&self, data: Option<&[u8]>) -> Result<Option<Row>, String> {
        let Some(data) = data else { return Ok(None) };
        RowDecoder {
            schema: self.schema.clone(),
            format: self.format,
            extra_nulls: vec![],
        }
        .decode(data)
        .map(Some)
    }
}

/// Record keys: nothing (null key), one column as its text, or several as a JSON object. The
/// same bytes both ways, so a stream re-keyed for a join lands in the partition of the table's
/// record with that key.
pub struct KeySerde {
    pub names: Vec<String>,
    pub types: Vec<DataType>,
}

impl Serde<Row> for KeySerde {
    fn serialize(&self, key: &Row, out: &mut Vec<u8>) -> Result<bool, String> {
        match key.0.as_slice() {
            [] => return Ok(false),
            [one] => out.extend_from_slice(to_text(one).as_bytes()),
            many => {
                let map: serde_json::Map<_, _> = self
                    .names
                    .iter()
                    .zip(many)
                    .map(|(n, v)| (n.clone(), to_json(v)))
                    .collect();
                serde_json::to_writer(&mut *out, &map).map_err(|e| e.to_string())?;
            }
        }
        Ok(true)
    }

    fn deserialize(&self, data: Option<&[u8]>) -> Result<Row, String> {
        let Some(data) = data else {
            return Ok(Row::default());
        };
        match self.types.as_slice() {
            [] => Ok(Row::default()),
            [ty] => {
                let text =
                    std::str::from_utf8(data).map_err(|e| format!("key: invalid UTF-8: {e}"))?;
                Ok(Row(vec![
                    from_text(text, ty).map_err(|e| format!("key: {e}"))?,
                ]))
            }
            types => {
                let value: serde_json::Value =
                    serde_json::from_slice(data).map_err(|e| format!("key: invalid JSON: {e}"))?;
                self.names
                    .iter()
                    .zip(types)
                    .map(|(n, ty)| {
                        from_json(value.get(n).cloned().unwrap_or_default(), ty)
                            .map_err(|e| format!("key field `{n}`: {e}"))
                    })
                    .collect::<Result<_, _>>()
                    .map(Row)
            }
        }
    }
}

/// An input topic's values, decoded as rows (a null value is not a row: it is refused and goes
/// to the dead-letter topic).
pub struct InputSerde(pub RowDecoder);

impl Serde<Option<Row>> for InputSerde {
    fn serialize(&self, row: &Option<Row>, out: &mut Vec<u8>) -> Result<bool, String> {
        RowCodec.serialize(row, out)
    }
    fn deserialize(&self, data: Option<&[u8]>) -> Result<Option<Row>, String> {
        let data = data.ok_or("a null value (tombstone) where a row was expected")?;
        self.0.decode(data).map(Some)
    }
}

/// The binary form of rows inside a job (repartition topics, changelogs, aggregate states):
/// a tag byte per value, then its fixed-size or length-prefixed payload.
#[derive(Clone, Copy, Default)]
pub struct RowCodec;

const NULL: u8 = 0;
const I64: u8 = 1;
const F64: u8 = 2;
const STR: u8 = 3;
const BOOL: u8 = 4;
const TS_MS: u8 = 5;
const U64: u8 = 6;
const I32: u8 = 7;
const TS_US: u8 = 8;
const TS_NS: u8 = 9;

impl RowCodec {
    /// Appends `row` in the binary form.
    ///
    /// # Errors
    ///
    /// A message if a value's type cannot be kept in state yet (one other than the integer, float,
    /// text, boolean and timestamp types); `out` then holds part of the row.
    pub fn write(&self, row: &Row, out: &mut Vec<u8>) -> Result<(), String> {
        out.extend_from_slice(&(row.0.len() as u32).to_le_bytes());
        for v in &row.0 {
            write_value(v, out)?;
        }
        Ok(())
    }

    /// Reads one row written by [`write`](Self::write) from the front of `data`, advancing it.
    ///
    /// # Errors
    ///
    /// A message for a truncated row or an unknown value tag.
    pub fn read(&self, data: &mut &[u8]) -> Result<Row, String> {
        let n = u32::from_le_bytes(take(data, 4)?.try_into().unwrap()) as usize;
        (0..n)
            .map(|_| read_value(data))
            .collect::<Result<_, _>>()
            .map(Row)
    }
}

fn write_value(v: &ScalarValue, out: &mut Vec<u8>) -> Result<(), String> {
    let fixed = |out: &mut Vec<u8>, tag: u8, bytes: [u8; 8]| {
        out.push(tag);
        out.extend_from_slice(&bytes);
    };
    match v {
        v if v.is_null() => {
            // Nulls keep their type: accumulator states and windows need it back.
            out.push(NULL);
            out.push(match v.data_type() {
                DataType::Int64 => I64,
                DataType::Float64 => F64,
                DataType::Utf8 => STR,
                DataType::Boolean => BOOL,
                DataType::Timestamp(TimeUnit::Millisecond, _) => TS_MS,
                DataType::UInt64 => U64,
                DataType::Int32 => I32,
                _ => NULL,
            });
        }
        ScalarValue::Int64(Some(i)) => fixed(out, I64, i.to_le_bytes()),
        ScalarValue::UInt64(Some(i)) => fixed(out, U64, i.to_le_bytes()),
        ScalarValue::Int32(Some(i)) => fixed(out, I32, (*i as i64).to_le_bytes()),
        ScalarValue::Float64(Some(f)) => fixed(out, F64, f.to_le_bytes()),
        ScalarValue::TimestampMillisecond(Some(t), _) => fixed(out, TS_MS, t.to_le_bytes()),
        ScalarValue::TimestampMicrosecond(Some(t), _) => fixed(out, TS_US, t.to_le_bytes()),
        ScalarValue::TimestampNanosecond(Some(t), _) => fixed(out, TS_NS, t.to_le_bytes()),
        ScalarValue::Boolean(Some(b)) => {
            out.push(BOOL);
            out.push(*b as u8);
        }
        ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) => {
            out.push(STR);
            out.extend_from_slice(&(s.len() as u32).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        other => {
            return Err(format!(
                "values of type {} cannot be kept in a streaming job's state yet",
                other.data_type()
            ));
        }
    }
    Ok(())
}

fn take<'a>(data: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
    if data.len() < n {
        return Err("truncated row".into());
    }
    let (head, rest) = data.split_at(n);
    *data = rest;
    Ok(head)
}

fn read_value(data: &mut &[u8]) -> Result<ScalarValue, String> {
    let tag = take(data, 1)?[0];
    let eight =
        |data: &mut &[u8]| -> Result<[u8; 8], String> { Ok(take(data, 8)?.try_into().unwrap()) };
    Ok(match tag {
        NULL => match take(data, 1)?[0] {
            I64 => ScalarValue::Int64(None),
            F64 => ScalarValue::Float64(None),
            STR => ScalarValue::Utf8(None),
            BOOL => ScalarValue::Boolean(None),
            TS_MS => timestamp(None),
            U64 => ScalarValue::UInt64(None),
            I32 => ScalarValue::Int32(None),
            _ => ScalarValue::Null,
        },
        I64 => ScalarValue::Int64(Some(i64::from_le_bytes(eight(data)?))),
        U64 => ScalarValue::UInt64(Some(u64::from_le_bytes(eight(data)?))),
        I32 => ScalarValue::Int32(Some(i64::from_le_bytes(eight(data)?) as i32)),
        F64 => ScalarValue::Float64(Some(f64::from_le_bytes(eight(data)?))),
        TS_MS => timestamp(Some(i64::from_le_bytes(eight(data)?))),
        TS_US => ScalarValue::TimestampMicrosecond(Some(i64::from_le_bytes(eight(data)?)), None),
        TS_NS => ScalarValue::TimestampNanosecond(Some(i64::from_le_bytes(eight(data)?)), None),
        BOOL => ScalarValue::Boolean(Some(take(data, 1)?[0] != 0)),
        STR => {
            let n = u32::from_le_bytes(take(data, 4)?.try_into().unwrap()) as usize;
            let s = std::str::from_utf8(take(data, n)?).map_err(|e| e.to_string())?;
            ScalarValue::Utf8(Some(s.to_string()))
        }
        t => return Err(format!("unknown value tag {t} in a row")),
    })
}

impl Serde<Row> for RowCodec {
    fn serialize(&self, row: &Row, out: &mut Vec<u8>) -> Result<bool, String> {
        self.write(row, out)?;
        Ok(true)
    }
    fn deserialize(&self, data: Option<&[u8]>) -> Result<Row, String> {
        let mut d = data.ok_or("null where a row was expected")?;
        self.read(&mut d)
    }
}

impl Serde<Option<Row>> for RowCodec {
    fn serialize(&self, row: &Option<Row>, out: &mut Vec<u8>) -> Result<bool, String> {
        match row {
            Some(r) => self.serialize(r, out),
            None => Ok(false),
        }
    }
    fn deserialize(&self, data: Option<&[u8]>) -> Result<Option<Row>, String> {
        data.map(|d| self.deserialize(Some(d))).transpose()
    }
}

/// Rows of rows (accumulator states: one row of state values per aggregate).
impl Serde<Vec<Row>> for RowCodec {
    fn serialize(&self, rows: &Vec<Row>, out: &mut Vec<u8>) -> Result<bool, String> {
        out.extend_from_slice(&(rows.len() as u32).to_le_bytes());
        for r in rows {
            self.write(r, out)?;
        }
        Ok(true)
    }
    fn deserialize(&self, data: Option<&[u8]>) -> Result<Vec<Row>, String> {
        let mut d = data.ok_or("null where aggregate states were expected")?;
        let n = u32::from_le_bytes(take(&mut d, 4)?.try_into().unwrap()) as usize;
        (0..n).map(|_| self.read(&mut d)).collect()
    }
}

/// The null of each type of a schema (a left join's missing side).
pub fn nulls(schema: &SchemaRef) -> Row {
    Row(schema
        .fields()
        .iter()
        .map(|f| ScalarValue::try_from(f.data_type()).unwrap_or(ScalarValue::Null))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codec_round_trips_values_and_typed_nulls() {
        let row = Row(vec![
            ScalarValue::Int64(Some(-3)),
            ScalarValue::Float64(None),
            ScalarValue::Utf8(Some("né".into())),
            timestamp(Some(1_700_000_000_123)),
            ScalarValue::Boolean(Some(true)),
            ScalarValue::UInt64(Some(9)),
        ]);
        let mut buf = Vec::new();
        RowCodec.write(&row, &mut buf).unwrap();
        assert_eq!(RowCodec.read(&mut &buf[..]).unwrap(), row);
    }

    #[test]
    fn csv_cells_keep_quoted_commas() {
        assert_eq!(split_csv(r#"a,"b,c","d""e""#), vec!["a", "b,c", "d\"e"]);
    }
}
