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

/// `10^i` for the exponents a float is read with here: each is exact in an f64 and equal to
/// the entry of serde_json's own table, so the multiplication or division is serde's.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// Up to 16 bytes as they are compared in place: two little-endian words and their masks, so
/// that a match costs two loads and two comparisons.
struct Pattern {
    words: [u64; 2],
    masks: [u64; 2],
    bytes: [u8; 16],
    len: usize,
}

impl Pattern {
    /// `None` when `text` is longer than 16 bytes.
    fn new(text: &[u8]) -> Option<Self> {
        if text.len() > 16 {
            return None;
        }
        let (mut bytes, mut mask) = ([0u8; 16], [0u8; 16]);
        bytes[..text.len()].copy_from_slice(text);
        mask[..text.len()].fill(0xff);
        Some(Self {
            words: [le_word(&bytes[..8]), le_word(&bytes[8..])],
            masks: [le_word(&mask[..8]), le_word(&mask[8..])],
            bytes,
            len: text.len(),
        })
    }

    /// Whether `rest` starts with the pattern.
    #[inline(always)]
    fn starts(&self, rest: &[u8]) -> bool {
        match rest.get(..16) {
            Some(chunk) => {
                (le_word(&chunk[..8]) & self.masks[0]) == self.words[0]
                    && (le_word(&chunk[8..]) & self.masks[1]) == self.words[1]
            }
            // Near the record's end: a loop beats a call to memcmp.
            None => {
                rest.len() >= self.len
                    && self.bytes[..self.len].iter().zip(rest).all(|(a, b)| a == b)
            }
        }
    }
}

/// The eight bytes of `chunk` (exactly eight) as a little-endian word.
#[inline(always)]
fn le_word(chunk: &[u8]) -> u64 {
    u64::from_le_bytes(chunk.try_into().expect("8 bytes"))
}

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
            Some(Some(name)) if name.starts(&s.b[s.i..]) => {
                s.i += name.len;
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
        s.value_into(&mut columns.columns[c])
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
    let mut s = Scan { b: data, i: 0 };
    // The usual layout first; `more` says whether a field follows where it stops.
    let mut more = loop {
        let k = fields.next;
        match reader.leads.get(k) {
            Some(Some(lead)) if lead.starts(&s.b[s.i..]) => {
                s.i += lead.len;
                fields.value(Some(k), &mut s, columns)?;
            }
            _ if k == 0 => {
                s.eat(b'{')?;
                if s.peek()? == b'}' {
                    s.i += 1;
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
    if s.i != data.len() {
        return None;
    }
    fields.finish(columns)
}

/// `10^i` as integers, for appending `i` digits to a significand.
const POW10_U64: [u64; 9] = [
    1,
    10,
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
];

/// How many of the eight bytes of `chars` (little-endian: the first byte lowest) are leading
/// ASCII digits, and their value.
#[inline(always)]
fn leading_digits(chars: u64) -> (usize, u64) {
    const ONES: u64 = 0x0101_0101_0101_0101;
    // A digit's byte becomes its value 0..=9; any other byte becomes something else.
    let values = chars ^ (0x30 * ONES);
    // Bit 7 of each byte set where the byte is not a digit: above 9 once bit 7 is masked off
    // (adding 0x76 carries into bit 7 from 10 up, and never out of the byte), or bit 7 set.
    let not_digit = (((values & (0x7f * ONES)) + 0x76 * ONES) | values) & (0x80 * ONES);
    let n = (not_digit.trailing_zeros() / 8) as usize;
    if n == 0 {
        return (0, 0);
    }
    // The n digits moved to the top bytes: the bytes below become leading zeros.
    let digits = if n == 8 {
        values
    } else {
        values << (8 * (8 - n))
    };
    (n, eight_digits(digits))
}

/// The value of eight digit values (0..=9 each, the first in the lowest byte), by SWAR:
/// pairs, then quadruples, then the whole (Lemire's `parse_eight_digits_unrolled`).
#[inline(always)]
fn eight_digits(v: u64) -> u64 {
    const MASK: u64 = 0x0000_00ff_0000_00ff;
    const MUL1: u64 = 100 + (1_000_000 << 32);
    const MUL2: u64 = 1 + (10_000 << 32);
    let v = v.wrapping_mul(10).wrapping_add(v >> 8);
    (((v & MASK).wrapping_mul(MUL1)).wrapping_add(((v >> 16) & MASK).wrapping_mul(MUL2))) >> 32
}

/// Bit 7 set in each byte of `w` that ends the fast scan of a string: a quote, a backslash, a
/// control character or a byte above 127. Bits above the first such byte may be set wrongly
/// (borrows); the lowest one is right, and only it is used.
#[inline(always)]
fn special_bytes(w: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x80 * ONES;
    let zero_byte = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    let quote = zero_byte(w ^ (b'"' as u64 * ONES));
    let backslash = zero_byte(w ^ (b'\\' as u64 * ONES));
    let control = w.wrapping_sub(0x20 * ONES) & !w & HIGH;
    quote | backslash | control | (w & HIGH)
}

/// A JSON number as serde_json reads it.
enum Number {
    U64(u64),
    I64(i64),
    F64(f64),
}

struct Scan<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Scan<'a> {
    #[inline(always)]
    fn ws(&mut self) {
        while matches!(self.b.get(self.i), Some(b' ' | b'\n' | b'\r' | b'\t')) {
            self.i += 1;
        }
    }

    /// The byte at the cursor after whitespace. Every whitespace byte is at most `b' '`: one
    /// comparison tells the usual case, a token right at the cursor.
    #[inline(always)]
    fn peek(&mut self) -> Option<u8> {
        let c = *self.b.get(self.i)?;
        if c > b' ' {
            return Some(c);
        }
        self.ws();
        self.b.get(self.i).copied()
    }

    #[inline(always)]
    fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.i += 1)
    }

    /// Past the `,` between fields (`true`) or the closing `}` (`false`).
    #[inline(always)]
    fn after_value(&mut self) -> Option<bool> {
        let more = match self.peek()? {
            b',' => true,
            b'}' => false,
            _ => return None,
        };
        self.i += 1;
        Some(more)
    }

    /// A string from after its opening quote, as bytes that are UTF-8: `None` at an escape or
    /// a control character (serde unescapes the one and refuses the other), or for bytes that
    /// are not UTF-8. Eight bytes are looked at a time; only a string with a byte above 127
    /// needs the UTF-8 check.
    #[inline(always)]
    fn string(&mut self) -> Option<&'a [u8]> {
        let rest = &self.b[self.i..];
        let mut end = 0;
        let mut ascii = true;
        while let Some(chunk) = rest.get(end..end + 8) {
            let special = special_bytes(le_word(chunk));
            if special == 0 {
                end += 8;
                continue;
            }
            end += (special.trailing_zeros() / 8) as usize;
            if rest[end] == b'"' {
                self.i += end + 1;
                return Some(&rest[..end]);
            }
            // An escape, a control character or a byte above 127: byte by byte from here.
            break;
        }
        loop {
            match *rest.get(end)? {
                b'"' => break,
                b'\\' => return None,
                c if c < 0x20 => return None,
                c => {
                    ascii &= c < 0x80;
                    end += 1;
                }
            }
        }
        let text = &rest[..end];
        if !ascii {
            std::str::from_utf8(text).ok()?;
        }
        self.i += end + 1;
        Some(text)
    }

    /// The value at the cursor into `column`, as the row path would convert it.
    #[inline(always)]
    fn value_into(&mut self, column: &mut Column) -> Option<()> {
        match (self.peek()?, column.kind) {
            (b'n', _) if column.nullable => self.literal(b"null").map(|_| column.push_null()),
            (b'"', Kind::Str) => {
                self.i += 1;
                let start = self.i;
                let len = self.string()?.len();
                column.push_utf8_prefix(&self.b[start..], len);
                Some(())
            }
            (b'"', Kind::Timestamp) => {
                self.i += 1;
                let t = parse_timestamp(std::str::from_utf8(self.string()?).ok()?).ok()?;
                column.push_i64(t);
                Some(())
            }
            (b't', Kind::Bool) => self.literal(b"true").map(|_| column.push_bool(true)),
            (b'f', Kind::Bool) => self.literal(b"false").map(|_| column.push_bool(false)),
            (b'-' | b'0'..=b'9', Kind::I64 | Kind::Timestamp) => match self.number()? {
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
                let f = match self.number()? {
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

    /// Past a scalar value of a field the schema does not name (still checked: a malformed
    /// one goes to serde for its error).
    fn skip_value(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => {
                self.i += 1;
                self.string().map(drop)
            }
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => self.number().map(drop),
            _ => None,
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        self.b[self.i..].starts_with(word).then(|| {
            self.i += word.len();
        })
    }

    /// Digits onto `significand`; how many there were (`None` when it overflows: serde
    /// switches to another algorithm there). `total` counts the digits of the whole number:
    /// while it stays under 20 the significand cannot overflow, so no check is made. Eight
    /// bytes are looked at a time where the record has them.
    #[inline(always)]
    fn digits(&mut self, significand: &mut u64, total: &mut usize) -> Option<usize> {
        let start = self.i;
        while let Some(chunk) = self.b.get(self.i..self.i + 8) {
            let chars = le_word(chunk);
            let (n, value) = leading_digits(chars);
            if n == 0 {
                return Some(self.i - start);
            }
            if *total + n > 19 {
                break;
            }
            *significand = *significand * POW10_U64[n] + value;
            *total += n;
            self.i += n;
            if n < 8 {
                return Some(self.i - start);
            }
        }
        while let Some(&c @ b'0'..=b'9') = self.b.get(self.i) {
            let digit = u64::from(c - b'0');
            *significand = if *total < 19 {
                *significand * 10 + digit
            } else {
                significand.checked_mul(10)?.checked_add(digit)?
            };
            *total += 1;
            self.i += 1;
        }
        Some(self.i - start)
    }

    /// A number as serde_json reads it (without its `float_roundtrip` feature): an integer
    /// is a u64, or an i64 when negative (`-0` is the float -0.0); a number with a fraction
    /// or an exponent is its decimal significand as an f64, multiplied or divided once by
    /// `10^|exponent|`. Read here only while that power of ten is exact, where this code
    /// makes the same two roundings (significand to f64, then the product) serde makes.
    #[inline(always)]
    fn number(&mut self) -> Option<Number> {
        let start = self.i;
        if let Some(n) = self.short_number() {
            return Some(n);
        }
        self.i = start;
        self.any_number()
    }

    /// The common number, up to 15 integer digits and an optional fraction of up to 7 (no
    /// exponent), read with two or three eight-byte looks (eight digits in a look may go on,
    /// which is left to the general reader); `None` for anything else (the caller starts over
    /// with [`Scan::any_number`], which reads every number the same way).
    #[inline(always)]
    fn short_number(&mut self) -> Option<Number> {
        let negative = self.b[self.i] == b'-';
        self.i += usize::from(negative);
        let first = *self.b.get(self.i)?;
        let (mut int_digits, mut significand) = leading_digits(self.word(self.i));
        if int_digits == 0 || (first == b'0' && int_digits > 1) {
            return None;
        }
        if int_digits == 8 {
            let (more, value) = leading_digits(self.word(self.i + 8));
            if more == 8 {
                return None;
            }
            significand = significand * POW10_U64[more] + value;
            int_digits += more;
        }
        self.i += int_digits;
        let next = self.b.get(self.i).copied();
        if matches!(next, Some(b'e' | b'E')) {
            return None;
        }
        if next != Some(b'.') {
            return Some(match (negative, significand) {
                (false, s) => Number::U64(s),
                (true, 0) => Number::F64(-0.0),
                // At most 15 digits: below 2^63.
                (true, s) => Number::I64(-(s as i64)),
            });
        }
        let (fraction, value) = leading_digits(self.word(self.i + 1));
        if fraction == 0 || fraction == 8 {
            return None;
        }
        self.i += 1 + fraction;
        if matches!(self.b.get(self.i), Some(b'e' | b'E')) {
            return None;
        }
        // Up to 24 digits would overflow: then serde's way, through `any_number`.
        let significand = significand.checked_mul(POW10_U64[fraction])? + value;
        if significand >= 1 << 63 {
            return None;
        }
        // Below 2^63, through i64: one conversion instruction, the same rounding.
        let magnitude = (significand as i64) as f64 / POW10[fraction];
        Some(Number::F64(if negative { -magnitude } else { magnitude }))
    }

    /// The eight bytes at `at`, little-endian; past the record's end, zero bytes (which are
    /// not digits).
    #[inline(always)]
    fn word(&self, at: usize) -> u64 {
        match self.b.get(at..at + 8) {
            Some(chunk) => le_word(chunk),
            // The record's last bytes (the last field's number ends within eight bytes of
            // every record): its last word, shifted so that `at` is the lowest byte.
            None if at < self.b.len() && self.b.len() >= 8 => {
                let end = self.b.len();
                le_word(&self.b[end - 8..]) >> (8 * (at + 8 - end))
            }
            None => {
                let rest = self.b.get(at..).unwrap_or_default();
                rest.iter().rev().fold(0, |w, &b| (w << 8) | u64::from(b))
            }
        }
    }

    /// Any number, digit run by digit run.
    #[inline(never)]
    fn any_number(&mut self) -> Option<Number> {
        let negative = self.b[self.i] == b'-';
        self.i += usize::from(negative);
        let (mut significand, mut total) = (0u64, 0usize);
        let first = *self.b.get(self.i)?;
        let int_digits = self.digits(&mut significand, &mut total)?;
        if int_digits == 0 || (first == b'0' && int_digits > 1) {
            return None;
        }
        let mut exponent = 0i32;
        let mut float = false;
        if self.b.get(self.i) == Some(&b'.') {
            self.i += 1;
            float = true;
            let fraction = self.digits(&mut significand, &mut total)?;
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
            if self.digits(&mut e, &mut 0)? == 0 || e > 1000 {
                return None;
            }
            exponent += if sign < 0 { -(e as i32) } else { e as i32 };
        }
        if !float {
            return match (negative, significand) {
                (false, s) => Some(Number::U64(s)),
                (true, 0) => Some(Number::F64(-0.0)),
                (true, s) => Some(Number::I64(0i64.checked_sub_unsigned(s)?)),
            };
        }
        let scale = *POW10.get(exponent.unsigned_abs() as usize)?;
        let magnitude = if exponent >= 0 {
            significand as f64 * scale
        } else {
            significand as f64 / scale
        };
        Some(Number::F64(if negative { -magnitude } else { magnitude }))
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
    /// Eight bytes at a time give what one byte at a time gives.
    #[test]
    fn leading_digits_count_and_value_the_digits() {
        for text in [
            "12345678",
            "1234567,",
            "0",
            "9876543210",
            "",
            ",123",
            "00000001",
            "99999999",
            "5e",
            "4.5",
            "7\u{80}1",
            "/:",
            "12/34",
            "3:",
        ] {
            let mut bytes = [b'x'; 8];
            let n = text.len().min(8);
            bytes[..n].copy_from_slice(&text.as_bytes()[..n]);
            let want = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
            let value = bytes[..want]
                .iter()
                .fold(0u64, |v, b| v * 10 + u64::from(b - b'0'));
            assert_eq!(
                leading_digits(u64::from_le_bytes(bytes)),
                (want, if want == 0 { 0 } else { value }),
                "{text:?}"
            );
        }
    }

    proptest::proptest! {
        /// The first byte `special_bytes` flags is the first quote, backslash, control
        /// character or byte above 127.
        #[test]
        fn special_bytes_finds_the_first_one(bytes in proptest::array::uniform8(proptest::prelude::any::<u8>())) {
            let want = bytes.iter().position(|&b| b == b'"' || b == b'\\' || !(0x20..0x80).contains(&b));
            let got = special_bytes(u64::from_le_bytes(bytes));
            let got = (got != 0).then(|| (got.trailing_zeros() / 8) as usize);
            proptest::prop_assert_eq!(got, want);
        }

        #[test]
        fn leading_digits_of_any_bytes(bytes in proptest::array::uniform8(proptest::prelude::any::<u8>())) {
            let want = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
            let value = bytes[..want].iter().fold(0u64, |v, b| v * 10 + u64::from(b - b'0'));
            proptest::prop_assert_eq!(leading_digits(u64::from_le_bytes(bytes)), (want, value));
        }
    }

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
