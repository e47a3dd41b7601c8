//! Converters, as Kafka Connect's `key.converter` / `value.converter`: how a connector's data
//! becomes the bytes of a topic record (sources) and how a record's bytes become what a sink
//! reads (sinks).
//!
//! - `json` (`org.apache.kafka.connect.json.JsonConverter`): plain JSON; with
//!   `*.converter.schemas.enable = true` Kafka Connect's `{"schema": .., "payload": ..}`
//!   envelope, written with a schema inferred from the value (sources) and required and
//!   unwrapped (sinks). A text line from a source becomes a JSON string.
//! - `string` (`org.apache.kafka.connect.storage.StringConverter`): text as is; a structured
//!   value is written as its JSON text. Sinks receive the bytes, which must be UTF-8.
//! - `bytes` (`org.apache.kafka.connect.converters.ByteArrayConverter`): the bytes untouched.
//!
//! Without a converter key the bytes pass through unchanged (text lines stay text, structured
//! values are plain JSON), which is what connectors did before converters existed.
//!
//! Contract for sinks: after a `json` converter the value a sink sees is plain JSON (the
//! envelope's payload); a conversion error is the record's error (dead-letter topic under
//! `errors.tolerance = all`), never a panic.

use crate::config::ConnectorConfig;
use crate::error::Result;
use serde_json::{Map, Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Converter {
    Json { schemas: bool },
    String,
    Bytes,
}

/// The key and value converters of one connector (`None`: pass-through).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Converters {
    pub key: Option<Converter>,
    pub value: Option<Converter>,
}

impl Converters {
    /// The converters `c` names (its [`Common`](crate::config::Common) keys `key.converter`,
    /// `value.converter` and their `.schemas.enable`).
    ///
    /// # Errors
    /// [`crate::ConnectError::Config`] for a converter class other than `json`, `string` and
    /// `bytes` (or Kafka's class names for them), or `schemas.enable` without `json`.
    pub fn from_config(c: &ConnectorConfig) -> Result<Self> {
        let common = c.common()?;
        Ok(Self {
            key: one(c, "key", common.key_converter, common.key_converter_schemas)?,
            value: one(
                c,
                "value",
                common.value_converter,
                common.value_converter_schemas,
            )?,
        })
    }

    /// Whether a source's keys and values (text values when `text`) go to the topic unchanged,
    /// so a batch of them needs no pass through [`Converter::from_connect`].
    pub fn pass_through(&self, text: bool) -> bool {
        self.key.is_none_or(|k| k.passes_through(false))
            && self.value.is_none_or(|v| v.passes_through(text))
    }
}

/// The `<which>.converter` of class `class`, with `schemas` (`<which>.converter.schemas.enable`).
fn one(
    c: &ConnectorConfig,
    which: &str,
    class: Option<String>,
    schemas_enable: Option<bool>,
) -> Result<Option<Converter>> {
    let key = format!("{which}.converter");
    let schemas_key = format!("{key}.schemas.enable");
    let schemas = schemas_enable.unwrap_or(false);
    let conv = match class.as_deref() {
        None => None,
        Some(class) => Some(match class.rsplit('.').next().unwrap_or(class) {
            "json" | "JsonConverter" => Converter::Json { schemas },
            "string" | "StringConverter" => Converter::String,
            "bytes" | "ByteArrayConverter" => Converter::Bytes,
            _ => {
                return Err(c.error(format!(
                    "{key} = {class:?}: use json, string or bytes (or Kafka's JsonConverter, StringConverter, ByteArrayConverter class names)"
                )));
            }
        }),
    };
    if schemas_enable.is_some() && !matches!(conv, Some(Converter::Json { .. })) {
        return Err(c.error(format!("{schemas_key} applies only to {key} = json")));
    }
    Ok(conv)
}

impl Converter {
    /// Whether [`from_connect`](Self::from_connect) returns any data (text when `text`) as it is.
    pub fn passes_through(self, text: bool) -> bool {
        match self {
            Self::Bytes => true,
            Self::String => text,
            Self::Json { schemas } => !schemas && !text,
        }
    }

    /// A source's data to record bytes. `text`: the data is a plain string (a text line), not
    /// JSON.
    pub fn from_connect(self, data: &[u8], text: bool) -> Result<Vec<u8>, String> {
        let as_value = || -> Result<Value, String> {
            if text {
                Ok(Value::String(String::from_utf8_lossy(data).into_owned()))
            } else {
                serde_json::from_slice(data).map_err(|e| format!("not JSON: {e}"))
            }
        };
        match self {
            Self::Bytes => Ok(data.to_vec()),
            Self::String => match (text, serde_json::from_slice::<Value>(data)) {
                (false, Ok(Value::String(s))) => Ok(s.into_bytes()),
                _ => Ok(data.to_vec()),
            },
            Self::Json { schemas: false } if !text => Ok(data.to_vec()),
            Self::Json { schemas: false } => Ok(to_vec(&as_value()?)),
            Self::Json { schemas: true } => {
                let v = as_value()?;
                Ok(to_vec(&json!({ "schema": schema_of(&v), "payload": v })))
            }
        }
    }

    /// Record bytes to what a sink reads; `None` for a null (an envelope whose payload is null).
    pub fn to_connect(self, bytes: &[u8]) -> Result<Option<Vec<u8>>, String> {
        match self {
            Self::Bytes => Ok(Some(bytes.to_vec())),
            Self::String => std::str::from_utf8(bytes)
                .map(|_| Some(bytes.to_vec()))
                .map_err(|e| format!("not UTF-8 text (string converter): {e}")),
            Self::Json { schemas } => {
                let v: Value =
                    serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
                if !schemas {
                    return Ok(Some(bytes.to_vec()));
                }
                match v {
                    Value::Object(mut o)
                        if o.len() == 2 && o.contains_key("schema") && o.contains_key("payload") =>
                    {
                        match o.remove("payload").expect("checked above") {
                            Value::Null => Ok(None),
                            p => Ok(Some(to_vec(&p))),
                        }
                    }
                    _ => Err("JSON without the {\"schema\", \"payload\"} envelope that \
                              converter.schemas.enable = true expects (set it to false for plain JSON)"
                        .into()),
                }
            }
        }
    }
}

fn to_vec(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).expect("JSON values serialize")
}

/// Kafka Connect's JSON schema of a value, inferred from its JSON types.
pub fn schema_of(v: &Value) -> Value {
    match v {
        Value::Null => json!({ "type": "string", "optional": true }),
        Value::Bool(_) => json!({ "type": "boolean", "optional": false }),
        Value::Number(n) if n.is_i64() || n.is_u64() => {
            json!({ "type": "int64", "optional": false })
        }
        Value::Number(_) => json!({ "type": "double", "optional": false }),
        Value::String(_) => json!({ "type": "string", "optional": false }),
        Value::Array(a) => json!({
            "type": "array",
            "items": a.first().map(schema_of).unwrap_or(json!({ "type": "string", "optional": true })),
            "optional": false,
        }),
        Value::Object(o) => {
            let fields: Vec<Value> = o
                .iter()
                .map(|(k, v)| {
                    let mut f: Map<String, Value> = match schema_of(v) {
                        Value::Object(m) => m,
                        _ => unreachable!("schemas are objects"),
                    };
                    f.insert("field".into(), Value::from(k.clone()));
                    Value::Object(f)
                })
                .collect();
            json!({ "type": "struct", "fields": fields, "optional": false })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn convs(props: Value) -> Result<Converters> {
        Converters::from_config(&ConnectorConfig::from_json(Some("c"), &props).unwrap())
    }

    #[test]
    fn kafka_class_names_and_short_names() {
        let c = convs(json!({
            "key.converter": "org.apache.kafka.connect.storage.StringConverter",
            "value.converter": "org.apache.kafka.connect.json.JsonConverter",
            "value.converter.schemas.enable": "true",
        }))
        .unwrap();
        assert_eq!(c.key, Some(Converter::String));
        assert_eq!(c.value, Some(Converter::Json { schemas: true }));
        let c = convs(
            json!({"value.converter": "org.apache.kafka.connect.converters.ByteArrayConverter"}),
        )
        .unwrap();
        assert_eq!(c.value, Some(Converter::Bytes));
        let err = convs(json!({"value.converter": "avro"}))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("value.converter") && err.contains("json, string or bytes"),
            "{err}"
        );
        let err =
            convs(json!({"value.converter": "string", "value.converter.schemas.enable": "true"}))
                .unwrap_err()
                .to_string();
        assert!(
            err.contains("applies only to value.converter = json"),
            "{err}"
        );
    }

    #[test]
    fn envelope_round_trip() {
        let j = Converter::Json { schemas: true };
        let out = j
            .from_connect(br#"{"id":1,"name":"a","x":1.5,"ok":true}"#, false)
            .unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["schema"]["type"], "struct");
        let types: Vec<(&str, &str)> = v["schema"]["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| (f["field"].as_str().unwrap(), f["type"].as_str().unwrap()))
            .collect();
        assert!(
            types.contains(&("id", "int64")) && types.contains(&("x", "double")),
            "{types:?}"
        );
        assert_eq!(v["payload"]["name"], "a");
        let back = j.to_connect(&out).unwrap().unwrap();
        assert_eq!(serde_json::from_slice::<Value>(&back).unwrap()["ok"], true);
        assert!(
            j.to_connect(br#"{"id":1}"#)
                .unwrap_err()
                .contains("envelope")
        );
        assert_eq!(
            j.to_connect(br#"{"schema":null,"payload":null}"#).unwrap(),
            None
        );
    }

    #[test]
    fn text_lines_under_each_converter() {
        let line = b"hello \"world\"";
        assert_eq!(
            Converter::Json { schemas: false }
                .from_connect(line, true)
                .unwrap(),
            br#""hello \"world\"""#.to_vec()
        );
        assert_eq!(
            Converter::String.from_connect(line, true).unwrap(),
            line.to_vec()
        );
        assert_eq!(
            Converter::String.from_connect(br#""s""#, false).unwrap(),
            b"s".to_vec()
        );
        assert_eq!(
            Converter::Bytes.from_connect(line, true).unwrap(),
            line.to_vec()
        );
        assert!(Converter::String.to_connect(&[0xff, 0xfe]).is_err());
    }
}
