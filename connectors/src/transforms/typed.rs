//! The typed single-message transforms: `Cast` and `TimestampConverter`, with Kafka's
//! configuration and semantics on schemaless JSON values.
//!
//! `Cast$Value|$Key` (`spec`): `field:type,...` casts fields of an object, a bare `type`
//! casts the whole value; types `int8`, `int16`, `int32`, `int64`, `float32`, `float64`,
//! `boolean`, `string`. Integer casts truncate fractions and wrap to the width as Java's do; a
//! string must parse as the target type, or the record fails (dead-letter topic under
//! `errors.tolerance = all`).
//!
//! `TimestampConverter$Value|$Key` (`field`: empty for the whole value, `target.type`,
//! `format`, `unix.precision`): the input is an instant as a string (parsed with `format`, or
//! RFC 3339 without one) or as a number (Unix time in `unix.precision`, default
//! `milliseconds`). `target.type`: `string` (with `format`), `unix` (in `unix.precision`), and
//! Kafka's logical encodings `Timestamp` (epoch milliseconds), `Date` (days since the epoch)
//! and `Time` (milliseconds since midnight). Times are UTC, as Kafka's transform uses.
//! `format` is a Java `SimpleDateFormat` pattern; the letters `y M d H h m s S a E D Z X z u`
//! and quoted literals are translated, another letter is a configuration error.

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CastType {
    Int8,
    Int16,
    Int32,
    Int64,
    Float32,
    Float64,
    Boolean,
    String,
}

impl CastType {
    fn parse(s: &str) -> Result<Self, String> {
        Ok(match s.trim() {
            "int8" => Self::Int8,
            "int16" => Self::Int16,
            "int32" => Self::Int32,
            "int64" => Self::Int64,
            "float32" => Self::Float32,
            "float64" => Self::Float64,
            "boolean" => Self::Boolean,
            "string" => Self::String,
            t => {
                return Err(format!(
                    "cast type {t:?}: use int8, int16, int32, int64, float32, float64, boolean or string"
                ));
            }
        })
    }
}

/// `Cast`'s `spec`: the whole value (`None` field) or fields.
#[derive(Debug, Clone, PartialEq)]
pub enum CastSpec {
    Whole(CastType),
    Fields(Vec<(String, CastType)>),
}

impl CastSpec {
    pub fn parse(spec: &str) -> Result<Self, String> {
        let parts: Vec<&str> = spec
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        match parts.as_slice() {
            [] => Err("spec is empty: use field:type,... or a type for the whole value".into()),
            [one] if !one.contains(':') => Ok(Self::Whole(CastType::parse(one)?)),
            _ => parts
                .iter()
                .map(|p| {
                    let (f, t) = p
                        .split_once(':')
                        .ok_or_else(|| format!("{p:?}: expected field:type"))?;
                    Ok((f.trim().to_string(), CastType::parse(t)?))
                })
                .collect::<Result<_, String>>()
                .map(Self::Fields),
        }
    }

    pub fn apply(&self, v: Value) -> Result<Value, String> {
        match self {
            Self::Whole(t) => cast(&v, *t),
            Self::Fields(fields) => match v {
                Value::Object(mut o) => {
                    for (f, t) in fields {
                        if let Some(x) = o.get_mut(f) {
                            *x = cast(x, *t).map_err(|e| format!("field {f:?}: {e}"))?;
                        }
                    }
                    Ok(Value::Object(o))
                }
                Value::Null => Ok(Value::Null),
                other => Err(format!(
                    "expected a JSON object to cast fields of, found {other}"
                )),
            },
        }
    }
}

fn cast(v: &Value, t: CastType) -> Result<Value, String> {
    let fail = || format!("cannot cast {v} to {t:?}");
    let as_f64 = || -> Result<f64, String> {
        match v {
            Value::Number(n) => n.as_f64().ok_or_else(fail),
            Value::Bool(b) => Ok(f64::from(u8::from(*b))),
            Value::String(s) => s.trim().parse::<f64>().map_err(|_| fail()),
            _ => Err(fail()),
        }
    };
    let as_i64 = || -> Result<i64, String> {
        match v {
            Value::Number(n) => n.as_i64().map_or_else(|| as_f64().map(|f| f as i64), Ok),
            Value::String(s) => s
                .trim()
                .parse::<i64>()
                .or_else(|_| as_f64().map(|f| f as i64)),
            _ => as_f64().map(|f| f as i64),
        }
    };
    if v.is_null() {
        return Ok(Value::Null);
    }
    Ok(match t {
        // Java's narrowing conversions wrap.
        CastType::Int8 => Value::from(as_i64()? as i8),
        CastType::Int16 => Value::from(as_i64()? as i16),
        CastType::Int32 => Value::from(as_i64()? as i32),
        CastType::Int64 => Value::from(as_i64()?),
        // Through the f32's shortest text, so 1.1 stays 1.1 rather than 1.100000023841858.
        CastType::Float32 => Value::from(
            (as_f64()? as f32)
                .to_string()
                .parse::<f64>()
                .map_err(|_| fail())?,
        ),
        CastType::Float64 => Value::from(as_f64()?),
        CastType::Boolean => Value::from(match v {
            Value::Bool(b) => *b,
            Value::String(s) if s.eq_ignore_ascii_case("true") => true,
            Value::String(s) if s.eq_ignore_ascii_case("false") => false,
            Value::Number(_) => as_f64()? != 0.0,
            _ => return Err(fail()),
        }),
        CastType::String => match v {
            Value::String(s) => Value::from(s.clone()),
            Value::Number(_) | Value::Bool(_) => Value::from(v.to_string()),
            _ => return Err(fail()),
        },
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    Seconds,
    Milliseconds,
    Microseconds,
    Nanoseconds,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    String,
    Unix,
    Date,
    Time,
    Timestamp,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TimestampConverter {
    pub field: Option<String>,
    pub target: Target,
    /// chrono's `strftime` translation of the Java pattern.
    pub format: Option<String>,
    pub precision: Precision,
}

impl TimestampConverter {
    pub fn new(
        field: Option<&str>,
        target: Option<&str>,
        format: Option<&str>,
        precision: Option<&str>,
    ) -> Result<Self, String> {
        let target = match target {
            Some("string") => Target::String,
            Some("unix") => Target::Unix,
            Some("Date") => Target::Date,
            Some("Time") => Target::Time,
            Some("Timestamp") => Target::Timestamp,
            Some(t) => {
                return Err(format!(
                    "target.type = {t:?}: use string, unix, Date, Time or Timestamp"
                ));
            }
            None => return Err("missing target.type".into()),
        };
        let format = format
            .filter(|f| !f.is_empty())
            .map(java_to_strftime)
            .transpose()?;
        if target == Target::String && format.is_none() {
            return Err("target.type = string needs a format (a SimpleDateFormat pattern)".into());
        }
        let precision = match precision.unwrap_or("milliseconds") {
            "seconds" => Precision::Seconds,
            "milliseconds" => Precision::Milliseconds,
            "microseconds" => Precision::Microseconds,
            "nanoseconds" => Precision::Nanoseconds,
            p => {
                return Err(format!(
                    "unix.precision = {p:?}: use seconds, milliseconds, microseconds or nanoseconds"
                ));
            }
        };
        Ok(Self {
            field: field.filter(|f| !f.is_empty()).map(str::to_string),
            target,
            format,
            precision,
        })
    }

    pub fn apply(&self, v: Value) -> Result<Value, String> {
        match &self.field {
            None => self.convert(&v),
            Some(f) => match v {
                Value::Object(mut o) => {
                    if let Some(x) = o.get_mut(f) {
                        *x = self.convert(x).map_err(|e| format!("field {f:?}: {e}"))?;
                    }
                    Ok(Value::Object(o))
                }
                Value::Null => Ok(Value::Null),
                other => Err(format!("expected a JSON object with {f:?}, found {other}")),
            },
        }
    }

    fn convert(&self, v: &Value) -> Result<Value, String> {
        let t = match v {
            Value::Null => return Ok(Value::Null),
            Value::Number(n) => {
                let n = n
                    .as_i64()
                    .or_else(|| n.as_f64().map(|f| f as i64))
                    .unwrap_or(0);
                let nanos = match self.precision {
                    Precision::Seconds => i128::from(n) * 1_000_000_000,
                    Precision::Milliseconds => i128::from(n) * 1_000_000,
                    Precision::Microseconds => i128::from(n) * 1_000,
                    Precision::Nanoseconds => i128::from(n),
                };
                let secs = nanos.div_euclid(1_000_000_000) as i64;
                let sub = nanos.rem_euclid(1_000_000_000) as u32;
                Utc.timestamp_opt(secs, sub)
                    .single()
                    .ok_or_else(|| format!("{n} is out of range for a timestamp"))?
            }
            Value::String(s) => parse(s, self.format.as_deref())?,
            other => {
                return Err(format!(
                    "expected a timestamp string or number, found {other}"
                ));
            }
        };
        let millis = t.timestamp_millis();
        Ok(match self.target {
            Target::String => Value::from(
                t.format(self.format.as_deref().expect("checked in new"))
                    .to_string(),
            ),
            Target::Unix => Value::from(match self.precision {
                Precision::Seconds => t.timestamp(),
                Precision::Milliseconds => millis,
                Precision::Microseconds => t.timestamp_micros(),
                Precision::Nanoseconds => t
                    .timestamp_nanos_opt()
                    .ok_or("out of range for nanoseconds")?,
            }),
            Target::Timestamp => Value::from(millis),
            Target::Date => Value::from(millis.div_euclid(86_400_000)),
            Target::Time => Value::from(millis.rem_euclid(86_400_000)),
        })
    }
}

/// A string instant: with a pattern, whatever it holds (a date alone is midnight, a time alone
/// is on 1970-01-01, no offset is UTC); without one, RFC 3339.
fn parse(s: &str, format: Option<&str>) -> Result<DateTime<Utc>, String> {
    let Some(f) = format else {
        return DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| format!("{s:?} is not an RFC 3339 timestamp ({e}); set format"));
    };
    if let Ok(t) = DateTime::parse_from_str(s, f) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(t) = NaiveDateTime::parse_from_str(s, f) {
        return Ok(t.and_utc());
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, f) {
        return Ok(d.and_time(NaiveTime::MIN).and_utc());
    }
    NaiveTime::parse_from_str(s, f)
        .map(|t| NaiveDate::default().and_time(t).and_utc())
        .map_err(|e| format!("{s:?} does not match the format ({e})"))
}

/// Translates a Java `SimpleDateFormat` pattern to chrono's `strftime` syntax.
pub fn java_to_strftime(p: &str) -> Result<String, String> {
    let chars: Vec<char> = p.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' {
            // 'literal', '' is a quote.
            if chars.get(i + 1) == Some(&'\'') {
                out.push('\'');
                i += 2;
                continue;
            }
            i += 1;
            while i < chars.len() {
                if chars[i] == '\'' {
                    if chars.get(i + 1) == Some(&'\'') {
                        out.push('\'');
                        i += 2;
                        continue;
                    }
                    break;
                }
                if chars[i] == '%' {
                    out.push('%');
                }
                out.push(chars[i]);
                i += 1;
            }
            i += 1;
            continue;
        }
        if !c.is_ascii_alphabetic() {
            if c == '%' {
                out.push('%');
            }
            out.push(c);
            i += 1;
            continue;
        }
        let mut n = 1;
        while chars.get(i + n) == Some(&c) {
            n += 1;
        }
        i += n;
        out += match (c, n) {
            ('y', 2) => "%y",
            ('y', _) => "%Y",
            ('M', 1) => "%-m",
            ('M', 2) => "%m",
            ('M', 3) => "%b",
            ('M', _) => "%B",
            ('d', 1) => "%-d",
            ('d', _) => "%d",
            ('H', 1) => "%-H",
            ('H', _) => "%H",
            ('h', 1) => "%-I",
            ('h', _) => "%I",
            ('m', 1) => "%-M",
            ('m', _) => "%M",
            ('s', 1) => "%-S",
            ('s', _) => "%S",
            ('S', 1..=3) => "%3f",
            ('S', 4..=6) => "%6f",
            ('S', _) => "%9f",
            ('a', _) => "%p",
            ('E', 1..=3) => "%a",
            ('E', _) => "%A",
            ('D', _) => "%j",
            ('Z', _) => "%z",
            ('X', 1 | 2) => "%z",
            ('X', _) => "%:z",
            ('z', _) => "%Z",
            ('u', _) => "%u",
            _ => {
                return Err(format!(
                    "format {p:?}: the SimpleDateFormat letter {c:?} is not supported (use y M d H h m s S a E D Z X z u, quote literals)"
                ));
            }
        };
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cast_fields_and_whole_values_as_kafka_does() {
        let s = CastSpec::parse("a:int32, b:float64,c:string,d:boolean,e:int8,f:float32").unwrap();
        let out = s
            .apply(
                json!({"a": "42", "b": "1.5", "c": 7, "d": "TRUE", "e": 300, "f": 1.1, "g": "x"}),
            )
            .unwrap();
        assert_eq!(
            out,
            json!({"a": 42, "b": 1.5, "c": "7", "d": true, "e": 44, "f": 1.1, "g": "x"})
        );
        assert_eq!(
            CastSpec::parse("int64")
                .unwrap()
                .apply(json!(" 12 "))
                .unwrap(),
            json!(12)
        );
        assert_eq!(
            CastSpec::parse("int64")
                .unwrap()
                .apply(json!(9.99))
                .unwrap(),
            json!(9)
        );
        let err = s.apply(json!({"a": "forty"})).unwrap_err();
        assert!(
            err.contains("field \"a\"") && err.contains("cannot cast"),
            "{err}"
        );
        assert!(CastSpec::parse("a:decimal").unwrap_err().contains("int8"));
    }

    #[test]
    fn java_patterns_translate() {
        assert_eq!(
            java_to_strftime("yyyy-MM-dd'T'HH:mm:ss.SSSXXX").unwrap(),
            "%Y-%m-%dT%H:%M:%S.%3f%:z"
        );
        assert_eq!(
            java_to_strftime("dd/MMM/yy h:mm a").unwrap(),
            "%d/%b/%y %-I:%M %p"
        );
        assert_eq!(java_to_strftime("'it''s' yyyy").unwrap(), "it's %Y");
        assert!(java_to_strftime("yyyy-ww").unwrap_err().contains("'w'"));
    }

    #[test]
    fn timestamps_between_strings_unix_and_kafka_logical_types() {
        let tc = |target, format, precision| {
            TimestampConverter::new(Some("ts"), Some(target), format, precision).unwrap()
        };
        let to_unix = tc("unix", Some("yyyy-MM-dd HH:mm:ss"), None);
        assert_eq!(
            to_unix
                .apply(json!({"ts": "2024-03-01 12:30:00", "x": 1}))
                .unwrap(),
            json!({"ts": 1_709_296_200_000i64, "x": 1})
        );
        let to_string = tc("string", Some("yyyy-MM-dd'T'HH:mm:ss.SSS"), Some("seconds"));
        assert_eq!(
            to_string.apply(json!({"ts": 1_709_296_200})).unwrap(),
            json!({"ts": "2024-03-01T12:30:00.000"})
        );
        let ms = json!({"ts": 1_709_296_200_123i64});
        assert_eq!(
            tc("Date", None, None).apply(ms.clone()).unwrap()["ts"],
            json!(19783)
        );
        assert_eq!(
            tc("Time", None, None).apply(ms.clone()).unwrap()["ts"],
            json!(45_000_123)
        );
        assert_eq!(
            tc("unix", None, Some("microseconds"))
                .apply(json!({"ts": "2024-03-01T12:30:00.5Z"}))
                .unwrap()["ts"],
            json!(1_709_296_200_500_000i64)
        );
        assert!(
            tc("Timestamp", Some("yyyy-MM-dd"), None)
                .apply(json!({"ts": "March"}))
                .unwrap_err()
                .contains("does not match")
        );
        assert!(TimestampConverter::new(None, Some("string"), None, None).is_err());
    }
}
