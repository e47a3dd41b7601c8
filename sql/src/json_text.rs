//! JSON text of scalar values, byte for byte as `serde_json` writes them, for the output
//! writers that write millions of cells a second: no serializer, no `io::Write` per value.
//!
//! Contract: each function appends exactly what `serde_json::to_writer` appends for the same
//! value (integers in decimal, finite floats in their shortest round-trip form, non-finite
//! floats as `null`, strings quoted with `"`, `\`, and control characters escaped and
//! everything else, non-ASCII included, as it is).

/// An integer.
#[inline]
pub(crate) fn int(v: i64, out: &mut Vec<u8>) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

/// A float: `null` when it is not finite, as serde_json writes it.
#[inline]
pub(crate) fn float(v: f64, out: &mut Vec<u8>) {
    if v.is_finite() {
        out.extend_from_slice(zmij::Buffer::new().format_finite(v).as_bytes());
    } else {
        out.extend_from_slice(b"null");
    }
}

/// A string, quoted. Text without anything to escape (the usual case) is copied as it is;
/// anything else is left to serde_json.
#[inline]
pub(crate) fn string(s: &str, out: &mut Vec<u8>) {
    // Values are short: a plain loop beats a vectorized one's setup.
    let plain = s.bytes().all(|c| c >= 0x20 && c != b'"' && c != b'\\');
    if !plain {
        serde_json::to_writer(out, s).expect("writing to a Vec cannot fail");
        return;
    }
    out.reserve(s.len() + 2);
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn written_as_serde_json_writes_it(i in proptest::prelude::any::<i64>(),
                                           f in proptest::prelude::any::<f64>(),
                                           s in "\\PC*|[\\x00-\\x7f]{0,12}") {
            let mut got = Vec::new();
            int(i, &mut got);
            float(f, &mut got);
            string(&s, &mut got);
            let mut want = serde_json::to_vec(&i).unwrap();
            want.extend(serde_json::to_vec(&f).unwrap());
            want.extend(serde_json::to_vec(&s).unwrap());
            proptest::prop_assert_eq!(String::from_utf8(got).unwrap(), String::from_utf8(want).unwrap());
        }
    }

    #[test]
    fn special_values() {
        for f in [f64::NAN, f64::INFINITY, -0.0, 1e300, 5e-324, 0.1 + 0.2] {
            let mut got = Vec::new();
            float(f, &mut got);
            assert_eq!(got, serde_json::to_vec(&f).unwrap(), "{f}");
        }
        for s in [
            "",
            "plain",
            "a\"b",
            "back\\slash",
            "tab\t",
            "\u{7f}",
            "é ✓",
            "\u{1}",
        ] {
            let mut got = Vec::new();
            string(s, &mut got);
            assert_eq!(got, serde_json::to_vec(s).unwrap(), "{s:?}");
        }
    }
}
