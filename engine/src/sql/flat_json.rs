//! A flat JSON object read into a schema's column slots by hand, for the common record: scalar
//! values, strings without escapes, field names in the order the producer always writes them.
//! serde's visitor costs more than the scan itself on records of a hundred bytes.
//!
//! Contract: `Some(())` when `data` is one JSON object (surrounding whitespace allowed) whose
//! values are all scalars, whose strings (names included) hold no escape, and whose numbers
//! are read here to exactly the value serde_json gives; `slots[i]` then holds the value of
//! `fields[i]` (`None` where absent; the last one wins for a repeated name, as with serde).
//! `None` for anything else, valid or not: the caller then reads the record with serde, which
//! gives the same values, or the error message.

use super::chunk::Cell;
use datafusion::arrow::datatypes::Fields;
use std::borrow::Cow;

/// `10^i` for the exponents a float is read with here: each is exact in an f64 and equal to
/// the entry of serde_json's own table, so the multiplication or division is serde's.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// Reads `data` into `slots` (resized to `fields`); see the module documentation.
pub(crate) fn read_flat<'a>(
    data: &'a [u8],
    fields: &Fields,
    slots: &mut Vec<Option<Cell<'a>>>,
) -> Option<()> {
    slots.clear();
    slots.resize_with(fields.len(), || None);
    let mut s = Scan { b: data, i: 0 };
    s.eat(b'{')?;
    // Producers write their fields in one order: the field after the last one matched is
    // tried first.
    let mut next = 0;
    if s.peek()? == b'}' {
        s.i += 1;
    } else {
        loop {
            s.eat(b'"')?;
            let name = s.string()?;
            s.eat(b':')?;
            let value = s.value()?;
            let column = match fields.get(next) {
                Some(f) if f.name() == name => Some(next),
                _ => fields.iter().position(|f| f.name() == name),
            };
            if let Some(c) = column {
                slots[c] = Some(value);
                next = c + 1;
            }
            match s.peek()? {
                b',' => s.i += 1,
                b'}' => {
                    s.i += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    s.ws();
    (s.i == data.len()).then_some(())
}

struct Scan<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Scan<'a> {
    fn ws(&mut self) {
        while matches!(self.b.get(self.i), Some(b' ' | b'\n' | b'\r' | b'\t')) {
            self.i += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.b.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.i += 1)
    }

    /// A string from after its opening quote: `None` at an escape or a control character
    /// (serde unescapes the one and refuses the other), or bytes that are not UTF-8.
    fn string(&mut self) -> Option<&'a str> {
        let rest = &self.b[self.i..];
        let end = rest
            .iter()
            .position(|&c| c == b'"' || c == b'\\' || c < 0x20)?;
        if rest[end] != b'"' {
            return None;
        }
        self.i += end + 1;
        std::str::from_utf8(&rest[..end]).ok()
    }

    fn value(&mut self) -> Option<Cell<'a>> {
        match self.peek()? {
            b'"' => {
                self.i += 1;
                self.string().map(|s| Cell::Str(Cow::Borrowed(s)))
            }
            b't' => self.literal(b"true", Cell::Bool(true)),
            b'f' => self.literal(b"false", Cell::Bool(false)),
            b'n' => self.literal(b"null", Cell::Null),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    fn literal(&mut self, word: &[u8], cell: Cell<'a>) -> Option<Cell<'a>> {
        self.b[self.i..].starts_with(word).then(|| {
            self.i += word.len();
            cell
        })
    }

    /// Digits onto `significand`; how many there were (`None` when it overflows: serde
    /// switches to another algorithm there).
    fn digits(&mut self, significand: &mut u64) -> Option<usize> {
        let start = self.i;
        while let Some(&c @ b'0'..=b'9') = self.b.get(self.i) {
            *significand = significand
                .checked_mul(10)?
                .checked_add(u64::from(c - b'0'))?;
            self.i += 1;
        }
        Some(self.i - start)
    }

    /// A number as serde_json reads it (without its `float_roundtrip` feature): an integer
    /// is a u64, or an i64 when negative (`-0` is the float -0.0); a number with a fraction
    /// or an exponent is its decimal significand as an f64, multiplied or divided once by
    /// `10^|exponent|`. Read here only while that power of ten is exact, where this code
    /// makes the same two roundings (significand to f64, then the product) serde makes.
    fn number(&mut self) -> Option<Cell<'a>> {
        let negative = self.b[self.i] == b'-';
        self.i += usize::from(negative);
        let mut significand = 0u64;
        let first = *self.b.get(self.i)?;
        let int_digits = self.digits(&mut significand)?;
        if int_digits == 0 || (first == b'0' && int_digits > 1) {
            return None;
        }
        let mut exponent = 0i32;
        let mut float = false;
        if self.b.get(self.i) == Some(&b'.') {
            self.i += 1;
            float = true;
            let fraction = self.digits(&mut significand)?;
            if fraction == 0 {
                return None;
            }
            // At most 20 digits fit the u64 the significand is.
            exponent = -(fraction as i32);
        }
        if matches!(self.b.get(self.i), Some(b'e' | b'E')) {
            self.i += 1;
            float = true;
            let sign = match self.b.get(self.i) {
                Some(b'-') => -1,
                Some(b'+') => 1,
                _ => 0,
            };
            self.i += usize::from(sign != 0);
            let mut e = 0u64;
            if self.digits(&mut e)? == 0 || e > 1000 {
                return None;
            }
            exponent += if sign < 0 { -(e as i32) } else { e as i32 };
        }
        if !float {
            return match (negative, significand) {
                (false, s) => Some(Cell::U64(s)),
                (true, 0) => Some(Cell::F64(-0.0)),
                (true, s) => Some(Cell::I64(0i64.checked_sub_unsigned(s)?)),
            };
        }
        let scale = *POW10.get(exponent.unsigned_abs() as usize)?;
        let magnitude = if exponent >= 0 {
            significand as f64 * scale
        } else {
            significand as f64 / scale
        };
        Some(Cell::F64(if negative { -magnitude } else { magnitude }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{DataType, Field};

    fn fields() -> Fields {
        ["ts", "region", "speed", "ok"]
            .iter()
            .map(|n| Field::new(*n, DataType::Utf8, true))
            .collect()
    }

    fn show(cell: &Option<Cell>) -> String {
        match cell {
            None => "-".into(),
            Some(Cell::Null) => "null".into(),
            Some(Cell::Bool(b)) => format!("{b}"),
            Some(Cell::I64(i)) => format!("i{i}"),
            Some(Cell::U64(u)) => format!("u{u}"),
            Some(Cell::F64(f)) => format!("f{f:?}"),
            Some(Cell::Str(s)) => format!("s{s}"),
        }
    }

    fn read(text: &str) -> Option<Vec<String>> {
        let mut slots = Vec::new();
        read_flat(text.as_bytes(), &fields(), &mut slots)?;
        Some(slots.iter().map(show).collect())
    }

    /// The records of the reference jobs take the hand path: in field order, out of order,
    /// with a field the schema does not name and a repeated one (the last wins).
    #[test]
    fn flat_records_are_read_by_hand() {
        assert_eq!(
            read(r#"{"ts":1700000000127,"region":"north","speed":21.917,"lat":-52.5e1}"#).unwrap(),
            ["u1700000000127", "snorth", "f21.917", "-"]
        );
        assert_eq!(
            read(" { \"ok\" : true , \"speed\" : -0 , \"ts\" : -3 , \"ok\" : null } \n").unwrap(),
            ["i-3", "-", "f-0.0", "null"]
        );
        assert_eq!(read("{}").unwrap(), ["-", "-", "-", "-"]);
    }

    /// What serde must read (or refuse) is left to it.
    #[test]
    fn escapes_nesting_and_unusual_numbers_are_left_to_serde() {
        for text in [
            r#"{"region":"a\"b"}"#,
            r#"{"re\u0067ion":"a"}"#,
            r#"{"ts":[1]}"#,
            r#"{"ts":{"a":1}}"#,
            r#"{"ts":1e400}"#,
            r#"{"ts":12345678901234567890123}"#,
            r#"{"ts":01}"#,
            r#"{"ts":1.}"#,
            r#"{"ts":1}x"#,
            r#"{"ts":1,}"#,
            "{\"region\":\"a\tb\"}",
        ] {
            assert_eq!(read(text), None, "{text}");
        }
    }
}
