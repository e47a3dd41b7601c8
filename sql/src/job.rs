//! The job file: a TOML document declaring a SQL job's inputs, outputs and statements.
//!
//! ```toml
//! [job]
//! name = "region-speed"                  # application id: consumer group, internal topics
//! state = "disk"                         # optional: state on disk, sessions aside (default memory)
//! state_cache = "64 MiB"                 # optional, with disk: cache per store and task
//! sql = """
//! INSERT INTO speeds
//! SELECT region, window_start, window_end, AVG(speed_kmh) AS avg_speed
//! FROM rides GROUP BY region, tumble(ts, INTERVAL '10' SECOND)
//! """
//!
//! [[input]]
//! name = "rides"                         # the table name in SQL
//! topic = "rides"
//! format = "json"                        # json | csv | raw
//! schema = "ride_id BIGINT, region VARCHAR, speed_kmh DOUBLE, ts TIMESTAMP"
//! event_time = "ts"                      # default: the record's timestamp
//! watermark = "5 seconds"                # allowed out-of-orderness
//!
//! [[output]]
//! name = "speeds"
//! topic = "region-speeds"
//! format = "json"
//! ```
//!
//! Every error names the file, line and column — of the TOML, or of the SQL inside it.

use super::row::Format;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::sql::sqlparser::ast::{DataType as SqlType, Statement};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use runnel_engine::error::{EngineError, Result};
use runnel_engine::runtime::ProcessingGuarantee;
use runnel_engine::state::Storage;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use toml::Spanned;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FileToml {
    job: JobToml,
    #[serde(default)]
    input: Vec<InputToml>,
    #[serde(default)]
    output: Vec<OutputToml>,
    /// Connectors run by `runnel run` beside the job (see `runnel connect`).
    #[serde(default)]
    connector: Vec<toml::Table>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct JobToml {
    name: String,
    sql: Spanned<String>,
    /// `"at-least-once"` (the default) or `"exactly-once"`.
    guarantee: Option<Spanned<String>>,
    /// Kafka's producer `compression.type` for everything the job writes.
    #[serde(default)]
    compression: runnel_log::Compression,
    /// Kafka Streams' `num.standby.replicas`: instances keeping a warm copy of each task's
    /// state, when several run the job.
    #[serde(default)]
    standby_replicas: usize,
    /// Kafka Streams' `num.stream.threads` (default: one per core).
    threads: Option<usize>,
    /// Where the job's state lives: `"memory"` (the default) or `"disk"` (tables, aggregates,
    /// windows and join buffers; session windows stay in memory).
    state: Option<Spanned<String>>,
    /// With `state = "disk"`: memory per store and task for its cache (default 64 MiB).
    state_cache: Option<Spanned<String>>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct InputToml {
    name: Spanned<String>,
    topic: Option<String>,
    #[serde(default = "json")]
    format: Format,
    schema: Option<Spanned<String>>,
    event_time: Option<Spanned<String>>,
    watermark: Option<Spanned<String>>,
    /// Columns forming the key of a table input (a compacted topic read as a table).
    key: Option<Spanned<Vec<String>>>,
    /// A built-in generator fills the topic before the job starts.
    generator: Option<Spanned<String>>,
    events: Option<u64>,
    partitions: Option<u32>,
}

fn json() -> Format {
    Format::Json
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct OutputToml {
    name: Spanned<String>,
    topic: Option<String>,
    #[serde(default = "json")]
    format: Format,
    key: Option<Vec<String>>,
}

/// A built-in data generator for an input.
#[derive(Debug, Clone, PartialEq)]
pub enum Generator {
    /// Nexmark's events of one kind (`person`, `auction` or `bid`) out of `events` in all.
    Nexmark { stream: String, events: u64 },
}

/// One declared input: a topic read as a stream (or, with `key`, as a table).
#[derive(Debug, Clone)]
pub struct InputDecl {
    pub name: String,
    pub topic: String,
    pub format: Format,
    pub schema: SchemaRef,
    /// Index of the event-time column.
    pub event_time: Option<usize>,
    pub watermark_ms: i64,
    pub key: Option<Vec<usize>>,
    pub generator: Option<Generator>,
    pub partitions: u32,
}

/// One declared output topic.
#[derive(Debug, Clone)]
pub struct OutputDecl {
    pub name: String,
    pub topic: String,
    pub format: Format,
    pub key: Option<Vec<String>>,
}

/// A parsed, checked job file.
#[derive(Debug, Clone)]
pub struct JobFile {
    pub path: PathBuf,
    pub source: String,
    pub name: String,
    /// The codec of the batches the job writes (`[job] compression`, default none).
    pub compression: runnel_log::Compression,
    /// Records that do not match their input's schema go here, with the reason in headers.
    pub dead_letter_topic: String,
    pub inputs: Vec<InputDecl>,
    pub outputs: Vec<OutputDecl>,
    pub sql: String,
    /// The processing guarantee (`[job] guarantee`; `runnel run --guarantee` overrides it).
    pub guarantee: ProcessingGuarantee,
    /// Other instances keeping a warm copy of each task's state (`[job] standby_replicas`).
    pub standby_replicas: usize,
    /// Worker threads (`[job] threads`; `runnel run --threads` overrides it).
    pub threads: Option<usize>,
    /// Where the stores keep their entries (`[job] state`, `state_cache`).
    pub state: Storage,
    /// Where disk stores and local checkpoints go (`runnel run --state-dir`); `None`: a
    /// directory private to the run, removed at its end.
    pub state_dir: Option<PathBuf>,
    /// Byte offset of the SQL text in the file (for error positions).
    sql_offset: usize,
    pub connectors: Vec<toml::Table>,
}

/// A place in a file, for error messages.
pub struct Place<'a> {
    pub path: &'a Path,
    pub source: &'a str,
}

impl Place<'_> {
    /// `path:line:col` of a byte offset.
    pub fn at(&self, byte: usize) -> String {
        let (line, col) = line_col(self.source, byte);
        format!("{}:{line}:{col}", self.path.display())
    }

    pub fn error(&self, byte: usize, message: impl std::fmt::Display) -> EngineError {
        EngineError::Job(format!("{}: {message}", self.at(byte)))
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(source: &str, byte: usize) -> (usize, usize) {
    let byte = byte.min(source.len());
    let before = &source[..source.floor_char_boundary(byte)];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line, col)
}

/// Byte offset of the content of a TOML string whose literal spans `span`.
fn string_content_start(source: &str, span: std::ops::Range<usize>) -> usize {
    let lit = &source[span.clone()];
    let mut start = span.start;
    for q in ["\"\"\"", "'''", "\"", "'"] {
        if lit.starts_with(q) {
            start += q.len();
            // A newline right after the opening delimiter of a multi-line string is trimmed.
            if q.len() == 3 {
                let rest = &source[start..];
                if rest.starts_with("\r\n") {
                    start += 2;
                } else if rest.starts_with('\n') {
                    start += 1;
                }
            }
            break;
        }
    }
    start
}

impl JobFile {
    /// Reads and checks the job file at `path` (see [`JobFile::parse`]).
    ///
    /// # Errors
    ///
    /// `EngineError::Io` if the file cannot be read; otherwise as [`JobFile::parse`].
    pub fn load(path: &Path) -> Result<Self> {
        let source = std::fs::read_to_string(path).map_err(|e| EngineError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        Self::parse(path, &source)
    }

    /// Checks a job file's text (`path` names it in errors); the SQL is planned later
    /// ([`crate::plan::plan`]).
    ///
    /// # Errors
    ///
    /// `EngineError::Job` placed at `path:line:col`: TOML that does not parse or has unknown or
    /// missing keys; an input without a schema, with an unsupported column type, an unknown
    /// generator or a nexmark input not named after its events, or a key or event-time column that
    /// is not one of its columns (or of the wrong type); an invalid duration; an unknown
    /// `guarantee`.
    pub fn parse(path: &Path, source: &str) -> Result<Self> {
        let place = Place { path, source };
        let file: FileToml = toml::from_str(source).map_err(|e| {
            let at = e.span().map_or(0, |s| s.start);
            place.error(at, e.message().trim())
        })?;
        let mut inputs = Vec::new();
        for i in file.input {
            inputs.push(input(&place, i)?);
        }
        let outputs = file
            .output
            .into_iter()
            .map(|o| OutputDecl {
                topic: o.topic.unwrap_or_else(|| o.name.get_ref().clone()),
                name: o.name.into_inner(),
                format: o.format,
                key: o.key,
            })
            .collect();
        let sql_offset = string_content_start(source, file.job.sql.span());
        let guarantee = match &file.job.guarantee {
            Some(g) => g
                .get_ref()
                .parse()
                .map_err(|e: EngineError| place.error(g.span().start, e))?,
            None => ProcessingGuarantee::AtLeastOnce,
        };
        let state = storage(&place, &file.job)?;
        Ok(JobFile {
            path: path.to_path_buf(),
            source: source.to_string(),
            dead_letter_topic: format!("{}-dlq", file.job.name),
            compression: file.job.compression,
            name: file.job.name,
            inputs,
            outputs,
            sql: file.job.sql.into_inner(),
            guarantee,
            standby_replicas: file.job.standby_replicas,
            threads: file.job.threads,
            state,
            state_dir: None,
            sql_offset,
            connectors: file.connector,
        })
    }

    pub fn place(&self) -> Place<'_> {
        Place {
            path: &self.path,
            source: &self.source,
        }
    }

    /// An error at a (1-based) line and column of the SQL text.
    pub fn sql_error(
        &self,
        line: usize,
        col: usize,
        message: impl std::fmt::Display,
    ) -> EngineError {
        let (l0, c0) = line_col(&self.source, self.sql_offset);
        let (line, col) = if line <= 1 {
            (l0, c0 + col.saturating_sub(1))
        } else {
            (l0 + line - 1, col)
        };
        EngineError::Job(format!("{}:{line}:{col}: {message}", self.path.display()))
    }

    /// An error at a byte offset of the SQL text.
    pub fn sql_error_at(&self, byte: usize, message: impl std::fmt::Display) -> EngineError {
        self.place().error(self.sql_offset + byte, message)
    }

    pub fn input(&self, name: &str) -> Option<(usize, &InputDecl)> {
        self.inputs
            .iter()
            .enumerate()
            .find(|(_, i)| i.name.eq_ignore_ascii_case(name))
    }

    pub fn output(&self, name: &str) -> Option<(usize, &OutputDecl)> {
        self.outputs
            .iter()
            .enumerate()
            .find(|(_, o)| o.name.eq_ignore_ascii_case(name))
    }
}

fn input(place: &Place<'_>, i: InputToml) -> Result<InputDecl> {
    let generator = match &i.generator {
        None => None,
        Some(g) if g.get_ref() == "nexmark" => {
            let stream = i.name.get_ref().to_lowercase();
            if !["person", "auction", "bid"].contains(&stream.as_str()) {
                return Err(place.error(
                    i.name.span().start,
                    format!(
                        "a nexmark input is named after the events it holds: `person`, `auction` or `bid`, not {:?}",
                        i.name.get_ref()
                    ),
                ));
            }
            Some(Generator::Nexmark {
                stream,
                events: i.events.unwrap_or(1_000_000),
            })
        }
        Some(g) => {
            return Err(place.error(
                g.span().start,
                format!(
                    "unknown generator {:?}: the built-in one is \"nexmark\"",
                    g.get_ref()
                ),
            ));
        }
    };
    let schema = match (&i.schema, &generator) {
        (Some(s), _) => parse_schema(place, s)?,
        (None, Some(Generator::Nexmark { stream, .. })) => super::nexmark::schema(stream),
        (None, None) if i.format == Format::Raw => {
            Arc::new(Schema::new(vec![Field::new("line", DataType::Utf8, true)]))
        }
        (None, None) => {
            return Err(place.error(
                i.name.span().start,
                format!(
                    "input {:?} has no schema: add schema = \"col TYPE, ...\" (types: BIGINT, DOUBLE, VARCHAR, BOOLEAN, TIMESTAMP)",
                    i.name.get_ref()
                ),
            ));
        }
    };
    let column = |name: &Spanned<String>, what: &str| -> Result<usize> {
        schema.index_of(name.get_ref()).map_err(|_| {
            place.error(
                name.span().start,
                format!(
                    "{what} {:?} is not a column of input {:?}{}",
                    name.get_ref(),
                    i.name.get_ref(),
                    closest_hint(
                        name.get_ref(),
                        schema.fields().iter().map(|f| f.name().as_str())
                    )
                ),
            )
        })
    };
    let event_time = match &i.event_time {
        Some(c) => {
            let idx = column(c, "event_time")?;
            if !matches!(
                schema.field(idx).data_type(),
                DataType::Timestamp(..) | DataType::Int64
            ) {
                return Err(place.error(
                    c.span().start,
                    format!(
                        "event_time {:?} must be a TIMESTAMP or BIGINT (epoch milliseconds) column",
                        c.get_ref()
                    ),
                ));
            }
            Some(idx)
        }
        None => generator
            .as_ref()
            .map(|_| schema.index_of("date_time").unwrap()),
    };
    let watermark_ms = match &i.watermark {
        Some(w) => parse_duration(w.get_ref()).map_err(|e| place.error(w.span().start, e))?,
        None => 0,
    };
    let key = match &i.key {
        Some(k) => Some(
            k.get_ref()
                .iter()
                .map(|c| column(&Spanned::new(k.span(), c.clone()), "key column"))
                .collect::<Result<Vec<_>>>()?,
        ),
        None => None,
    };
    Ok(InputDecl {
        topic: i.topic.clone().unwrap_or_else(|| i.name.get_ref().clone()),
        name: i.name.into_inner(),
        format: i.format,
        schema,
        event_time,
        watermark_ms,
        key,
        generator,
        partitions: i.partitions.unwrap_or(1),
    })
}

/// `col TYPE, ...` in SQL column syntax.
fn parse_schema(place: &Place<'_>, text: &Spanned<String>) -> Result<SchemaRef> {
    const PREFIX: &str = "CREATE TABLE t (";
    let sql = format!("{PREFIX}{})", text.get_ref());
    let base = string_content_start(place.source, text.span());
    let error_at = |msg: String| {
        let (line, col) = sql_position(&msg).unwrap_or((1, PREFIX.len() + 1));
        let offset = if line == 1 {
            col.saturating_sub(PREFIX.len() + 1)
        } else {
            0
        };
        place.error(
            base + offset,
            format!("invalid schema: {}", strip_position(&msg)),
        )
    };
    let stmts = Parser::parse_sql(&GenericDialect {}, &sql).map_err(|e| error_at(e.to_string()))?;
    let Some(Statement::CreateTable(t)) = stmts.first() else {
        return Err(error_at("expected `name TYPE, ...`".into()));
    };
    let fields = t
        .columns
        .iter()
        .map(|c| {
            let ty = arrow_type(&c.data_type).ok_or_else(|| {
                let at = text.get_ref().find(&c.name.value).unwrap_or(0);
                place.error(base + at, format!(
                    "invalid schema: column {:?} has type {}; supported: BIGINT (INT, INTEGER), DOUBLE (FLOAT, REAL, DECIMAL), VARCHAR (TEXT, STRING), BOOLEAN, TIMESTAMP",
                    c.name.value, c.data_type
                ))
            })?;
            let not_null = c.options.iter().any(|o| {
                matches!(o.option, datafusion::sql::sqlparser::ast::ColumnOption::NotNull)
            });
            Ok(Field::new(c.name.value.clone(), ty, !not_null))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Arc::new(Schema::new(fields)))
}

fn arrow_type(t: &SqlType) -> Option<DataType> {
    Some(match t {
        SqlType::BigInt(_)
        | SqlType::Int(_)
        | SqlType::Integer(_)
        | SqlType::SmallInt(_)
        | SqlType::TinyInt(_)
        | SqlType::Int64
        | SqlType::Int8(_) => DataType::Int64,
        SqlType::Double(_)
        | SqlType::DoublePrecision
        | SqlType::Float(_)
        | SqlType::Real
        | SqlType::Float64
        | SqlType::Decimal(_)
        | SqlType::Numeric(_) => DataType::Float64,
        SqlType::Varchar(_) | SqlType::Text | SqlType::String(_) | SqlType::Char(_) => {
            DataType::Utf8
        }
        SqlType::Boolean | SqlType::Bool => DataType::Boolean,
        SqlType::Timestamp(..) | SqlType::Datetime(_) => {
            DataType::Timestamp(TimeUnit::Millisecond, None)
        }
        _ => return None,
    })
}

/// `Line: 3, Column: 14` in a sqlparser message.
pub fn sql_position(msg: &str) -> Option<(usize, usize)> {
    let l = msg.find("Line: ")?;
    let rest = &msg[l + 6..];
    let line: usize = rest[..rest.find(',')?].trim().parse().ok()?;
    let c = rest.find("Column: ")?;
    let col: String = rest[c + 8..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    Some((line, col.parse().ok()?))
}

/// A sqlparser message without its ` at Line: .., Column: ..` suffix and `sql parser error: ` prefix.
pub fn strip_position(msg: &str) -> String {
    let msg = msg.strip_prefix("sql parser error: ").unwrap_or(msg);
    match msg.find(" at Line: ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

/// `5s`, `5 seconds`, `250ms`, `2 minutes`, `1h`.
///
/// # Errors
///
/// A message with an example if `text` does not start with a number, or its unit is not one
/// of ms, s, min, h, d (or their long names).
pub fn parse_duration(text: &str) -> std::result::Result<i64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| {
        format!(
            "invalid duration {text:?}: write a number and a unit, like \"5 seconds\" or \"250ms\""
        )
    })?;
    let unit = unit.trim().to_lowercase();
    let ms = match unit.trim_end_matches('s') {
        "m" if unit == "ms" => 1.0,
        "" if unit == "s" => 1000.0,
        "millisecond" | "milli" => 1.0,
        "second" | "sec" => 1000.0,
        "m" | "min" | "minute" => 60_000.0,
        "h" | "hour" => 3_600_000.0,
        "d" | "day" => 86_400_000.0,
        _ => {
            return Err(format!(
                "invalid duration unit in {text:?}: use ms, s, min, h or d (or milliseconds, seconds, minutes, hours, days)"
            ));
        }
    };
    Ok((n * ms).round() as i64)
}

/// ` (did you mean "x"?)` when a known name is close to `name`.
pub fn closest_hint<'a>(name: &str, known: impl Iterator<Item = &'a str>) -> String {
    let lower = name.to_lowercase();
    let best = known
        .map(|k| (levenshtein(&lower, &k.to_lowercase()), k))
        .min_by_key(|(d, _)| *d);
    match best {
        Some((d, k)) if d <= 2.max(name.len() / 3) => format!(" (did you mean {k:?}?)"),
        _ => String::new(),
    }
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push(
                (prev[j] + usize::from(ca != *cb))
                    .min(prev[j + 1] + 1)
                    .min(cur[j] + 1),
            );
        }
        prev = cur;
    }
    prev[b.len()]
}

/// `[job] state` and `state_cache` as the stores' [`Storage`].
fn storage(place: &Place<'_>, job: &JobToml) -> Result<Storage> {
    let cache_bytes = match &job.state_cache {
        Some(c) => {
            let n = runnel_log::config::parse_size(c.get_ref())
                .map_err(|e| place.error(c.span().start, e))?;
            usize::try_from(n)
                .map_err(|_| place.error(c.span().start, "state_cache is too large"))?
        }
        None => Storage::DEFAULT_CACHE_BYTES,
    };
    match job
        .state
        .as_ref()
        .map(|s| (s.get_ref().as_str(), s.span().start))
    {
        None | Some(("memory", _)) => match &job.state_cache {
            Some(c) => Err(place.error(
                c.span().start,
                "state_cache sizes the cache of disk state: set state = \"disk\" too, or remove it",
            )),
            None => Ok(Storage::Memory),
        },
        Some(("disk", _)) => Ok(Storage::Disk { cache_bytes }),
        Some((other, at)) => Err(place.error(
            at,
            format!("state {other:?} is not one of \"memory\", \"disk\""),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s"), Ok(5000));
        assert_eq!(parse_duration("5 seconds"), Ok(5000));
        assert_eq!(parse_duration("250ms"), Ok(250));
        assert_eq!(parse_duration("2 minutes"), Ok(120_000));
        assert!(parse_duration("5 parsecs").is_err());
    }

    #[test]
    fn positions_of_sql_inside_toml() {
        let src = "[job]\nname = \"j\"\nsql = \"\"\"\nSELECT 1\nFROM x\n\"\"\"\n";
        let job = JobFile::parse(Path::new("j.toml"), src).unwrap();
        let e = job.sql_error(2, 6, "boom").to_string();
        assert_eq!(e, "j.toml:5:6: boom");
    }
}
