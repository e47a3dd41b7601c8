//! Whether a line of a `json` file is one JSON value, for the file source.
//!
//! Contract: [`check`] accepts a line exactly when `serde_json::from_slice::<IgnoredAny>`
//! does, and refuses it with serde_json's error. Like that parse, it does not check that string
//! contents are UTF-8, takes any four hex digits after `\u` (lone surrogates too) and sets no
//! depth limit.
//!
//! Why: the source checks every line, and serde_json's general parser (a call per token,
//! strings scanned for escapes and control characters in separate passes) cost ~80 ns per
//! 100-byte line, as much as reading the line and encoding it into a log batch together. A
//! [`fast`] pass over the bytes decides the common case; it only ever accepts valid JSON, and
//! whatever it does not accept (a bad line, or nesting deeper than it tracks) goes to
//! serde_json, which decides and words the error. So a mistake in the fast pass can cost
//! speed, never let a bad line through, as long as it accepts no invalid line: the tests check
//! that against serde_json on generated lines.

use serde::de::IgnoredAny;

/// `Ok` when `line` is one JSON value (whitespace around it allowed), else serde_json's error.
pub fn check(line: &[u8]) -> Result<(), serde_json::Error> {
    if fast(line) {
        return Ok(());
    }
    serde_json::from_slice::<IgnoredAny>(line).map(drop)
}

/// Containers open at once that [`fast`] follows (one bit each).
const DEPTH: u32 = 64;

/// Whether `b` is one JSON value; `false` also when unsure (deeper than [`DEPTH`]).
fn fast(b: &[u8]) -> bool {
    // One bit per open container, the innermost lowest: 1 for an object.
    let (mut stack, mut depth) = (0u64, 0u32);
    let mut i = 0;
    'value: loop {
        i = skip_space(b, i);
        let Some(&c) = b.get(i) else { return false };
        i += 1;
        match c {
            b'{' | b'[' => {
                if depth == DEPTH {
                    return false;
                }
                stack = stack << 1 | u64::from(c == b'{');
                depth += 1;
                i = skip_space(b, i);
                match b.get(i) {
                    Some(b'}') if c == b'{' => {}
                    Some(b']') if c == b'[' => {}
                    _ if c == b'{' => match key(b, i) {
                        Some(next) => {
                            i = next;
                            continue 'value;
                        }
                        None => return false,
                    },
                    _ => continue 'value,
                }
                // An empty container: closed like any other, below.
                stack >>= 1;
                depth -= 1;
                i += 1;
            }
            b'"' => match string(b, i) {
                Some(next) => i = next,
                None => return false,
            },
            b'-' | b'0'..=b'9' => match number(b, i - 1) {
                Some(next) => i = next,
                None => return false,
            },
            b't' if b[i..].starts_with(b"rue") => i += 3,
            b'f' if b[i..].starts_with(b"alse") => i += 4,
            b'n' if b[i..].starts_with(b"ull") => i += 3,
            _ => return false,
        }
        // After a value: a comma, the end of its container, or of the line.
        loop {
            i = skip_space(b, i);
            if depth == 0 {
                return i == b.len();
            }
            let object = stack & 1 == 1;
            match b.get(i) {
                Some(b',') if object => match key(b, i + 1) {
                    Some(next) => {
                        i = next;
                        continue 'value;
                    }
                    None => return false,
                },
                Some(b',') => {
                    i += 1;
                    continue 'value;
                }
                Some(b'}') if object => {}
                Some(b']') if !object => {}
                _ => return false,
            }
            stack >>= 1;
            depth -= 1;
            i += 1;
        }
    }
}

fn skip_space(b: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = b.get(i) {
        i += 1;
    }
    i
}

/// `"key":` from `i` (space allowed around it): the index after the colon.
fn key(b: &[u8], i: usize) -> Option<usize> {
    let i = skip_space(b, i);
    if b.get(i) != Some(&b'"') {
        return None;
    }
    let i = skip_space(b, string(b, i + 1)?);
    (b.get(i) == Some(&b':')).then_some(i + 1)
}

const ONES: u64 = u64::MAX / 255;
const HIGHS: u64 = ONES * 0x80;

/// The bytes of `x` that are `"`, `\` or a control character (below 0x20), the bytes that
/// end a run of plain string contents, as the high bit of each (bit-twiddling hacks' "has zero
/// byte" and "has less than"). The lowest one set is exact; bits above it may be false.
fn special(x: u64) -> u64 {
    let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
    zero(x ^ (ONES * b'"' as u64))
        | zero(x ^ (ONES * b'\\' as u64))
        | (x.wrapping_sub(ONES * 0x20) & !x & HIGHS)
}

/// The rest of a string whose opening quote is before `i`: the index after its closing quote.
fn string(b: &[u8], mut i: usize) -> Option<usize> {
    loop {
        // To the next `"`, `\` or control character: eight bytes at a time, the last few one
        // by one.
        loop {
            match b.get(i..i + 8) {
                Some(chunk) => {
                    let found = special(u64::from_le_bytes(chunk.try_into().expect("eight")));
                    if found != 0 {
                        i += found.trailing_zeros() as usize / 8;
                        break;
                    }
                    i += 8;
                }
                None => {
                    while b
                        .get(i)
                        .is_some_and(|&c| c != b'"' && c != b'\\' && c >= 0x20)
                    {
                        i += 1;
                    }
                    break;
                }
            }
        }
        match *b.get(i)? {
            b'"' => return Some(i + 1),
            b'\\' => {
                i += match *b.get(i + 1)? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => 2,
                    b'u' if b.get(i + 2..i + 6)?.iter().all(u8::is_ascii_hexdigit) => 6,
                    _ => return None,
                }
            }
            // A control character.
            _ => return None,
        }
    }
}

/// A number starting at `i` (JSON's grammar: no leading zeros, digits after `.` and `e`):
/// the index after it.
fn number(b: &[u8], mut i: usize) -> Option<usize> {
    let digits = |mut i: usize| {
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        i
    };
    if b[i] == b'-' {
        i += 1;
    }
    match *b.get(i)? {
        b'0' if b.get(i + 1).is_some_and(u8::is_ascii_digit) => return None,
        b'0' => i += 1,
        b'1'..=b'9' => i = digits(i + 1),
        _ => return None,
    }
    if b.get(i) == Some(&b'.') {
        let end = digits(i + 1);
        if end == i + 1 {
            return None;
        }
        i = end;
    }
    if let Some(b'e' | b'E') = b.get(i) {
        i += 1;
        if let Some(b'+' | b'-') = b.get(i) {
            i += 1;
        }
        let end = digits(i);
        if end == i {
            return None;
        }
        i = end;
    }
    Some(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serde(line: &[u8]) -> bool {
        serde_json::from_slice::<IgnoredAny>(line).is_ok()
    }

    const CASES: &[&str] = &[
        r#"{"id":1,"name":"user-1","score":1,"pad":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}"#,
        r#"  { "a" : [ 1 , -2.5e+3 , true , false , null , "x\"\\\/\b\f\n\r\t\u00e9\ud800" ] } "#,
        "{}",
        "[]",
        "[[]]",
        "{\"a\":{}}",
        "\"\"",
        "0",
        "-0",
        "1e5",
        "1E-5",
        "0.5",
        "123",
        "\"plain string longer than eight bytes\"",
        "\"caf\u{e9} \u{2713}\"",
        "{\"a\":1}\r",
        "\t[1]\n",
        // Refused.
        "",
        " ",
        "{",
        "}",
        "[",
        "]",
        "{\"a\"}",
        "{\"a\":}",
        "{\"a\":1,}",
        "[1,]",
        "[,1]",
        "{,}",
        "{1:2}",
        "{\"a\" 1}",
        "[1 2]",
        "01",
        "-",
        "-a",
        "1.",
        ".5",
        "1e",
        "1e+",
        "+1",
        "1.5.3",
        "tru",
        "truex",
        "nul",
        "True",
        "\"unterminated",
        "\"bad \\x escape\"",
        "\"\\u12g4\"",
        "\"\\u12\"",
        "\"tab\tinside\"",
        "\"nl\ninside\"",
        "{\"a\":1}x",
        "1 2",
        "[1]]",
        "{\"a\":1}}",
        "[}",
        "{]",
        "\"\u{1}\"",
        "[\"a\",\"b\"",
        "{\"a\":[1,{\"b\":\"c\"}]}",
    ];

    #[test]
    fn the_fast_pass_agrees_with_serde_json_on_hand_picked_lines() {
        for c in CASES {
            let (f, s) = (fast(c.as_bytes()), serde(c.as_bytes()));
            assert_eq!(f, s, "{c:?}: fast {f}, serde_json {s}");
            assert_eq!(check(c.as_bytes()).is_ok(), s, "{c:?}");
        }
        // Invalid UTF-8 in a string passes, as serde_json's IgnoredAny lets it.
        assert!(fast(b"\"\xff\xfe\"") && serde(b"\"\xff\xfe\""));
        // Deeper than the fast pass follows: serde_json decides.
        let deep = format!("{}1{}", "[".repeat(100), "]".repeat(100));
        assert!(!fast(deep.as_bytes()) && check(deep.as_bytes()).is_ok());
        let e = check(b"{\"a\":1,}").unwrap_err().to_string();
        assert!(e.contains("key must be a string at line 1 column 8"), "{e}");
    }

    #[test]
    fn the_fast_pass_never_accepts_what_serde_json_refuses() {
        // Every hand-picked line with each byte replaced, dropped, or doubled: lines just off
        // valid JSON, where a fast pass would go wrong. xorshift: deterministic, no dependency.
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let alphabet = b"{}[]\":,.-+eE0159tfnrlsu\\/ \t\nax\x01\xc3\xa9";
        let (mut tried, mut valid) = (0, 0);
        for c in CASES {
            let c = c.as_bytes();
            for at in 0..c.len() {
                for _ in 0..8 {
                    let byte = alphabet[next() as usize % alphabet.len()];
                    let mut variants = vec![c.to_vec(), c.to_vec(), c.to_vec()];
                    variants[0][at] = byte;
                    variants[1].remove(at);
                    variants[2].insert(at, byte);
                    for v in variants {
                        let (f, s) = (fast(&v), serde(&v));
                        assert!(
                            !f || s,
                            "fast accepts {:?}, serde_json does not",
                            String::from_utf8_lossy(&v)
                        );
                        assert_eq!(f, s, "{:?}", String::from_utf8_lossy(&v));
                        tried += 1;
                        valid += usize::from(s);
                    }
                }
            }
        }
        assert!(
            tried > 10_000 && valid > 1_000,
            "{tried} lines, {valid} valid"
        );
    }
}
