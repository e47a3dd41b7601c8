//! A flat JSON object read by hand straight into a chunk's columns, for the common record:
//! scalar values, strings without escapes, field names in the order the producer always writes
//! them. serde's visitor costs more than the scan itself on records of a hundred bytes.
//!
//! Contract: [`FlatReader::read`] returns `true` when `data` is one JSON object (surrounding
//! whitespace allowed) whose values are all scalars, whose strings (names included) hold no
//! escape, whose numbers are read here to exactly the value serde_json gives, where no field
//! the schema names appears twice, and where every value fits its column as the row path would
//! convert it (a number into `BIGINT` only as an integer that fits, any number into `DOUBLE`,
//! text or epoch milliseconds into `TIMESTAMP`, `null` or an absent field only where the column
//! is nullable); it has then pushed one value into every column and ended the row. Otherwise
//! it returns `false` with the columns as they were: the caller reads the record with serde,
//! which gives the same values, or the error message.

use super::columns::{Column, Columns, Kind};
use super::row::parse_timestamp;
use datafusion::arrow::datatypes::Fields;
use runnel_engine::serdes::json_scan::{Number, Pattern, Scan};

/// Reads records of one schema (see the module documentation).
///
/// Two ways of finding a field, both comparing in place (no scan for the name's end, no UTF-8
/// check): the record as producers usually write it — every field in the schema's order, no
/// whitespace — is matched a field at a time against `{"name":` or `,"name":` (`leads`); from
/// the first field that differs, the record is read token by token, each name first compared
/// with the one after the last field matched (`quoted`: the name and its closing quote).
pub(crate) struct FlatReader<'a> {
    fields: &'a Fields,
    quoted: Vec<Option<Pattern>>,
    leads: Vec<Option<Pattern>>,
    /// `Record::seen` once every column has its value.
    all_seen: u64,
}

impl<'a> FlatReader<'a> {
    pub fn new(fields: &'a Fields) -> Self {
        // `name` between `before` and `after`; none for a name JSON writes with an escape,
        // which never matches in place.
        let pattern = |before: &[u8], name: &str, after: &[u8]| {
            let plain = !name.bytes().any(|c| c == b'"' || c == b'\\' || c < 0x20);
            if plain {
                Pattern::new(&[before, name.as_bytes(), after].concat())
            } else {
                None
            }
        };
        let quoted = fields
            .iter()
            .map(|f| pattern(b"", f.name(), b"\""))
            .collect();
        let leads = fields
            .iter()
            .enumerate()
            .map(|(i, f)| pattern(if i == 0 { b"{\"" } else { b",\"" }, f.name(), b"\":"))
            .collect();
        Self {
            fields,
            quoted,
            leads,
            all_seen: u64::MAX >> (64 - fields.len().clamp(1, 64)),
        }
    }

    /// Reads `data` as the next row of `columns`; see the module documentation.
    pub fn read(&self, data: &[u8], columns: &mut Columns) -> bool {
        if read_fields(data, self, columns).is_some() {
            columns.end_row();
            true
        } else {
            columns.abandon_row();
            false
        }
    }
}

/// The fields of one record as they are read: which columns got a value, and which field is
/// expected next.
struct Record<'n> {
    reader: &'n FlatReader<'n>,
    /// Bit `c` set once column `c` has its value (the schema's first 64; more go to serde).
    seen: u64,
    next: usize,
}

impl<'n> Record<'n> {
    fn new(reader: &'n FlatReader<'n>) -> Option<Self> {
        (reader.fields.len() <= 64).then_some(Self {
            reader,
            seen: 0,
            next: 0,
        })
    }

    /// The column of the name at the cursor (after its opening quote), the cursor then past
    /// its closing quote. Producers write their fields in one order: the field after the last
    /// one matched is tried first, and compared in place (no scan for its end, no UTF-8 check).
    #[inline(always)]
    fn column(&self, s: &mut Scan) -> Option<Option<usize>> {
        let fields = self.reader.fields;
        Some(match self.reader.quoted.get(self.next) {
            Some(Some(name)) if name.starts(&s.bytes[s.pos..]) => {
                s.pos += name.len;
                Some(self.next)
            }
            _ => {
                let name = s.string()?;
                fields.iter().position(|f| f.name().as_bytes() == name)
            }
        })
    }

    /// The value at the cursor into its column, or past it for a field the schema does not
    /// name.
    #[inline(always)]
    fn value(&mut self, column: Option<usize>, s: &mut Scan, columns: &mut Columns) -> Option<()> {
        let Some(c) = column else {
            return s.skip_value();
        };
        if self.seen & (1 << c) != 0 {
            // serde keeps the last of repeated fields: left to it.
            return None;
        }
        self.seen |= 1 << c;
        self.next = c + 1;
        value_into(s, &mut columns.columns[c])
    }

    /// Nulls for the columns the record has no field for, where they may be null.
    #[inline(always)]
    fn finish(&self, columns: &mut Columns) -> Option<()> {
        if self.seen == self.reader.all_seen {
            return Some(());
        }
        self.fill_absent(columns)
    }

    fn fill_absent(&self, columns: &mut Columns) -> Option<()> {
        for (c, column) in columns.columns.iter_mut().enumerate() {
            if self.seen & (1 << c) == 0 {
                if !column.nullable {
                    return None;
                }
                column.push_null();
            }
        }
        Some(())
    }
}

/// The record: in the usual layout a field at a time, from where it differs token by token.
fn read_fields(data: &[u8], reader: &FlatReader, columns: &mut Columns) -> Option<()> {
    let mut fields = Record::new(reader)?;
    let mut s = Scan::new(data);
    // The usual layout first; `more` says whether a field follows where it stops.
    let mut more = loop {
        let k = fields.next;
        match reader.leads.get(k) {
            Some(Some(lead)) if lead.starts(&s.bytes[s.pos..]) => {
                s.pos += lead.len;
                fields.value(Some(k), &mut s, columns)?;
            }
            _ if k == 0 => {
                s.eat(b'{')?;
                if s.peek()? == b'}' {
                    s.pos += 1;
                    break false;
                }
                break true;
            }
            _ => break s.after_value()?,
        }
    };
    while more {
        s.eat(b'"')?;
        let column = fields.column(&mut s)?;
        s.eat(b':')?;
        fields.value(column, &mut s, columns)?;
        more = s.after_value()?;
    }
    s.ws();
    if s.pos != data.len() {
        return None;
    }
    fields.finish(columns)
}

/// The value at the cursor into `column`, as the row path would convert it.
#[inline(always)]
fn value_into(s: &mut Scan, column: &mut Column) -> Option<()> {
    match (s.peek()?, column.kind) {
        (b'n', _) if column.nullable => s.literal(b"null").map(|_| column.push_null()),
        (b'"', Kind::Str) => {
            s.pos += 1;
            let start = s.pos;
            let len = s.string()?.len();
            column.push_utf8_prefix(&s.bytes[start..], len);
            Some(())
        }
        (b'"', Kind::Timestamp) => {
            s.pos += 1;
            let t = parse_timestamp(std::str::from_utf8(s.string()?).ok()?).ok()?;
            column.push_i64(t);
            Some(())
        }
        (b't', Kind::Bool) => s.literal(b"true").map(|_| column.push_bool(true)),
        (b'f', Kind::Bool) => s.literal(b"false").map(|_| column.push_bool(false)),
        (b'-' | b'0'..=b'9', Kind::I64 | Kind::Timestamp) => match s.number()? {
            Number::U64(u) => {
                column.push_i64(i64::try_from(u).ok()?);
                Some(())
            }
            Number::I64(i) => {
                column.push_i64(i);
                Some(())
            }
            Number::F64(_) => None,
        },
        (b'-' | b'0'..=b'9', Kind::F64) => {
            let f = match s.number()? {
                Number::U64(u) => u as f64,
                Number::I64(i) => i as f64,
                Number::F64(f) => f,
            };
            column.push_f64(f);
            Some(())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{DataType, Field};
    use datafusion::common::ScalarValue;

    fn fields() -> Fields {
        vec![
            Field::new("ts", DataType::Int64, true),
            Field::new("region", DataType::Utf8, true),
            Field::new("speed", DataType::Float64, true),
            Field::new("ok", DataType::Boolean, true),
        ]
        .into()
    }

    /// The row `text` reads as (each value as DataFusion prints it), or `None` when it is left
    /// to serde — with the columns as they were, checked by reading a good row after it.
    fn read(text: &str) -> Option<Vec<String>> {
        let fields = fields();
        let mut columns = Columns::new(&fields, 2);
        let reader = FlatReader::new(&fields);
        let read = reader.read(text.as_bytes(), &mut columns);
        assert!(reader.read(
            br#"{"ts":1,"region":"r","speed":1,"ok":true}"#,
            &mut columns
        ));
        let arrays = columns.finish(&fields);
        let n = arrays[0].len();
        assert_eq!(n, if read { 2 } else { 1 }, "{text}");
        let row = |i: usize| -> Vec<String> {
            arrays
                .iter()
                .map(|a| ScalarValue::try_from_array(a, i).unwrap().to_string())
                .collect()
        };
        assert_eq!(row(n - 1), ["1", "r", "1", "true"], "{text}");
        read.then(|| row(0))
    }

    /// The records of the reference jobs take the hand path: in field order, out of order,
    /// with fields the schema does not name, absent ones and nulls.
    #[test]
    fn flat_records_are_read_by_hand() {
        assert_eq!(
            read(r#"{"ts":1700000000127,"region":"north","speed":21.917,"lat":-52.5e1}"#).unwrap(),
            ["1700000000127", "north", "21.917", "NULL"]
        );
        assert_eq!(
            read(" { \"ok\" : true , \"speed\" : -0 , \"ts\" : -3 , \"x\" : null } \n").unwrap(),
            ["-3", "NULL", "-0", "true"]
        );
        assert_eq!(read("{}").unwrap(), ["NULL", "NULL", "NULL", "NULL"]);
        assert_eq!(
            read(r#"{"speed":7}"#).unwrap(),
            ["NULL", "NULL", "7", "NULL"]
        );
    }

    /// What serde must read (or refuse), and values the row path converts or refuses, are
    /// left to it.
    #[test]
    fn escapes_nesting_unusual_numbers_and_mismatched_types_are_left_to_serde() {
        for text in [
            r#"{"region":"a\"b"}"#,
            r#"{"re\u0067ion":"a"}"#,
            r#"{"ts":[1]}"#,
            r#"{"ts":{"a":1}}"#,
            r#"{"x":[1]}"#,
            r#"{"speed":1e400}"#,
            r#"{"ts":12345678901234567890123}"#,
            r#"{"ts":9223372036854775808}"#,
            r#"{"ts":1.5}"#,
            r#"{"ts":-0}"#,
            r#"{"ts":01}"#,
            r#"{"speed":1.}"#,
            r#"{"ts":1}x"#,
            r#"{"ts":1,}"#,
            r#"{"ts":1,"ts":2}"#,
            r#"{"region":5}"#,
            r#"{"ok":"yes"}"#,
            r#"{"speed":"fast"}"#,
            "{\"region\":\"a\tb\"}",
        ] {
            assert_eq!(read(text), None, "{text}");
        }
    }
}
