//! The JSON scanner behind the hand-written readers (the DSL's `JsonSerde`, the SQL layer's
//! flat records): tokens read in place, eight bytes at a time where it pays.
//!
//! Contract: every reading method returns `None` (the cursor then anywhere) where the text is
//! not what it reads, or where serde_json would read it differently or could refuse it (an
//! escape in a string, a control character, a number this code cannot round as serde_json
//! does); otherwise the value is exactly what serde_json reads (without its
//! `float_roundtrip` and `arbitrary_precision` features). A caller that gets `None` reads the
//! text with serde_json, which gives the value or the error message.

/// `10^i` for the exponents a float is read with here: each is exact in an f64 and equal to
/// the entry of serde_json's own table, so the multiplication or division is serde's.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// Up to 16 bytes as they are compared in place: two little-endian words and their masks, so
/// that a match costs two loads and two comparisons.
pub struct Pattern {
    words: [u64; 2],
    masks: [u64; 2],
    bytes: [u8; 16],
    /// How many bytes the pattern matches.
    pub len: usize,
}

impl Pattern {
    /// `None` when `text` is longer than 16 bytes.
    pub fn new(text: &[u8]) -> Option<Self> {
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
    pub fn starts(&self, rest: &[u8]) -> bool {
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
pub enum Number {
    U64(u64),
    I64(i64),
    F64(f64),
}

/// A cursor over one JSON text.
pub struct Scan<'a> {
    pub bytes: &'a [u8],
    /// The next byte to read.
    pub pos: usize,
}

impl<'a> Scan<'a> {
    #[inline]
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    #[inline(always)]
    pub fn ws(&mut self) {
        while matches!(self.bytes.get(self.pos), Some(b' ' | b'\n' | b'\r' | b'\t')) {
            self.pos += 1;
        }
    }

    /// The byte at the cursor after whitespace. Every whitespace byte is at most `b' '`: one
    /// comparison tells the usual case, a token right at the cursor.
    #[inline(always)]
    pub fn peek(&mut self) -> Option<u8> {
        let c = *self.bytes.get(self.pos)?;
        if c > b' ' {
            return Some(c);
        }
        self.ws();
        self.bytes.get(self.pos).copied()
    }

    #[inline(always)]
    pub fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.pos += 1)
    }

    /// Past the `,` between fields (`true`) or the closing `}` (`false`).
    #[inline(always)]
    pub fn after_value(&mut self) -> Option<bool> {
        let more = match self.peek()? {
            b',' => true,
            b'}' => false,
            _ => return None,
        };
        self.pos += 1;
        Some(more)
    }

    /// A string from after its opening quote, as bytes that are UTF-8: `None` at an escape or
    /// a control character (serde unescapes the one and refuses the other), or for bytes that
    /// are not UTF-8. Eight bytes are looked at a time; only a string with a byte above 127
    /// needs the UTF-8 check.
    #[inline(always)]
    pub fn string(&mut self) -> Option<&'a [u8]> {
        let rest = &self.bytes[self.pos..];
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
                self.pos += end + 1;
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
        self.pos += end + 1;
        Some(text)
    }

    /// Past a number checked against JSON's grammar only, as serde_json passes over a value
    /// nobody reads (`IgnoredAny`): not converted, so `1e400` passes where
    /// [`Scan::number`] refuses it.
    #[inline]
    pub fn skip_number(&mut self) -> Option<()> {
        self.pos += usize::from(self.bytes.get(self.pos) == Some(&b'-'));
        match self.bytes.get(self.pos)? {
            b'0' => self.pos += 1,
            b'1'..=b'9' => {
                self.skip_digits();
            }
            _ => return None,
        }
        if self.bytes.get(self.pos) == Some(&b'.') {
            self.pos += 1;
            if self.skip_digits() == 0 {
                return None;
            }
        }
        if matches!(self.bytes.get(self.pos), Some(b'e' | b'E')) {
            self.pos += 1;
            self.pos += usize::from(matches!(self.bytes.get(self.pos), Some(b'+' | b'-')));
            if self.skip_digits() == 0 {
                return None;
            }
        }
        Some(())
    }

    /// Past the digits at the cursor, eight bytes at a time; how many there were.
    #[inline(always)]
    fn skip_digits(&mut self) -> usize {
        let start = self.pos;
        loop {
            let (n, _) = leading_digits(self.word(self.pos));
            self.pos += n;
            if n < 8 {
                return self.pos - start;
            }
        }
    }

    /// Past a scalar value of a field the schema does not name (still checked: a malformed
    /// one goes to serde for its error).
    #[inline]
    pub fn skip_value(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => {
                self.pos += 1;
                self.string().map(drop)
            }
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => self.number().map(drop),
            _ => None,
        }
    }

    #[inline]
    pub fn literal(&mut self, word: &[u8]) -> Option<()> {
        self.bytes[self.pos..].starts_with(word).then(|| {
            self.pos += word.len();
        })
    }

    /// Digits onto `significand`; how many there were (`None` when it overflows: serde
    /// switches to another algorithm there). `total` counts the digits of the whole number:
    /// while it stays under 20 the significand cannot overflow, so no check is made. Eight
    /// bytes are looked at a time where the record has them.
    #[inline(always)]
    fn digits(&mut self, significand: &mut u64, total: &mut usize) -> Option<usize> {
        let start = self.pos;
        while let Some(chunk) = self.bytes.get(self.pos..self.pos + 8) {
            let chars = le_word(chunk);
            let (n, value) = leading_digits(chars);
            if n == 0 {
                return Some(self.pos - start);
            }
            if *total + n > 19 {
                break;
            }
            *significand = *significand * POW10_U64[n] + value;
            *total += n;
            self.pos += n;
            if n < 8 {
                return Some(self.pos - start);
            }
        }
        while let Some(&c @ b'0'..=b'9') = self.bytes.get(self.pos) {
            let digit = u64::from(c - b'0');
            *significand = if *total < 19 {
                *significand * 10 + digit
            } else {
                significand.checked_mul(10)?.checked_add(digit)?
            };
            *total += 1;
            self.pos += 1;
        }
        Some(self.pos - start)
    }

    /// A number as serde_json reads it (without its `float_roundtrip` feature): an integer
    /// is a u64, or an i64 when negative (`-0` is the float -0.0); a number with a fraction
    /// or an exponent is its decimal significand as an f64, multiplied or divided once by
    /// `10^|exponent|`. Read here only while that power of ten is exact, where this code
    /// makes the same two roundings (significand to f64, then the product) serde makes.
    #[inline(always)]
    pub fn number(&mut self) -> Option<Number> {
        let start = self.pos;
        if let Some(n) = self.short_number() {
            return Some(n);
        }
        self.pos = start;
        self.any_number()
    }

    /// The common number, up to 15 integer digits and an optional fraction of up to 7 (no
    /// exponent), read with two or three eight-byte looks (eight digits in a look may go on,
    /// which is left to the general reader); `None` for anything else (the caller starts over
    /// with [`Scan::any_number`], which reads every number the same way).
    #[inline(always)]
    fn short_number(&mut self) -> Option<Number> {
        let negative = self.bytes[self.pos] == b'-';
        self.pos += usize::from(negative);
        let first = *self.bytes.get(self.pos)?;
        let (mut int_digits, mut significand) = leading_digits(self.word(self.pos));
        if int_digits == 0 || (first == b'0' && int_digits > 1) {
            return None;
        }
        if int_digits == 8 {
            let (more, value) = leading_digits(self.word(self.pos + 8));
            if more == 8 {
                return None;
            }
            significand = significand * POW10_U64[more] + value;
            int_digits += more;
        }
        self.pos += int_digits;
        let next = self.bytes.get(self.pos).copied();
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
        let (fraction, value) = leading_digits(self.word(self.pos + 1));
        if fraction == 0 || fraction == 8 {
            return None;
        }
        self.pos += 1 + fraction;
        if matches!(self.bytes.get(self.pos), Some(b'e' | b'E')) {
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
        match self.bytes.get(at..at + 8) {
            Some(chunk) => le_word(chunk),
            // The record's last bytes (the last field's number ends within eight bytes of
            // every record): its last word, shifted so that `at` is the lowest byte.
            None if at < self.bytes.len() && self.bytes.len() >= 8 => {
                let end = self.bytes.len();
                le_word(&self.bytes[end - 8..]) >> (8 * (at + 8 - end))
            }
            None => {
                let rest = self.bytes.get(at..).unwrap_or_default();
                rest.iter().rev().fold(0, |w, &b| (w << 8) | u64::from(b))
            }
        }
    }

    /// Any number, digit run by digit run.
    #[inline(never)]
    fn any_number(&mut self) -> Option<Number> {
        let negative = self.bytes[self.pos] == b'-';
        self.pos += usize::from(negative);
        let (mut significand, mut total) = (0u64, 0usize);
        let first = *self.bytes.get(self.pos)?;
        let int_digits = self.digits(&mut significand, &mut total)?;
        if int_digits == 0 || (first == b'0' && int_digits > 1) {
            return None;
        }
        let mut exponent = 0i32;
        let mut float = false;
        if self.bytes.get(self.pos) == Some(&b'.') {
            self.pos += 1;
            float = true;
            let fraction = self.digits(&mut significand, &mut total)?;
            if fraction == 0 {
                return None;
            }
            // At most 20 digits fit the u64 the significand is.
            exponent = -(fraction as i32);
        }
        if matches!(self.bytes.get(self.pos), Some(b'e' | b'E')) {
            self.pos += 1;
            float = true;
            let sign = match self.bytes.get(self.pos) {
                Some(b'-') => -1,
                Some(b'+') => 1,
                _ => 0,
            };
            self.pos += usize::from(sign != 0);
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
}
