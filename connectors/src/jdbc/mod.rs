//! Databases: the [`JdbcSource`] (`jdbc-source`) and the [`JdbcSink`] (`jdbc-sink`), Confluent's
//! JDBC connectors over SQLite, PostgreSQL and MySQL/MariaDB, and what they share here: the
//! database chosen by the scheme of `connection.url` (`sqlite:`, `postgres://`, `mysql://`),
//! its SQL dialect, and the mapping between JSON values and columns, through sqlx's `Any`
//! driver. PostgreSQL's rows move through `COPY` both ways ([`copy_out`] for the source, the
//! sink's `copy` module); a sink's offsets kept in the target database are in [`offsets`].

pub mod copy_out;
pub mod offsets;
pub mod sink;
pub mod source;

pub use sink::JdbcSink;
pub use source::JdbcSource;

use crate::error::{ConnectError, Result};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Column, Row, ValueRef};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    MySql,
    Sqlite,
}

impl Dialect {
    /// The database `url` names, by its scheme.
    ///
    /// # Errors
    /// [`ConnectError::Record`] for a scheme other than `sqlite:`, `postgres://`,
    /// `postgresql://`, `mysql://` and `mariadb://`.
    pub fn of(url: &str) -> Result<Self> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres)
        } else if url.starts_with("mysql://") || url.starts_with("mariadb://") {
            Ok(Self::MySql)
        } else if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else {
            Err(ConnectError::Record {
                what: "connection.url".into(),
                message: format!("{url:?}: use sqlite:PATH, postgres://... or mysql://..."),
            })
        }
    }

    /// The n-th (1-based) bind placeholder.
    pub fn param(self, n: usize) -> String {
        match self {
            Self::Postgres => format!("${n}"),
            _ => "?".into(),
        }
    }

    pub fn quote(self, ident: &str) -> String {
        match self {
            Self::MySql => format!("`{}`", ident.replace('`', "``")),
            _ => format!("\"{}\"", ident.replace('"', "\"\"")),
        }
    }

    /// The column type for a JSON value (`key`: part of the primary key).
    pub fn column_type(self, v: &serde_json::Value, key: bool) -> &'static str {
        match (v, self) {
            (serde_json::Value::Bool(_), Self::Sqlite) => "INTEGER",
            // MySQL's BOOLEAN is TINYINT(1), which sqlx's Any driver cannot read back.
            (serde_json::Value::Bool(_), Self::MySql) => "BIGINT",
            (serde_json::Value::Bool(_), _) => "BOOLEAN",
            (serde_json::Value::Number(n), _) if n.is_i64() || n.is_u64() => "BIGINT",
            (serde_json::Value::Number(_), Self::Postgres) => "DOUBLE PRECISION",
            (serde_json::Value::Number(_), _) => "DOUBLE",
            // MySQL cannot index TEXT without a length.
            (_, Self::MySql) if key => "VARCHAR(255)",
            _ => "TEXT",
        }
    }
}

/// A pool of (at most two) connections to `url`; a SQLite file is created when missing.
///
/// # Errors
/// [`ConnectError::Record`] for an unsupported `url`; [`ConnectError::Database`] when the
/// database cannot be reached (transient) or refuses the connection.
///
/// # Cancel safety
/// Cancel safe: a pool dropped before it connected holds nothing.
pub async fn connect(url: &str) -> Result<AnyPool> {
    sqlx::any::install_default_drivers();
    let url = match Dialect::of(url)? {
        // A file database is created when missing, as a user of an embedded default expects.
        Dialect::Sqlite if !url.contains("mode=") => {
            format!("{url}{}mode=rwc", if url.contains('?') { "&" } else { "?" })
        }
        _ => url.to_string(),
    };
    AnyPoolOptions::new()
        .max_connections(2)
        .connect(&url)
        .await
        .map_err(|e| db_error(&url, e))
}

/// The error with its SQLSTATE when the server gave one: the code says what kind of failure
/// it is (53100: disk full) where the message depends on the server and its language.
pub fn db_error(what: &str, e: sqlx::Error) -> ConnectError {
    let message = match &e {
        sqlx::Error::Database(d) => match d.code() {
            Some(code) => format!("{e} (SQLSTATE {code})"),
            None => e.to_string(),
        },
        _ => e.to_string(),
    };
    ConnectError::Database {
        what: redact(what),
        message,
        transient: transient(&e),
    }
}

/// A URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => match url[s + 3..at].find(':') {
            Some(c) => format!("{}:***{}", &url[..s + 3 + c], &url[at..]),
            None => url.to_string(),
        },
        _ => url.to_string(),
    }
}

/// A row as a JSON object (integers, floats, text, booleans, null).
pub fn row_to_json(row: &AnyRow) -> serde_json::Map<String, serde_json::Value> {
    let mut out = serde_json::Map::new();
    for (i, col) in row.columns().iter().enumerate() {
        let null = row.try_get_raw(i).map(|v| v.is_null()).unwrap_or(true);
        let v = if null {
            serde_json::Value::Null
        } else if let Ok(n) = row.try_get::<i64, _>(i) {
            n.into()
        } else if let Ok(f) = row.try_get::<f64, _>(i) {
            f.into()
        } else if let Ok(s) = row.try_get::<String, _>(i) {
            s.into()
        } else if let Ok(b) = row.try_get::<bool, _>(i) {
            b.into()
        } else if let Ok(bytes) = row.try_get::<Vec<u8>, _>(i) {
            // MySQL's TEXT comes through the Any driver as a blob.
            String::from_utf8_lossy(&bytes).into_owned().into()
        } else {
            serde_json::Value::Null
        };
        out.insert(col.name().to_string(), v);
    }
    out
}

/// Whether an error is worth retrying (the server went away) rather than a bad record.
pub fn transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => true,
        // SQLSTATE classes of a server going away or pushing back, not of bad data: 08
        // connection, 40 rollback (deadlock, serialization), 53 resources, 57 shutdown. Not
        // 08P01: PostgreSQL says so of a value that does not fit its parameter's type.
        sqlx::Error::Database(d) => d.code().is_some_and(|c| {
            c != "08P01" && ["08", "40", "53", "57"].iter().any(|p| c.starts_with(p))
        }),
        _ => false,
    }
}

/// For tests: PostgreSQL at `RUNNEL_TEST_POSTGRES_URL`, or `None` (the test is skipped) when it
/// is not reachable and `RUNNEL_REQUIRE_SERVICES` is not set.
#[cfg(test)]
pub(crate) async fn test_postgres() -> Option<String> {
    sqlx::any::install_default_drivers();
    let url = std::env::var("RUNNEL_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let wait = std::time::Duration::from_secs(5);
    if let Ok(Ok(_)) = tokio::time::timeout(wait, connect(&url)).await {
        return Some(url);
    }
    assert_ne!(
        std::env::var("RUNNEL_REQUIRE_SERVICES").as_deref(),
        Ok("1"),
        "{url} is not reachable"
    );
    None
}
