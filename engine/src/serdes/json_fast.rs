//! JSON read by hand into serde's visitors: the fast path of [`JsonSerde`](super::JsonSerde).
//!
//! serde_json's reader is general; records on topics are mostly small objects of numbers and
//! plain strings, where its per-token work (a UTF-8 check and an escape scan per string, a
//! digit loop per number) costs more than the visitor that builds the value. This reader
//! walks the text with [`Scan`] and drives the same visitor serde_json would, with the same
//! calls (`visit_borrowed_str` for a string without escapes, `visit_u64`/`visit_i64`/
//! `visit_f64` as serde_json classifies a number, `visit_map` and `visit_seq` for objects and
//! arrays, `visit_some`/`visit_none` for options).
//!
//! Contract: [`from_slice`] returns `Some(value)` only where `serde_json::from_slice` returns
//! `Ok(value)` with the same value; everything the scanner leaves to serde_json (escapes,
//! unusual numbers, enums, byte strings, serde_json's raw values), every error and every
//! visitor this reader cannot drive as serde_json would, gives `None`, and the caller reads
//! the text with serde_json, which then gives the value or its error message.

use super::json_scan::{Number, Scan};
use serde::de::{self, DeserializeSeed, Visitor};
use std::fmt;

/// The deepest nesting read here; serde_json refuses deeper text (its recursion limit).
const MAX_DEPTH: usize = 128;

/// The name serde_json gives the newtype its `RawValue` deserializes through: only
/// serde_json knows how to fill one.
const RAW_VALUE_TOKEN: &str = "$serde_json::private::RawValue";

/// `data` as a `T`, where this reader can read it exactly as serde_json does (see the module
/// documentation); `None` otherwise.
pub(crate) fn from_slice<'de, T: de::Deserialize<'de>>(data: &'de [u8]) -> Option<T> {
    let mut reader = Reader {
        scan: Scan::new(data),
        depth: 0,
        gave_up: false,
    };
    let value = T::deserialize(&mut reader).ok();
    if reader.gave_up {
        // A visitor may have swallowed the error that gave up (a default on error): the
        // value is then not serde_json's.
        return None;
    }
    reader.scan.ws();
    (reader.scan.pos == data.len()).then_some(value).flatten()
}

/// Why a read stopped; never shown: the caller reads the text again with serde_json, for
/// its message.
#[derive(Debug)]
pub(crate) struct GaveUp;

impl fmt::Display for GaveUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("left to serde_json")
    }
}

impl std::error::Error for GaveUp {}

impl de::Error for GaveUp {
    fn custom<M: fmt::Display>(_: M) -> Self {
        GaveUp
    }
}

type Result<T> = std::result::Result<T, GaveUp>;

struct Reader<'de> {
    scan: Scan<'de>,
    depth: usize,
    /// Set wherever this reader (not a visitor) stopped: the value is not to be used even if
    /// a visitor carried on.
    gave_up: bool,
}

impl<'de> Reader<'de> {
    fn give_up<T>(&mut self) -> Result<T> {
        self.gave_up = true;
        Err(GaveUp)
    }

    fn or_give_up<T>(&mut self, value: Option<T>) -> Result<T> {
        match value {
            Some(v) => Ok(v),
            None => self.give_up(),
        }
    }

    // Called from the visitors' generic code, which is compiled in the caller's crate.
    #[inline]
    fn peek(&mut self) -> Result<u8> {
        let c = self.scan.peek();
        self.or_give_up(c)
    }

    /// A string from its opening quote (at the cursor), without escapes.
    #[inline]
    fn string(&mut self) -> Result<&'de str> {
        self.scan.pos += 1;
        let bytes = self.scan.string();
        let bytes = self.or_give_up(bytes)?;
        // `Scan::string` has checked the bytes are UTF-8.
        let text = std::str::from_utf8(bytes).ok();
        self.or_give_up(text)
    }

    /// Steps over the separator before an object's or array's next item: `false` at its
    /// closing bracket `close` (stepped over; `ended` set), `true` when an item follows.
    #[inline]
    fn next_item(&mut self, first: &mut bool, ended: &mut bool, close: u8) -> Result<bool> {
        if *ended {
            return self.give_up();
        }
        match (std::mem::replace(first, false), self.peek()?) {
            (_, c) if c == close => {
                self.scan.pos += 1;
                *ended = true;
                Ok(false)
            }
            (true, _) => Ok(true),
            (false, b',') => {
                self.scan.pos += 1;
                Ok(true)
            }
            (false, _) => self.give_up(),
        }
    }

    fn number<V: Visitor<'de>>(&mut self, visitor: V) -> Result<V::Value> {
        let n = self.scan.number();
        match self.or_give_up(n)? {
            Number::U64(u) => visitor.visit_u64(u),
            Number::I64(i) => visitor.visit_i64(i),
            Number::F64(f) => visitor.visit_f64(f),
        }
    }

    fn literal(&mut self, word: &[u8]) -> Result<()> {
        let read = self.scan.literal(word);
        self.or_give_up(read)
    }

    /// Into an object or array: refused past serde_json's recursion limit.
    fn enter(&mut self) -> Result<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return self.give_up();
        }
        self.scan.pos += 1;
        Ok(())
    }

    /// Out of an object or array whose visitor has returned. As serde_json: a visitor may
    /// stop before the end (a tuple's), which must then follow.
    fn leave(&mut self, ended: bool, close: u8) -> Result<()> {
        if !ended {
            if self.peek()? != close {
                return self.give_up();
            }
            self.scan.pos += 1;
        }
        self.depth -= 1;
        Ok(())
    }

    /// An object; `fields` are the names a struct expects (none for a map).
    fn map<V: Visitor<'de>>(
        &mut self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        self.enter()?;
        let mut access = Entries {
            reader: self,
            fields,
            next_field: 0,
            first: true,
            ended: false,
        };
        let value = visitor.visit_map(&mut access)?;
        let ended = access.ended;
        self.leave(ended, b'}')?;
        Ok(value)
    }

    fn seq<V: Visitor<'de>>(&mut self, visitor: V) -> Result<V::Value> {
        self.enter()?;
        let mut access = Elements {
            reader: self,
            first: true,
            ended: false,
        };
        let value = visitor.visit_seq(&mut access)?;
        let ended = access.ended;
        self.leave(ended, b']')?;
        Ok(value)
    }

    /// Past the value at the cursor, whatever it is.
    fn skip(&mut self) -> Result<()> {
        match self.peek()? {
            b'{' | b'[' => de::Deserializer::deserialize_any(&mut *self, de::IgnoredAny).map(drop),
            b'-' | b'0'..=b'9' => {
                let skipped = self.scan.skip_number();
                self.or_give_up(skipped)
            }
            _ => {
                let skipped = self.scan.skip_value();
                self.or_give_up(skipped)
            }
        }
    }
}

/// Deserializer methods for numbers: a number at the cursor, as serde_json classifies it.
macro_rules! read_number {
    ($($method:ident),* $(,)?) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
                match self.peek()? {
                    b'-' | b'0'..=b'9' => self.number(visitor),
                    _ => self.give_up(),
                }
            }
        )*
    };
}

impl<'de> de::Deserializer<'de> for &mut Reader<'de> {
    type Error = GaveUp;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.peek()? {
            b'n' => {
                self.literal(b"null")?;
                visitor.visit_unit()
            }
            b't' => {
                self.literal(b"true")?;
                visitor.visit_bool(true)
            }
            b'f' => {
                self.literal(b"false")?;
                visitor.visit_bool(false)
            }
            b'"' => visitor.visit_borrowed_str(self.string()?),
            b'-' | b'0'..=b'9' => self.number(visitor),
            b'[' => self.seq(visitor),
            b'{' => self.map(&[], visitor),
            _ => self.give_up(),
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.peek()? {
            b't' | b'f' => self.deserialize_any(visitor),
            _ => self.give_up(),
        }
    }

    read_number! {
        deserialize_i8, deserialize_i16, deserialize_i32, deserialize_i64, deserialize_u8,
        deserialize_u16, deserialize_u32, deserialize_u64, deserialize_f32, deserialize_f64,
    }

    // serde_json reads 128-bit integers past u64 with its own parser.
    fn deserialize_i128<V: Visitor<'de>>(self, _: V) -> Result<V::Value> {
        self.give_up()
    }
    fn deserialize_u128<V: Visitor<'de>>(self, _: V) -> Result<V::Value> {
        self.give_up()
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_str(visitor)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.peek()? {
            b'"' => visitor.visit_borrowed_str(self.string()?),
            _ => self.give_up(),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_str(visitor)
    }

    // serde_json hands strings' raw bytes here, escapes unread.
    fn deserialize_bytes<V: Visitor<'de>>(self, _: V) -> Result<V::Value> {
        self.give_up()
    }
    fn deserialize_byte_buf<V: Visitor<'de>>(self, _: V) -> Result<V::Value> {
        self.give_up()
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.peek()? {
            b'n' => {
                self.literal(b"null")?;
                visitor.visit_none()
            }
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.peek()? {
            b'n' => self.deserialize_any(visitor),
            _ => self.give_up(),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        if name == RAW_VALUE_TOKEN {
            return self.give_up();
        }
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.peek()? {
            b'[' => self.seq(visitor),
            _ => self.give_up(),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _: usize, visitor: V) -> Result<V::Value> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: usize,
        visitor: V,
    ) -> Result<V::Value> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.peek()? {
            b'{' => self.map(&[], visitor),
            _ => self.give_up(),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        match self.peek()? {
            b'{' => self.map(fields, visitor),
            b'[' => self.seq(visitor),
            _ => self.give_up(),
        }
    }

    // Externally tagged enums: rare on topics; serde_json reads them.
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        _: V,
    ) -> Result<V::Value> {
        self.give_up()
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_str(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.skip()?;
        visitor.visit_unit()
    }
}

/// An object's entries, from after its `{`.
struct Entries<'r, 'de> {
    reader: &'r mut Reader<'de>,
    /// The names a struct expects, and which one is likely next (producers write fields in
    /// one order): a key equal to one of them is handed over as that name, with no scan for
    /// its end and no UTF-8 check.
    fields: &'static [&'static str],
    next_field: usize,
    first: bool,
    /// Past the closing `}`.
    ended: bool,
}

impl<'de> de::MapAccess<'de> for Entries<'_, 'de> {
    type Error = GaveUp;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>> {
        let r = &mut *self.reader;
        if !r.next_item(&mut self.first, &mut self.ended, b'}')? {
            return Ok(None);
        }
        if r.peek()? != b'"' {
            return r.give_up();
        }
        let name = match known_name(&mut r.scan, self.fields, &mut self.next_field) {
            Some(name) => Name::Text(name),
            // A key a struct does not expect is, for the struct's own field visitor, only
            // compared with its names: as bytes, it needs no UTF-8 check.
            None if !self.fields.is_empty() => {
                r.scan.pos += 1;
                let bytes = r.scan.string();
                Name::Bytes(r.or_give_up(bytes)?)
            }
            None => Name::Text(r.string()?),
        };
        let colon = r.scan.eat(b':');
        r.or_give_up(colon)?;
        seed.deserialize(Key {
            name,
            gave_up: &mut r.gave_up,
        })
        .map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value> {
        seed.deserialize(&mut *self.reader)
    }
}

/// The name of `fields` the key at the cursor (its opening quote) spells, the cursor then
/// past its closing quote; `fields[*next]` is tried first, and `*next` becomes the one after
/// the name found. A name JSON would write with an escape never matches: the key is then
/// read as any other.
#[inline(always)]
fn known_name(
    scan: &mut Scan,
    fields: &'static [&'static str],
    next: &mut usize,
) -> Option<&'static str> {
    let rest = scan.bytes.get(scan.pos + 1..)?;
    let spelled = |name: &str| {
        let name = name.as_bytes();
        rest.get(name.len()) == Some(&b'"')
            && rest.starts_with(name)
            && !name.iter().any(|&c| c < 0x20 || c == b'"' || c == b'\\')
    };
    let found = match fields.get(*next) {
        Some(name) if spelled(name) => *next,
        _ => fields.iter().position(|name| spelled(name))?,
    };
    let name = fields[found];
    scan.pos += name.len() + 2;
    *next = found + 1;
    Some(name)
}

/// An array's elements, from after its `[`.
struct Elements<'r, 'de> {
    reader: &'r mut Reader<'de>,
    first: bool,
    /// Past the closing `]`.
    ended: bool,
}

impl<'de> de::SeqAccess<'de> for Elements<'_, 'de> {
    type Error = GaveUp;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>> {
        if !self
            .reader
            .next_item(&mut self.first, &mut self.ended, b']')?
        {
            return Ok(None);
        }
        seed.deserialize(&mut *self.reader).map(Some)
    }
}

/// An object's key: a string, as serde_json hands it to a visitor. Keys read as numbers or
/// booleans (a map keyed by `u32`, say) are left to serde_json, which parses them.
struct Key<'r, 'de> {
    name: Name<'de>,
    gave_up: &'r mut bool,
}

/// A key's text, or its bytes where the UTF-8 check was left to the one visitor that needs
/// text (`Scan::string` has checked every byte above 127).
enum Name<'de> {
    Text(&'de str),
    Bytes(&'de [u8]),
}

/// Methods of [`Key`] that leave the key to serde_json.
macro_rules! give_up {
    ($($method:ident($($arg:ty),*)),* $(,)?) => {
        $(
            fn $method<V: Visitor<'de>>(self, $(_: $arg,)* _: V) -> Result<V::Value> {
                *self.gave_up = true;
                Err(GaveUp)
            }
        )*
    };
}

impl<'de> de::Deserializer<'de> for Key<'_, 'de> {
    type Error = GaveUp;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.name {
            Name::Text(text) => visitor.visit_borrowed_str(text),
            Name::Bytes(bytes) => match std::str::from_utf8(bytes) {
                Ok(text) => visitor.visit_borrowed_str(text),
                Err(_) => {
                    *self.gave_up = true;
                    Err(GaveUp)
                }
            },
        }
    }

    /// A struct's field visitor (serde's derive) reads a name as text or as bytes alike.
    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.name {
            Name::Text(text) => visitor.visit_borrowed_str(text),
            Name::Bytes(bytes) => visitor.visit_borrowed_bytes(bytes),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! { str string }

    give_up! {
        deserialize_bool(), deserialize_i8(), deserialize_i16(), deserialize_i32(),
        deserialize_i64(), deserialize_i128(), deserialize_u8(), deserialize_u16(),
        deserialize_u32(), deserialize_u64(), deserialize_u128(), deserialize_f32(),
        deserialize_f64(), deserialize_char(), deserialize_bytes(), deserialize_byte_buf(),
        deserialize_option(), deserialize_unit(), deserialize_unit_struct(&'static str),
        deserialize_newtype_struct(&'static str), deserialize_seq(),
        deserialize_tuple(usize), deserialize_tuple_struct(&'static str, usize),
        deserialize_map(), deserialize_struct(&'static str, &'static [&'static str]),
        deserialize_enum(&'static str, &'static [&'static str]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::Deserialize;
    use std::collections::BTreeMap;

    #[derive(Debug, PartialEq, Deserialize)]
    struct Ride {
        ts: i64,
        driver_id: u32,
        region: String,
        speed: f64,
        tag: Option<String>,
        #[serde(default)]
        stops: Vec<u16>,
        #[serde(default)]
        flags: BTreeMap<String, bool>,
    }

    /// Where the fast reader gives a value, serde_json gives an equal one.
    fn agrees<T: for<'de> Deserialize<'de> + fmt::Debug + PartialEq>(text: &str) -> bool {
        let fast = from_slice::<T>(text.as_bytes());
        if let Some(value) = &fast {
            let serde = serde_json::from_str::<T>(text);
            assert_eq!(serde.as_ref().ok(), Some(value), "{text}");
        }
        fast.is_some()
    }

    fn value_agrees(text: &str) -> bool {
        match from_slice::<serde_json::Value>(text.as_bytes()) {
            Some(fast) => {
                let serde: serde_json::Value = serde_json::from_str(text).expect(text);
                // Printed, so that floats compare with their sign and every digit.
                assert_eq!(fast.to_string(), serde.to_string(), "{text}");
                true
            }
            None => false,
        }
    }

    #[test]
    fn usual_records_are_read_here() {
        for text in [
            r#"{"ts":1700000000127,"driver_id":42,"region":"north","lat":52.5,"lon":13.4,"speed":21.917}"#,
            r#" { "speed" : -0 , "region" : "é" , "ts" : -3 , "driver_id" : 0 , "tag" : null } "#,
            r#"{"ts":1,"driver_id":2,"region":"","speed":1e3,"tag":"x","stops":[1,2],"flags":{"a":true}}"#,
            r#"{"ts":1,"driver_id":2,"region":"r","speed":5,"extra":{"deep":[[{}],[]],"s":"t"}}"#,
        ] {
            assert!(agrees::<Ride>(text), "{text}");
            assert!(value_agrees(text), "{text}");
        }
        // A number nobody reads is checked, not converted, by both.
        let unread = r#"{"lat":1e400,"lon":-0.5E+3,"speed":1,"ts":1,"driver_id":2,"region":"r"}"#;
        assert!(agrees::<Ride>(unread));
        assert!(!value_agrees(unread));
        assert!(agrees::<Option<Ride>>("null"));
        assert!(agrees::<(u8, String)>(r#"[7,"x"]"#));
    }

    #[test]
    fn what_serde_json_reads_otherwise_or_refuses_is_left_to_it() {
        for text in [
            r#"{"ts":1,"driver_id":2,"region":"a\"b","speed":1}"#,
            r#"{"ts":1,"driver_id":-2,"region":"r","speed":1}"#,
            r#"{"ts":1,"driver_id":2,"region":"r","speed":1,"ts":2}"#,
            r#"{"ts":1,"driver_id":2,"region":"r"}"#,
            r#"{"ts":1,"driver_id":2,"region":"r","speed":1,}"#,
            r#"{"ts":1,"driver_id":2,"region":"r","speed":1} x"#,
            r#"{"ts":1.5,"driver_id":2,"region":"r","speed":1}"#,
            r#"{"ts":1,"driver_id":2,"region":"r","speed":1e400}"#,
            r#"{"ts":1,"driver_id":2,"region":"r","speed":1,"stops":[1,]}"#,
            r#"{"ts":1,"driver_id":2,"region":"r","speed":1,"x":"a	b"}"#,
            "{\"ts\":1,\"driver_id\":2,\"region\":\"r\",\"speed\":1",
        ] {
            assert!(!agrees::<Ride>(text), "{text}");
        }
        #[derive(Debug, PartialEq, Deserialize)]
        struct Quoted {
            #[serde(rename = "a\"b")]
            x: u8,
        }
        assert!(!agrees::<Quoted>(r#"{"a\"b":1}"#));
        assert!(!agrees::<Quoted>(r#"{"a"b":1}"#));
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert!(!value_agrees(&deep));
        assert!(from_slice::<BTreeMap<u32, u32>>(br#"{"1":2}"#).is_none());
    }

    fn number() -> impl Strategy<Value = String> {
        prop_oneof![
            "-?(0|[1-9][0-9]{0,21})(\\.[0-9]{1,20})?([eE][+-]?[0-9]{1,3})?",
            any::<f64>().prop_map(|f| f.to_string()),
            any::<i64>().prop_map(|i| i.to_string()),
            "-?[0-9]{1,4}\\.?[0-9]{0,3}",
        ]
    }

    fn scalar() -> impl Strategy<Value = String> {
        prop_oneof![
            number(),
            "\"([a-z ]|é|\\\\n|\\\\\"|\\\\u00e9|\\t){0,8}\"",
            Just("true".to_string()),
            Just("null".to_string()),
        ]
    }

    fn json() -> impl Strategy<Value = String> {
        scalar().prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4)
                    .prop_map(|v| format!("[{}]", v.join(","))),
                proptest::collection::vec(("[a-z]{1,3}", inner), 0..4).prop_map(|v| {
                    let fields: Vec<String> = v
                        .into_iter()
                        .map(|(k, v)| format!("\"{k}\" : {v}"))
                        .collect();
                    format!("{{{}}}", fields.join(","))
                }),
            ]
        })
    }

    /// A ride record's fields in any order, some missing, some repeated, with values of any
    /// kind and whitespace between tokens.
    fn ride() -> impl Strategy<Value = String> {
        let field = prop_oneof![
            number().prop_map(|v| format!("\"ts\":{v}")),
            number().prop_map(|v| format!("\"driver_id\":{v}")),
            scalar().prop_map(|v| format!("\"region\":{v}")),
            number().prop_map(|v| format!("\"speed\":{v}")),
            scalar().prop_map(|v| format!("\"tag\":{v}")),
            json().prop_map(|v| format!("\"stops\":{v}")),
            json().prop_map(|v| format!("\"lat\":{v}")),
        ];
        (proptest::collection::vec(field, 0..9), " ?")
            .prop_map(|(fields, ws)| format!("{ws}{{{}}}{ws}", fields.join(&format!("{ws},{ws}"))))
    }

    proptest! {
        #[test]
        fn any_value_reads_as_serde_json_reads_it(text in json()) {
            value_agrees(&text);
        }

        #[test]
        fn any_record_reads_as_serde_json_reads_it(text in ride()) {
            agrees::<Ride>(&text);
            value_agrees(&text);
        }

        #[test]
        fn numbers_read_as_serde_json_reads_them(text in number()) {
            agrees::<f64>(&text);
            agrees::<i64>(&text);
            agrees::<u32>(&text);
            value_agrees(&text);
        }
    }
}
