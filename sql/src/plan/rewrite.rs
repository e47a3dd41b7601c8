//! Before DataFusion sees a statement: `tumble/hop/session(...)` in `GROUP BY` become the
//! `window_start` and `window_end` columns, Flink's `*_START`/`*_END` functions those columns,
//! and window table functions the same `GROUP BY` form ([`crate::tvf`]); the window found is
//! kept as a [`WindowUse`].

use super::{StatementPlanner, WindowSpec, byte_of, ident_name};
use crate::job::parse_duration;
use crate::tvf;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::sql::sqlparser::ast::{
    self as ast, DateTimeField, GroupByExpr, Ident, SetExpr, Spanned, TableFactor,
};
use runnel_engine::error::Result;
use std::ops::ControlFlow;
use std::sync::Arc;

/// A windowed `GROUP BY` as written: the window and the column it is computed on.
#[derive(Debug, Clone)]
pub(crate) struct WindowUse {
    pub spec: WindowSpec,
    pub time_column: String,
    /// Byte offset in the statement (for errors).
    pub(super) at: usize,
    /// The other GROUP BY expressions (sessions are per key), as SQL text.
    pub partition_by: Vec<String>,
}

impl StatementPlanner<'_> {
    /// Replaces `tumble/hop/session(...)` in GROUP BY lists by `window_start, window_end`, and
    /// the `*_START`/`*_END` functions by those columns; returns the windows found.
    pub(super) fn rewrite_windows(&self, query: &mut ast::Query) -> Result<Vec<WindowUse>> {
        let mut found = Vec::new();
        self.rewrite_set_expr(&mut query.body, &mut found)?;
        let mut failure = None;
        let _ = ast::visit_expressions_mut(query, |e| {
            if let ast::Expr::Function(f) = e {
                let name = ident_name(&f.name).to_lowercase();
                let column = match name.as_str() {
                    "tumble_start" | "hop_start" | "session_start" => Some("window_start"),
                    "tumble_end" | "hop_end" | "session_end" => Some("window_end"),
                    "tumble" | "hop" | "session" => {
                        failure = Some((
                            e.span(),
                            format!(
                                "{name}(...) is a window: it belongs in GROUP BY (then select window_start and window_end)"
                            ),
                        ));
                        return ControlFlow::Break(());
                    }
                    _ => None,
                };
                if let Some(c) = column {
                    *e = ast::Expr::Identifier(Ident::new(c));
                }
            }
            ControlFlow::<()>::Continue(())
        });
        if let Some((span, msg)) = failure {
            return Err(self.job.sql_error(
                span.start.line as usize,
                span.start.column as usize,
                msg,
            ));
        }
        Ok(found)
    }

    fn rewrite_set_expr(&self, body: &mut SetExpr, found: &mut Vec<WindowUse>) -> Result<()> {
        match body {
            SetExpr::Select(select) => {
                tvf::rewrite_select(self.job, select)?;
                for t in &mut select.from {
                    self.rewrite_factor(&mut t.relation, found)?;
                    for j in &mut t.joins {
                        self.rewrite_factor(&mut j.relation, found)?;
                    }
                }
                if let GroupByExpr::Expressions(exprs, _) = &mut select.group_by {
                    let mut rewritten = Vec::with_capacity(exprs.len() + 1);
                    let mut window = None;
                    for e in exprs.drain(..) {
                        match self.window_of(&e)? {
                            Some(w) => {
                                window = Some(w);
                                rewritten.push(ast::Expr::Identifier(Ident::new("window_start")));
                                rewritten.push(ast::Expr::Identifier(Ident::new("window_end")));
                            }
                            None => rewritten.push(e),
                        }
                    }
                    if let Some(mut w) = window {
                        w.partition_by = rewritten
                            .iter()
                            .filter(|e| !matches!(e, ast::Expr::Identifier(i) if i.value.starts_with("window_")))
                            .map(|e| e.to_string())
                            .collect();
                        found.push(w);
                    }
                    *exprs = rewritten;
                }
            }
            SetExpr::Query(q) => self.rewrite_set_expr(&mut q.body, found)?,
            SetExpr::SetOperation { left, right, .. } => {
                self.rewrite_set_expr(left, found)?;
                self.rewrite_set_expr(right, found)?;
            }
            _ => {}
        }
        Ok(())
    }

    fn rewrite_factor(&self, f: &mut TableFactor, found: &mut Vec<WindowUse>) -> Result<()> {
        match f {
            TableFactor::Derived { subquery, .. } => {
                self.rewrite_set_expr(&mut subquery.body, found)
            }
            TableFactor::NestedJoin {
                table_with_joins, ..
            } => {
                self.rewrite_factor(&mut table_with_joins.relation, found)?;
                for j in &mut table_with_joins.joins {
                    self.rewrite_factor(&mut j.relation, found)?;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// `tumble(ts, size)`, `hop(ts, slide, size)` (Flink's order), `session(ts, gap)`.
    fn window_of(&self, e: &ast::Expr) -> Result<Option<WindowUse>> {
        let ast::Expr::Function(f) = e else {
            return Ok(None);
        };
        let name = ident_name(&f.name).to_lowercase();
        if !["tumble", "hop", "session"].contains(&name.as_str()) {
            return Ok(None);
        }
        let span = e.span();
        let at = self
            .job_sql_offset_to_statement(span.start.line as usize, span.start.column as usize)
            .unwrap_or(0);
        let args = tvf::positional_args(f);
        let usage = match name.as_str() {
            "tumble" => "tumble(<event time column>, INTERVAL '10' SECOND)",
            "hop" => {
                "hop(<event time column>, INTERVAL '<slide>' SECOND, INTERVAL '<size>' SECOND)"
            }
            _ => "session(<event time column>, INTERVAL '<gap>' SECOND)",
        };
        let expected = if name == "hop" { 3 } else { 2 };
        if args.len() != expected {
            return Err(self.error(at, format!("{name} takes {expected} arguments: {usage}")));
        }
        let time_column = match args[0] {
            ast::Expr::Identifier(i) => i.value.clone(),
            ast::Expr::CompoundIdentifier(parts) => {
                parts.last().map(|i| i.value.clone()).unwrap_or_default()
            }
            _ => {
                return Err(self.error(
                    at,
                    format!("the first argument of {name} is the event-time column: {usage}"),
                ));
            }
        };
        let interval =
            |e: &ast::Expr| interval_ms(e).map_err(|m| self.error(at, format!("{m}: {usage}")));
        let spec = match name.as_str() {
            "tumble" => WindowSpec::Tumble {
                size: interval(args[1])?,
            },
            "hop" => {
                let (slide, size) = (interval(args[1])?, interval(args[2])?);
                if slide > size {
                    return Err(self.error(at, format!("hop slide ({slide} ms) is longer than the window size ({size} ms): {usage}")));
                }
                WindowSpec::Hop { size, slide }
            }
            _ => WindowSpec::Session {
                gap: interval(args[1])?,
            },
        };
        Ok(Some(WindowUse {
            spec,
            time_column,
            at,
            partition_by: vec![],
        }))
    }

    /// A (line, column) of the whole SQL text as an offset in this statement.
    fn job_sql_offset_to_statement(&self, line: usize, col: usize) -> Option<usize> {
        byte_of(&self.job.sql, line, col).checked_sub(self.start)
    }
}

/// `INTERVAL '10' SECOND`, `INTERVAL '10 seconds'`, `INTERVAL '1' MINUTE`, in milliseconds.
fn interval_ms(e: &ast::Expr) -> std::result::Result<i64, String> {
    let ast::Expr::Interval(i) = e else {
        return Err(format!("expected an INTERVAL, found `{e}`"));
    };
    let text = match i.value.as_ref() {
        ast::Expr::Value(v) => match &v.value {
            ast::Value::SingleQuotedString(s) | ast::Value::Number(s, _) => s.clone(),
            other => other.to_string(),
        },
        other => other.to_string(),
    };
    let ms = match &i.leading_field {
        None => parse_duration(&text)?,
        Some(field) => {
            let unit = match field {
                DateTimeField::Millisecond | DateTimeField::Milliseconds => "ms",
                DateTimeField::Second | DateTimeField::Seconds => "s",
                DateTimeField::Minute | DateTimeField::Minutes => "min",
                DateTimeField::Hour | DateTimeField::Hours => "h",
                DateTimeField::Day | DateTimeField::Days => "d",
                other => return Err(format!("unsupported interval unit {other}")),
            };
            parse_duration(&format!("{text}{unit}"))?
        }
    };
    if ms <= 0 {
        return Err(format!("the interval must be positive, found `{e}`"));
    }
    Ok(ms)
}

pub(super) fn with_window_columns(schema: &SchemaRef, add: bool) -> SchemaRef {
    if !add {
        return schema.clone();
    }
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    for n in ["window_start", "window_end"] {
        fields.push(Field::new(
            n,
            DataType::Timestamp(TimeUnit::Millisecond, None),
            true,
        ));
    }
    Arc::new(Schema::new(fields))
}
