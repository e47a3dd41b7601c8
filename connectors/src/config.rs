//! Connector configurations: Kafka Connect's flat string maps, read into one typed struct per
//! connector (`#[derive(serde::Deserialize)]`, a field per key renamed to its dotted name).
//!
//! [`ConnectorConfig::parse`] deserializes such a struct from the strings: numbers and booleans
//! parse from their text, an enum takes the name of one of its variants, `Option` fields are
//! the keys that may be absent. A key neither in the struct nor [`Common`] (nor a
//! `transforms.*` / `predicates.*` key, read by [`crate::transforms`]) is an error naming the
//! closest known key; a bad value is an error naming the key, the value and what is accepted
//! (`format = "xml": use text, json or csv`); a missing required key is
//! `missing required key "topic"`. Checks across keys (`file` or `directory`, not both) are
//! the connector's, after deserialization. Every error is [`ConnectError::Config`].

use crate::error::{ConnectError, Result};
use serde::Deserialize;
use serde::de::{self, DeserializeOwned, IntoDeserializer, Visitor};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::OnceLock;

/// The keys every connector accepts (Kafka Connect's common ones), read by the worker, the
/// registry and the converters.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
pub struct Common {
    pub name: Option<String>,
    #[serde(rename = "connector.class")]
    pub class: Option<String>,
    /// The most tasks the connector runs as (1 by default); see [`crate::registry::task_configs`].
    #[serde(rename = "tasks.max")]
    pub tasks_max: Option<u32>,
    #[serde(rename = "key.converter")]
    pub key_converter: Option<String>,
    #[serde(rename = "value.converter")]
    pub value_converter: Option<String>,
    #[serde(rename = "key.converter.schemas.enable")]
    pub key_converter_schemas: Option<bool>,
    #[serde(rename = "value.converter.schemas.enable")]
    pub value_converter_schemas: Option<bool>,
    #[serde(rename = "errors.tolerance", default)]
    pub errors_tolerance: Tolerance,
    #[serde(rename = "errors.deadletterqueue.topic.name")]
    pub dead_letter_topic: Option<String>,
    /// Accepted and unused: errors are logged always.
    #[serde(rename = "errors.log.enable")]
    pub errors_log: Option<String>,
    /// The longest wait between restarts of a failed connector (the worker's backoff).
    #[serde(rename = "errors.retry.delay.max.ms")]
    pub retry_delay_max_ms: Option<u64>,
    #[serde(rename = "exactly.once.support", default)]
    pub exactly_once: ExactlyOnce,
    /// Kafka Connect's per-connector producer override: the codec of a source's batches.
    #[serde(rename = "producer.override.compression.type")]
    pub compression: Option<String>,
}

/// `errors.tolerance`: `all` sends a bad record to the dead-letter topic and goes on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tolerance {
    #[default]
    None,
    All,
}

/// `exactly.once.support` (KIP-618): `required` (or `requested`) writes a source's records and
/// its source offsets in one transaction per poll; `none` is at-least-once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExactlyOnce {
    Required,
    Requested,
    #[default]
    None,
}

impl Common {
    /// `errors.tolerance = all`.
    pub fn tolerates_errors(&self) -> bool {
        self.errors_tolerance == Tolerance::All
    }

    /// `exactly.once.support = required` or `requested`.
    pub fn exactly_once(&self) -> bool {
        self.exactly_once != ExactlyOnce::None
    }
}

/// A comma-separated list (`topics`, `table.whitelist`, `pk.fields`): trimmed names, empty
/// ones dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct List(pub Vec<String>);

impl<'de> serde::Deserialize<'de> for List {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(Self::parse(&s))
    }
}

impl List {
    /// The names, at least one (a sink's `topics`).
    ///
    /// # Errors
    /// [`ConnectError::Config`] `<key> is empty` when there is none.
    pub fn non_empty(self, c: &ConnectorConfig, key: &str) -> Result<Vec<String>> {
        if self.0.is_empty() {
            return Err(c.error(format!("{key} is empty")));
        }
        Ok(self.0)
    }

    /// `s` split at commas.
    pub fn parse(s: &str) -> Self {
        Self(
            s.split(',')
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
                .collect(),
        )
    }
}

/// A connector's configuration: its name, class, and every key as given.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectorConfig {
    pub name: String,
    pub props: BTreeMap<String, String>,
}

impl ConnectorConfig {
    /// From Kafka Connect's JSON shape (`{"name": .., "connector.class": .., ...}`); values
    /// may be strings, numbers or booleans.
    ///
    /// # Errors
    /// [`ConnectError::Config`] when `value` is not an object, a value is an array, object or
    /// null, or there is no name (neither `name` nor a `"name"` key).
    pub fn from_json(name: Option<&str>, value: &serde_json::Value) -> Result<Self> {
        let obj = value.as_object().ok_or_else(|| ConnectError::Config {
            connector: name.unwrap_or("?").into(),
            message: "the configuration must be a JSON object of strings".into(),
        })?;
        let mut props = BTreeMap::new();
        for (k, v) in obj {
            let s = match v {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Bool(b) => b.to_string(),
                other => {
                    return Err(ConnectError::Config {
                        connector: name.unwrap_or("?").into(),
                        message: format!("{k}: expected a string, found {other}"),
                    });
                }
            };
            props.insert(k.clone(), s);
        }
        let name = name
            .map(str::to_string)
            .or_else(|| props.get("name").cloned())
            .ok_or_else(|| ConnectError::Config {
                connector: "?".into(),
                message: "missing \"name\"".into(),
            })?;
        props.insert("name".into(), name.clone());
        Ok(Self { name, props })
    }

    /// The value of `key` as given (for keys no struct declares: `transforms.<name>.*`).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.props.get(key).map(String::as_str)
    }

    /// The connector's typed configuration `T`, a struct whose fields are its keys; see the
    /// module documentation.
    ///
    /// # Errors
    /// [`ConnectError::Config`] naming the first key neither in `T` nor [`Common`] (and the
    /// closest known one), a value `T` does not accept (and what it accepts), or a missing
    /// required key.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T> {
        T::deserialize(&Props::new(&self.props, Some(common_keys()))).map_err(|e| self.error(e.0))
    }

    /// The [`Common`] keys, checked.
    ///
    /// # Errors
    /// [`ConnectError::Config`] naming a common key whose value is not accepted.
    pub fn common(&self) -> Result<Common> {
        Common::deserialize(&Props::new(&self.props, None)).map_err(|e| self.error(e.0))
    }

    /// A [`ConnectError::Config`] of this connector.
    pub fn error(&self, message: String) -> ConnectError {
        ConnectError::Config {
            connector: self.name.clone(),
            message,
        }
    }

    /// The error of a missing required key (one required only with some other key's value).
    pub fn missing(&self, key: &str) -> ConnectError {
        self.error(format!("missing required key {key:?}"))
    }
}

/// [`Common`]'s keys, as its `Deserialize` names them.
fn common_keys() -> &'static [&'static str] {
    static KEYS: OnceLock<&'static [&'static str]> = OnceLock::new();
    KEYS.get_or_init(|| {
        let props = BTreeMap::new();
        let d = Props::new(&props, None);
        // Every key is optional; `deserialize_struct` records the fields either way.
        let _ = Common::deserialize(&d);
        d.fields.get()
    })
}

/// Whether `key` belongs to the transforms (`transforms`, `transforms.<name>.<key>`, and the
/// same for `predicates`), which [`crate::transforms`] reads.
fn is_transform_key(key: &str) -> bool {
    ["transforms", "predicates"].contains(&key)
        || key.starts_with("transforms.")
        || key.starts_with("predicates.")
}

/// An error message, without the connector (which [`ConnectorConfig`] adds).
#[derive(Debug)]
struct Error(String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Self(msg.to_string())
    }

    fn missing_field(field: &'static str) -> Self {
        Self(format!("missing required key {field:?}"))
    }

    fn unknown_variant(_variant: &str, expected: &'static [&'static str]) -> Self {
        Self(format!("use {}", choices(expected)))
    }
}

/// `a, b or c`.
fn choices(names: &[&str]) -> String {
    match names {
        [] => String::new(),
        [one] => (*one).to_string(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

/// The string map as a struct's deserializer.
struct Props<'a> {
    props: &'a BTreeMap<String, String>,
    /// Check that every key is a field of the struct or one of these; `None`: no check
    /// ([`Common`], which reads a few keys of many).
    also_known: Option<&'static [&'static str]>,
    /// The struct's fields, as `deserialize_struct` was given them.
    fields: Cell<&'static [&'static str]>,
}

impl<'a> Props<'a> {
    fn new(
        props: &'a BTreeMap<String, String>,
        also_known: Option<&'static [&'static str]>,
    ) -> Self {
        Self {
            props,
            also_known,
            fields: Cell::new(&[]),
        }
    }

    /// The first key neither a field nor also known, with the closest known key.
    fn check_keys(&self, fields: &[&str], also_known: &[&str]) -> Result<(), Error> {
        let Some(key) = self.props.keys().find(|k| {
            !(is_transform_key(k)
                || fields.contains(&k.as_str())
                || also_known.contains(&k.as_str()))
        }) else {
            return Ok(());
        };
        let closest = also_known
            .iter()
            .chain(fields)
            .min_by_key(|k| edit_distance(key, k))
            .copied()
            .unwrap_or_default();
        Err(Error(format!(
            "unknown key {key:?} (did you mean {closest:?}?)"
        )))
    }
}

impl<'de> de::Deserializer<'de> for &Props<'_> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Error> {
        Err(Error(
            "a connector configuration deserializes into a struct only".into(),
        ))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.fields.set(fields);
        if let Some(also_known) = self.also_known {
            self.check_keys(fields, also_known)?;
        }
        visitor.visit_map(Entries {
            entries: self
                .props
                .iter()
                .filter(|(k, _)| fields.contains(&k.as_str()))
                .collect::<Vec<_>>()
                .into_iter(),
            value: None,
        })
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

/// The struct's keys and their values.
struct Entries<'a> {
    entries: std::vec::IntoIter<(&'a String, &'a String)>,
    value: Option<Value<'a>>,
}

impl<'de> de::MapAccess<'de> for Entries<'_> {
    type Error = Error;

    fn next_key_seed<K: de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        let Some((key, value)) = self.entries.next() else {
            return Ok(None);
        };
        self.value = Some(Value { key, value });
        seed.deserialize(key.as_str().into_deserializer()).map(Some)
    }

    fn next_value_seed<V: de::DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let value = self.value.take().expect("next_key_seed gave a key");
        seed.deserialize(value)
    }
}

/// One key's string value, read as the field's type asks.
#[derive(Clone, Copy)]
struct Value<'a> {
    key: &'a str,
    value: &'a str,
}

impl Value<'_> {
    /// `e` about this key and value: `key = "value": e`.
    fn at(self, e: Error) -> Error {
        Error(format!("{} = {:?}: {e}", self.key, self.value))
    }

    fn parse<T: std::str::FromStr>(self, accepted: impl FnOnce() -> String) -> Result<T, Error> {
        self.value
            .parse()
            .map_err(|_| self.at(Error(format!("use {}", accepted()))))
    }
}

/// `deserialize_<type>` methods parsing the string as `<type>`.
macro_rules! parsed {
    ($($method:ident $visit:ident $ty:ty => $accepted:expr;)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            let v: $ty = self.parse($accepted)?;
            visitor.$visit(v).map_err(|e| self.at(e))
        }
    )*};
}

/// What an integer type accepts.
fn integers<T: fmt::Display>(min: T, max: T) -> impl FnOnce() -> String {
    move || format!("an integer from {min} to {max}")
}

impl<'de> de::Deserializer<'de> for Value<'_> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_str(self.value).map_err(|e| self.at(e))
    }

    parsed! {
        deserialize_bool visit_bool bool => || "true or false".into();
        deserialize_i8 visit_i8 i8 => integers(i8::MIN, i8::MAX);
        deserialize_i16 visit_i16 i16 => integers(i16::MIN, i16::MAX);
        deserialize_i32 visit_i32 i32 => integers(i32::MIN, i32::MAX);
        deserialize_i64 visit_i64 i64 => integers(i64::MIN, i64::MAX);
        deserialize_u8 visit_u8 u8 => integers(u8::MIN, u8::MAX);
        deserialize_u16 visit_u16 u16 => integers(u16::MIN, u16::MAX);
        deserialize_u32 visit_u32 u32 => integers(u32::MIN, u32::MAX);
        deserialize_u64 visit_u64 u64 => integers(u64::MIN, u64::MAX);
        deserialize_f32 visit_f32 f32 => || "a number".into();
        deserialize_f64 visit_f64 f64 => || "a number".into();
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_some(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        let variant: de::value::StrDeserializer<'_, Error> = self.value.into_deserializer();
        visitor.visit_enum(variant).map_err(|e| self.at(e))
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    serde::forward_to_deserialize_any! {
        i128 u128 char str string bytes byte_buf unit unit_struct seq tuple tuple_struct map
        struct identifier ignored_any
    }
}

/// Levenshtein distance, for "did you mean".
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Debug, PartialEq, serde::Deserialize)]
    struct Demo {
        topic: String,
        #[serde(rename = "batch.max.lines", default = "hundred")]
        lines: usize,
        #[serde(rename = "auto.create", default)]
        create: bool,
        #[serde(rename = "poll.interval.ms")]
        interval: Option<u64>,
        #[serde(default)]
        format: Format,
        #[serde(rename = "topics", default)]
        topics: List,
    }

    fn hundred() -> usize {
        100
    }

    #[derive(Debug, Default, PartialEq, serde::Deserialize)]
    #[serde(rename_all = "lowercase")]
    enum Format {
        #[default]
        Text,
        Json,
        Csv,
    }

    fn demo(props: serde_json::Value) -> Result<Demo> {
        ConnectorConfig::from_json(Some("c"), &props)?.parse()
    }

    fn err(props: serde_json::Value) -> String {
        demo(props).unwrap_err().to_string()
    }

    #[test]
    fn numbers_and_booleans_parse_from_strings() {
        let d = demo(
            json!({"topic": "t", "batch.max.lines": "250", "auto.create": "true",
            "poll.interval.ms": 5, "format": "csv", "topics": " a, ,b "}),
        )
        .unwrap();
        assert_eq!(
            d,
            Demo {
                topic: "t".into(),
                lines: 250,
                create: true,
                interval: Some(5),
                format: Format::Csv,
                topics: List(vec!["a".into(), "b".into()]),
            }
        );
        let defaults =
            demo(json!({"topic": "t", "connector.class": "x", "tasks.max": "1"})).unwrap();
        assert_eq!(
            (defaults.lines, defaults.create, defaults.interval),
            (100, false, None)
        );
        assert_eq!(
            (defaults.format, defaults.topics),
            (Format::Text, List::default())
        );
    }

    #[test]
    fn a_bad_value_names_the_key_the_value_and_what_is_accepted() {
        assert_eq!(
            err(json!({"topic": "t", "batch.max.lines": "ten"})),
            "connector \"c\": batch.max.lines = \"ten\": use an integer from 0 to 18446744073709551615"
        );
        assert_eq!(
            err(json!({"topic": "t", "auto.create": "yes"})),
            "connector \"c\": auto.create = \"yes\": use true or false"
        );
    }

    #[test]
    fn an_enum_lists_its_choices() {
        assert_eq!(
            err(json!({"topic": "t", "format": "xml"})),
            "connector \"c\": format = \"xml\": use text, json or csv"
        );
        let c = ConnectorConfig::from_json(Some("c"), &json!({"exactly.once.support": "yes"}));
        assert_eq!(
            c.unwrap().common().unwrap_err().to_string(),
            "connector \"c\": exactly.once.support = \"yes\": use required, requested or none"
        );
    }

    #[test]
    fn a_missing_required_key_is_named() {
        assert_eq!(
            err(json!({})),
            "connector \"c\": missing required key \"topic\""
        );
    }

    #[test]
    fn unknown_keys_name_the_closest_known_one() {
        let e = err(json!({"connector.class": "FileStreamSource", "topik": "t"}));
        assert!(
            e.contains("unknown key \"topik\"") && e.contains("did you mean \"topic\"?"),
            "{e}"
        );
        // The common keys are known, and closest when they are.
        let e = err(json!({"topic": "t", "errors.tolerence": "all"}));
        assert!(e.contains("did you mean \"errors.tolerance\"?"), "{e}");
        // Transforms have keys of their own, read by the chain.
        demo(json!({"topic": "t", "transforms": "a", "transforms.a.type": "Filter"})).unwrap();
    }

    #[test]
    fn common_keys_are_the_fields_of_common() {
        let keys = common_keys();
        assert!(keys.contains(&"exactly.once.support") && keys.contains(&"tasks.max"));
        assert_eq!(keys.len(), 13);
    }
}
