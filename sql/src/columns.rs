//! Column buffers: the columns of a chunk while its records are decoded, one plain `Vec` per
//! column, turned into Arrow arrays without a copy at the end.
//!
//! Why not Arrow's builders: a record is read field by field straight into its columns, and
//! when one of its fields turns out not to fit (a string where a number belongs, an escape the
//! fast reader leaves to serde), what it already wrote must be taken back ([`Columns::truncate`]),
//! which the builders cannot do.
//!
//! Contract: after every whole record each column holds one value per row; a value pushed is of
//! its column's kind (the pushing code checks); [`Columns::finish`] gives arrays of the schema's
//! types, null where a null was pushed.

use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, StringArray, TimestampMillisecondArray,
};
use datafusion::arrow::buffer::{NullBuffer, OffsetBuffer, ScalarBuffer};
use datafusion::arrow::datatypes::{DataType, Fields};
use std::sync::Arc;

/// What a column holds, for the input types a job can declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    I64,
    F64,
    Str,
    Bool,
    /// Milliseconds since the epoch.
    Timestamp,
}

impl Kind {
    pub fn of(ty: &DataType) -> Kind {
        match ty {
            DataType::Int64 => Kind::I64,
            DataType::Float64 => Kind::F64,
            DataType::Boolean => Kind::Bool,
            DataType::Timestamp(..) => Kind::Timestamp,
            _ => Kind::Str,
        }
    }
}

/// One column being filled. Only the vectors of its kind are used.
pub(crate) struct Column {
    pub kind: Kind,
    pub nullable: bool,
    /// `I64`, `Timestamp` and `Bool` (0 or 1) values.
    ints: Vec<i64>,
    floats: Vec<f64>,
    /// `Str`: `offsets[i]..offsets[i + 1]` of `bytes` is row i (UTF-8, checked when pushed).
    offsets: Vec<i32>,
    bytes: Vec<u8>,
    /// The rows holding a null, ascending: most columns have none, so a row costs no
    /// validity entry until one does.
    null_rows: Vec<usize>,
}

impl Column {
    fn new(kind: Kind, nullable: bool, rows: usize) -> Self {
        let (ints, floats, offsets) = match kind {
            Kind::F64 => (0, rows, 0),
            Kind::Str => (0, 0, rows + 1),
            _ => (rows, 0, 0),
        };
        let mut offsets = Vec::with_capacity(offsets);
        if kind == Kind::Str {
            offsets.push(0);
        }
        Self {
            kind,
            nullable,
            ints: Vec::with_capacity(ints),
            floats: Vec::with_capacity(floats),
            offsets,
            bytes: Vec::with_capacity(if kind == Kind::Str { rows * 16 } else { 0 }),
            null_rows: Vec::new(),
        }
    }

    #[inline]
    pub fn push_i64(&mut self, v: i64) {
        self.ints.push(v);
    }

    #[inline]
    pub fn push_f64(&mut self, v: f64) {
        self.floats.push(v);
    }

    #[inline]
    pub fn push_bool(&mut self, v: bool) {
        self.ints.push(i64::from(v));
    }

    /// `v` must be UTF-8 (the array is checked once more when finished).
    #[inline]
    pub fn push_utf8(&mut self, v: &[u8]) {
        self.bytes.extend_from_slice(v);
        self.offsets.push(self.bytes.len() as i32);
    }

    /// `src[..len]`, which must be UTF-8. `src` may go on past it: then a short string is
    /// copied as one 16-byte move (and the excess cut off) rather than by a call to `memcpy`.
    #[inline]
    pub fn push_utf8_prefix(&mut self, src: &[u8], len: usize) {
        match src.get(..16) {
            Some(wide) if len <= 16 => {
                let end = self.bytes.len() + len;
                self.bytes.extend_from_slice(wide);
                self.bytes.truncate(end);
            }
            _ => self.bytes.extend_from_slice(&src[..len]),
        }
        self.offsets.push(self.bytes.len() as i32);
    }

    /// A null of the column's kind (a placeholder value under a cleared validity bit).
    #[inline]
    pub fn push_null(&mut self) {
        self.null_rows.push(self.len());
        match self.kind {
            Kind::F64 => self.floats.push(0.0),
            Kind::Str => self.offsets.push(self.bytes.len() as i32),
            _ => self.ints.push(0),
        }
    }

    /// The values pushed so far.
    fn len(&self) -> usize {
        match self.kind {
            Kind::F64 => self.floats.len(),
            Kind::Str => self.offsets.len() - 1,
            _ => self.ints.len(),
        }
    }

    fn truncate(&mut self, rows: usize) {
        if self.len() <= rows {
            return;
        }
        while self.null_rows.last().is_some_and(|&r| r >= rows) {
            self.null_rows.pop();
        }
        match self.kind {
            Kind::F64 => self.floats.truncate(rows),
            Kind::Str => {
                self.offsets.truncate(rows + 1);
                self.bytes.truncate(self.offsets[rows] as usize);
            }
            _ => self.ints.truncate(rows),
        }
    }

    fn finish(self, ty: &DataType) -> ArrayRef {
        let nulls = (!self.null_rows.is_empty()).then(|| {
            let mut valid = vec![true; self.len()];
            for &r in &self.null_rows {
                valid[r] = false;
            }
            NullBuffer::from(valid)
        });
        match self.kind {
            Kind::I64 => Arc::new(Int64Array::new(ScalarBuffer::from(self.ints), nulls)),
            Kind::Timestamp => {
                let a = TimestampMillisecondArray::new(ScalarBuffer::from(self.ints), nulls);
                Arc::new(match ty {
                    DataType::Timestamp(_, tz) => a.with_timezone_opt(tz.clone()),
                    _ => a,
                })
            }
            Kind::F64 => Arc::new(Float64Array::new(ScalarBuffer::from(self.floats), nulls)),
            Kind::Bool => Arc::new(BooleanArray::new(
                self.ints.iter().map(|v| *v != 0).collect(),
                nulls,
            )),
            Kind::Str => Arc::new(StringArray::new(
                OffsetBuffer::new(ScalarBuffer::from(self.offsets)),
                self.bytes.into(),
                nulls,
            )),
        }
    }
}

/// The columns of one chunk.
pub(crate) struct Columns {
    pub columns: Vec<Column>,
    rows: usize,
}

impl Columns {
    pub fn new(fields: &Fields, rows: usize) -> Self {
        Self {
            columns: fields
                .iter()
                .map(|f| Column::new(Kind::of(f.data_type()), f.is_nullable(), rows))
                .collect(),
            rows: 0,
        }
    }

    /// Marks the record whose values were just pushed (one per column) as a row.
    pub fn end_row(&mut self) {
        self.rows += 1;
        debug_assert!(self.columns.iter().all(|c| c.len() == self.rows));
    }

    /// Takes back what the record in progress pushed.
    pub fn abandon_row(&mut self) {
        for c in &mut self.columns {
            c.truncate(self.rows);
        }
    }

    pub fn finish(self, fields: &Fields) -> Vec<ArrayRef> {
        self.columns
            .into_iter()
            .zip(fields)
            .map(|(c, f)| c.finish(f.data_type()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::datatypes::{Field, Float64Type, Int64Type};

    #[test]
    fn an_abandoned_row_leaves_no_trace() {
        let fields: Fields = vec![
            Field::new("i", DataType::Int64, true),
            Field::new("s", DataType::Utf8, true),
            Field::new("f", DataType::Float64, true),
        ]
        .into();
        let mut cols = Columns::new(&fields, 4);
        cols.columns[0].push_i64(1);
        cols.columns[1].push_utf8(b"one");
        cols.columns[2].push_null();
        cols.end_row();
        cols.columns[0].push_null();
        cols.columns[1].push_utf8(b"abandoned");
        cols.abandon_row();
        cols.columns[0].push_i64(2);
        cols.columns[1].push_null();
        cols.columns[2].push_f64(2.5);
        cols.end_row();
        let arrays = cols.finish(&fields);
        let ints = arrays[0].as_primitive::<Int64Type>();
        assert_eq!((ints.value(0), ints.value(1), ints.null_count()), (1, 2, 0));
        let strs = arrays[1].as_string::<i32>();
        assert_eq!((strs.value(0), strs.is_null(1)), ("one", true));
        let floats = arrays[2].as_primitive::<Float64Type>();
        assert_eq!((floats.is_null(0), floats.value(1)), (true, 2.5));
    }
}
