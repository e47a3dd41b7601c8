//! Single-message transforms, configured as in Kafka Connect (`transforms = a,b`,
//! `transforms.a.type = org.apache.kafka.connect.transforms.InsertField$Value`, ...) and
//! applied in order to every record a connector produces or consumes. Values (and keys) are
//! treated as JSON; a transform that needs an object and finds something else fails the record.
//!
//! Supported: `InsertField$Value|$Key` (`static.field` + `static.value`, `topic.field`),
//! `ReplaceField$Value` (`include`, `exclude`, `renames` as `old:new,...`), `MaskField$Value`
//! (`fields`: replaced by the empty value of their type), `ExtractField$Value` (`field`),
//! `ValueToKey` (`fields`), `RegexRouter` (`regex`, `replacement` with `$1`...), and `Filter`
//! with a predicate (`predicates = p`, `predicates.p.type = ...TopicNameMatches` (`pattern`),
//! `HasHeaderKey` (`name`) or `RecordIsTombstone`; `transforms.x.predicate = p`,
//! `transforms.x.negate = true`). Short names (`InsertField$Value`) are accepted too.
//! `Cast` and `TimestampConverter` are in [`typed`].

use crate::config::ConnectorConfig;
use crate::error::{ConnectError, Result};
pub mod typed;

use serde_json::{Map, Value};
use typed::{CastSpec, TimestampConverter};

/// A record as transforms see it.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub topic: String,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub header_keys: Vec<String>,
}

enum Predicate {
    TopicMatches(regex::Regex),
    HasHeaderKey(String),
    IsTombstone,
}

enum Step {
    InsertField {
        key: bool,
        fields: Vec<(String, Value)>,
        topic_field: Option<String>,
    },
    ReplaceField {
        include: Vec<String>,
        exclude: Vec<String>,
        renames: Vec<(String, String)>,
    },
    MaskField(Vec<String>),
    ExtractField(String),
    ValueToKey(Vec<String>),
    RegexRouter(regex::Regex, String),
    Filter,
    Cast {
        key: bool,
        spec: CastSpec,
    },
    TimestampConverter {
        key: bool,
        converter: TimestampConverter,
    },
}

struct Transform {
    name: String,
    step: Step,
    predicate: Option<(Predicate, bool)>,
}

/// The transform chain of one connector.
#[derive(Default)]
pub struct Chain(Vec<Transform>);

fn short(class: &str) -> &str {
    class.rsplit('.').next().unwrap_or(class)
}

fn list(v: Option<&str>) -> Vec<String> {
    v.unwrap_or("")
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

impl Chain {
    pub fn from_config(c: &ConnectorConfig) -> Result<Self> {
        let mut chain = Vec::new();
        for name in list(c.get("transforms")) {
            let key = |k: &str| format!("transforms.{name}.{k}");
            let get = |k: &str| c.get(&key(k));
            let class = get("type").ok_or_else(|| c.error(format!("missing {}", key("type"))))?;
            let regex = |k: &str| -> Result<regex::Regex> {
                let p = get(k).ok_or_else(|| c.error(format!("missing {}", key(k))))?;
                regex::Regex::new(&format!("^(?:{p})$"))
                    .map_err(|e| c.error(format!("{} is not a valid regex: {e}", key(k))))
            };
            let step = match short(class) {
                "InsertField$Value" | "InsertField$Key" => Step::InsertField {
                    key: short(class).ends_with("Key"),
                    fields: match (get("static.field"), get("static.value")) {
                        (Some(f), Some(v)) => vec![(f.to_string(), Value::from(v))],
                        _ => Vec::new(),
                    },
                    topic_field: get("topic.field").map(str::to_string),
                },
                "ReplaceField$Value" => Step::ReplaceField {
                    include: list(get("include")),
                    exclude: list(get("exclude")),
                    renames: list(get("renames"))
                        .into_iter()
                        .filter_map(|r| {
                            r.split_once(':')
                                .map(|(a, b)| (a.to_string(), b.to_string()))
                        })
                        .collect(),
                },
                "MaskField$Value" => Step::MaskField(list(get("fields"))),
                "ExtractField$Value" => Step::ExtractField(
                    get("field")
                        .ok_or_else(|| c.error(format!("missing {}", key("field"))))?
                        .to_string(),
                ),
                "ValueToKey" => Step::ValueToKey(list(get("fields"))),
                "RegexRouter" => Step::RegexRouter(
                    regex("regex")?,
                    get("replacement").unwrap_or("").to_string(),
                ),
                "Filter" => Step::Filter,
                "Cast$Value" | "Cast$Key" => Step::Cast {
                    key: short(class).ends_with("Key"),
                    spec: CastSpec::parse(
                        get("spec").ok_or_else(|| c.error(format!("missing {}", key("spec"))))?,
                    )
                    .map_err(|e| c.error(format!("{}: {e}", key("spec"))))?,
                },
                "TimestampConverter$Value" | "TimestampConverter$Key" => Step::TimestampConverter {
                    key: short(class).ends_with("Key"),
                    converter: TimestampConverter::new(
                        get("field"),
                        get("target.type"),
                        get("format"),
                        get("unix.precision"),
                    )
                    .map_err(|e| c.error(format!("transforms.{name}: {e}")))?,
                },
                other => {
                    return Err(c.error(format!(
                        "{}: transform {other:?} is not supported",
                        key("type")
                    )));
                }
            };
            let predicate = match get("predicate") {
                None => None,
                Some(p) => {
                    let pk = |k: &str| format!("predicates.{p}.{k}");
                    let ptype = c
                        .get(&pk("type"))
                        .ok_or_else(|| c.error(format!("missing {}", pk("type"))))?;
                    let pred = match short(ptype) {
                        "TopicNameMatches" => {
                            let pat = c
                                .get(&pk("pattern"))
                                .ok_or_else(|| c.error(format!("missing {}", pk("pattern"))))?;
                            Predicate::TopicMatches(
                                regex::Regex::new(&format!("^(?:{pat})$"))
                                    .map_err(|e| c.error(format!("{}: {e}", pk("pattern"))))?,
                            )
                        }
                        "HasHeaderKey" => Predicate::HasHeaderKey(
                            c.get(&pk("name"))
                                .ok_or_else(|| c.error(format!("missing {}", pk("name"))))?
                                .to_string(),
                        ),
                        "RecordIsTombstone" => Predicate::IsTombstone,
                        other => {
                            return Err(c.error(format!(
                                "{}: predicate {other:?} is not supported",
                                pk("type")
                            )));
                        }
                    };
                    Some((pred, get("negate") == Some("true")))
                }
            };
            chain.push(Transform {
                name,
                step,
                predicate,
            });
        }
        Ok(Self(chain))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Applies the chain; `None` when a filter dropped the record.
    pub fn apply(&self, mut m: Message) -> Result<Option<Message>> {
        for t in &self.0 {
            if let Some((p, negate)) = &t.predicate {
                let hit = match p {
                    Predicate::TopicMatches(r) => r.is_match(&m.topic),
                    Predicate::HasHeaderKey(h) => m.header_keys.contains(h),
                    Predicate::IsTombstone => m.value.is_none(),
                };
                if hit == *negate {
                    continue;
                }
            }
            let fail = |message: String| ConnectError::Record {
                what: format!("transform {}", t.name),
                message,
            };
            let object = |bytes: &Option<Vec<u8>>| -> Result<Map<String, Value>> {
                match bytes.as_deref().map(serde_json::from_slice::<Value>) {
                    Some(Ok(Value::Object(o))) => Ok(o),
                    Some(Ok(other)) => Err(fail(format!("expected a JSON object, found {other}"))),
                    Some(Err(e)) => Err(fail(format!("not JSON: {e}"))),
                    None => Ok(Map::new()),
                }
            };
            let to_bytes = |o: &Value| Some(serde_json::to_vec(o).expect("JSON serializes"));
            // Cast and TimestampConverter take any JSON, not only objects.
            let json = |bytes: &Option<Vec<u8>>| -> Result<Option<Value>> {
                bytes
                    .as_deref()
                    .map(serde_json::from_slice::<Value>)
                    .transpose()
                    .map_err(|e| fail(format!("not JSON: {e}")))
            };
            match &t.step {
                Step::Filter => return Ok(None),
                Step::Cast { key, spec } => {
                    let target = if *key { &mut m.key } else { &mut m.value };
                    if let Some(v) = json(target)? {
                        *target = to_bytes(&spec.apply(v).map_err(fail)?);
                    }
                }
                Step::TimestampConverter { key, converter } => {
                    let target = if *key { &mut m.key } else { &mut m.value };
                    if let Some(v) = json(target)? {
                        *target = to_bytes(&converter.apply(v).map_err(fail)?);
                    }
                }
                Step::RegexRouter(r, replacement) => {
                    if let Some(c) = r.captures(&m.topic) {
                        let mut out = String::new();
                        c.expand(replacement, &mut out);
                        m.topic = out;
                    }
                }
                Step::InsertField {
                    key,
                    fields,
                    topic_field,
                } => {
                    let target = if *key { &m.key } else { &m.value };
                    let mut o = object(target)?;
                    for (f, v) in fields {
                        o.insert(f.clone(), v.clone());
                    }
                    if let Some(f) = topic_field {
                        o.insert(f.clone(), Value::from(m.topic.clone()));
                    }
                    let b = to_bytes(&Value::Object(o));
                    if *key { m.key = b } else { m.value = b }
                }
                Step::ReplaceField {
                    include,
                    exclude,
                    renames,
                } => {
                    if m.value.is_none() {
                        continue;
                    }
                    let mut o = object(&m.value)?;
                    if !include.is_empty() {
                        o.retain(|k, _| include.contains(k));
                    }
                    o.retain(|k, _| !exclude.contains(k));
                    for (from, to) in renames {
                        if let Some(v) = o.remove(from) {
                            o.insert(to.clone(), v);
                        }
                    }
                    m.value = to_bytes(&Value::Object(o));
                }
                Step::MaskField(fields) => {
                    if m.value.is_none() {
                        continue;
                    }
                    let mut o = object(&m.value)?;
                    for f in fields {
                        if let Some(v) = o.get_mut(f) {
                            *v = match v {
                                Value::String(_) => Value::from(""),
                                Value::Number(_) => Value::from(0),
                                Value::Bool(_) => Value::from(false),
                                _ => Value::Null,
                            };
                        }
                    }
                    m.value = to_bytes(&Value::Object(o));
                }
                Step::ExtractField(f) => {
                    if m.value.is_none() {
                        continue;
                    }
                    let o = object(&m.value)?;
                    m.value = to_bytes(o.get(f).unwrap_or(&Value::Null));
                }
                Step::ValueToKey(fields) => {
                    let o = object(&m.value)?;
                    let k: Map<String, Value> = fields
                        .iter()
                        .map(|f| (f.clone(), o.get(f).cloned().unwrap_or(Value::Null)))
                        .collect();
                    m.key = to_bytes(&Value::Object(k));
                }
            }
        }
        Ok(Some(m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(props: serde_json::Value) -> Chain {
        Chain::from_config(&ConnectorConfig::from_json(Some("c"), &props).unwrap()).unwrap()
    }

    fn msg(topic: &str, value: &str) -> Message {
        Message {
            topic: topic.into(),
            key: None,
            value: Some(value.as_bytes().to_vec()),
            header_keys: vec![],
        }
    }

    #[test]
    fn kafka_connect_transform_configs_apply_in_order() {
        let c = chain(serde_json::json!({
            "transforms": "add,drop,mask,key,route",
            "transforms.add.type": "org.apache.kafka.connect.transforms.InsertField$Value",
            "transforms.add.static.field": "source", "transforms.add.static.value": "file",
            "transforms.drop.type": "org.apache.kafka.connect.transforms.ReplaceField$Value",
            "transforms.drop.exclude": "secret", "transforms.drop.renames": "n:name",
            "transforms.mask.type": "MaskField$Value", "transforms.mask.fields": "card",
            "transforms.key.type": "org.apache.kafka.connect.transforms.ValueToKey", "transforms.key.fields": "id",
            "transforms.route.type": "org.apache.kafka.connect.transforms.RegexRouter",
            "transforms.route.regex": "raw-(.*)", "transforms.route.replacement": "clean-$1",
        }));
        let out = c
            .apply(msg(
                "raw-orders",
                r#"{"id":7,"n":"x","secret":1,"card":"4111"}"#,
            ))
            .unwrap()
            .unwrap();
        assert_eq!(out.topic, "clean-orders");
        let v: Value = serde_json::from_slice(out.value.as_deref().unwrap()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"id":7,"name":"x","card":"","source":"file"})
        );
        assert_eq!(out.key.as_deref(), Some(&br#"{"id":7}"#[..]));
    }

    #[test]
    fn filter_with_predicates_and_negation() {
        let c = chain(serde_json::json!({
            "transforms": "keep", "transforms.keep.type": "org.apache.kafka.connect.transforms.Filter",
            "transforms.keep.predicate": "isOrders", "transforms.keep.negate": "true",
            "predicates": "isOrders",
            "predicates.isOrders.type": "org.apache.kafka.connect.transforms.predicates.TopicNameMatches",
            "predicates.isOrders.pattern": "orders.*",
        }));
        assert!(c.apply(msg("orders-eu", "{}")).unwrap().is_some());
        assert!(c.apply(msg("audit", "{}")).unwrap().is_none());
        let t = chain(serde_json::json!({
            "transforms": "f", "transforms.f.type": "Filter", "transforms.f.predicate": "t",
            "predicates": "t", "predicates.t.type": "RecordIsTombstone",
        }));
        let mut tomb = msg("x", "");
        tomb.value = None;
        assert!(t.apply(tomb).unwrap().is_none());
    }
}
