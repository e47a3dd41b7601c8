//! Planning: the job's SQL → DataFusion logical plans → a tree of streaming [`Step`]s that hold
//! DataFusion physical expressions and aggregate functions, created once per job.
//!
//! Streaming windows are not SQL: `GROUP BY ..., tumble(ts, INTERVAL '10' SECOND)` (also `hop`,
//! `session`, and Flink's `TUMBLE_START`/`TUMBLE_END` forms) is rewritten, before DataFusion
//! sees it, into `GROUP BY ..., window_start, window_end`, two columns every input gets while
//! such a statement is planned. The aggregate step fills them per window. What a stream cannot
//! do (`ORDER BY`, `LIMIT`) is refused with what to write instead. Flink's window table
//! functions (`FROM TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), ...))`) are first rewritten into
//! that `GROUP BY` form ([`tvf`]). `OVER (...)` windows are planned in [`over`].
//!
//! Here: the steps and the statement planner; `rewrite` turns windows into columns before
//! DataFusion plans, `lower` turns the logical plan into steps, `joins` and `over` the joins
//! and `OVER` windows among them.

use super::job::{InputDecl, JobFile, OutputDecl, closest_hint, sql_position, strip_position};
use super::row::Format;
use super::tvf;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::datasource::MemTable;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::sqlparser::ast::{
    self as ast, ObjectNamePart, Spanned, Statement, TableObject,
};
use datafusion::sql::sqlparser::parser::Parser;
use rewrite::with_window_columns;
use runnel_engine::error::{EngineError, Result};
use std::sync::Arc;

mod joins;
mod lower;
mod over;
mod rewrite;
use lower::Lower;
pub use over::{Frame, OverFunction, OverStep};
pub(crate) use rewrite::WindowUse;

pub type PhysExpr = Arc<dyn PhysicalExpr>;

/// How rows are grouped in time by a windowed aggregate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowSpec {
    Tumble {
        size: i64,
    },
    Hop {
        size: i64,
        slide: i64,
    },
    Session {
        gap: i64,
    },
    /// Grouping by the window columns of an upstream windowed aggregate: one group per key and
    /// upstream window, final when the watermark passes that window (as Flink's window
    /// aggregate over a window table function's result).
    PerUpstreamWindow,
}

/// One step of a streaming plan. Every step's output rows follow [`Step::schema`].
pub enum Step {
    Scan {
        input: InputDecl,
        schema: SchemaRef,
        /// Columns appended as nulls (`window_start`, `window_end`), filled by a window.
        extra: Vec<DataType>,
    },
    Filter {
        input: Box<Step>,
        predicate: PhysExpr,
    },
    Project {
        input: Box<Step>,
        exprs: Vec<PhysExpr>,
        schema: SchemaRef,
    },
    Aggregate(Box<AggregateStep>),
    Union {
        inputs: Vec<Step>,
        schema: SchemaRef,
    },
    Join(Box<JoinStep>),
    StreamJoin(Box<StreamJoinStep>),
    Over(Box<OverStep>),
}

/// Two streams joined on equal keys, within a time bound (an interval join): each side's records
/// wait in a window store for partners from the other side.
pub struct StreamJoinStep {
    pub left: Step,
    pub right: Step,
    pub left_keys: Vec<PhysExpr>,
    pub right_keys: Vec<PhysExpr>,
    /// Right records may be up to `before` ms earlier and `after` ms later than the left one.
    pub before: i64,
    pub after: i64,
    /// How long after its bound a record still waits (for a partner that is late by up to this).
    pub grace: i64,
    /// The join's own extra condition (over the joined schema), applied to each pair.
    pub filter: Option<PhysExpr>,
    pub schema: SchemaRef,
}

/// `GROUP BY` with aggregate functions: the input's group and argument values are computed in
/// batches, then kept per key (and window) as accumulator states.
pub struct AggregateStep {
    pub input: Step,
    /// Group expressions that are not window columns, over the input schema.
    pub keys: Vec<PhysExpr>,
    /// Where each output group column comes from.
    pub group_columns: Vec<GroupColumn>,
    pub aggregates: Vec<Arc<AggregateFunctionExpr>>,
    pub window: Option<WindowSpec>,
    pub schema: SchemaRef,
    /// Names of the output record key's columns (the group columns).
    pub key_names: Vec<String>,
}

/// An output group column of an aggregate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupColumn {
    /// The i-th of [`AggregateStep::keys`].
    Key(usize),
    /// The start of the window (`window_start`).
    WindowStart,
    /// The end of the window (`window_end`).
    WindowEnd,
}

/// A stream joined with a table (a compacted topic read as a table) on the table's key.
pub struct JoinStep {
    pub left: Step,
    pub right: InputDecl,
    pub right_schema: SchemaRef,
    /// Left expressions matched, in order, with the table's key columns.
    pub left_keys: Vec<PhysExpr>,
    pub left_outer: bool,
    /// Extra join condition (over the joined schema), if any.
    pub filter: Option<PhysExpr>,
    pub schema: SchemaRef,
}

impl Step {
    pub fn schema(&self) -> SchemaRef {
        match self {
            Step::Scan { schema, .. } => schema.clone(),
            Step::Filter { input, .. } => input.schema(),
            Step::Project { schema, .. } | Step::Union { schema, .. } => schema.clone(),
            Step::Aggregate(a) => a.schema.clone(),
            Step::Join(j) => j.schema.clone(),
            Step::StreamJoin(j) => j.schema.clone(),
            Step::Over(o) => o.schema.clone(),
        }
    }

    /// Columns whose value plus an offset is the record's event time (how a time bound written
    /// on columns becomes a bound on record times).
    pub fn time_columns(&self) -> Vec<(usize, i64)> {
        self.time_columns_of(false)
    }

    fn time_columns_of(&self, windows_only: bool) -> Vec<(usize, i64)> {
        use datafusion::physical_expr::expressions::Column;
        match self {
            Step::Scan { .. } if windows_only => vec![],
            Step::Scan { input, .. } => input.event_time.map(|i| (i, 0)).into_iter().collect(),
            Step::Filter { input, .. } => input.time_columns_of(windows_only),
            Step::Project { input, exprs, .. } => {
                let inner = input.time_columns_of(windows_only);
                exprs
                    .iter()
                    .enumerate()
                    .filter_map(|(i, e)| {
                        let c = e.downcast_ref::<Column>()?;
                        inner
                            .iter()
                            .find(|(idx, _)| *idx == c.index())
                            .map(|(_, off)| (i, *off))
                    })
                    .collect()
            }
            Step::Aggregate(a) => {
                // A window's result carries the time end − 1.
                let size = match a.window {
                    Some(WindowSpec::Tumble { size }) | Some(WindowSpec::Hop { size, .. }) => {
                        Some(size)
                    }
                    _ => None,
                };
                let inner = a.input.window_columns();
                a.group_columns
                    .iter()
                    .enumerate()
                    .filter_map(|(i, c)| match (c, size) {
                        (GroupColumn::WindowEnd, Some(_)) => Some((i, -1)),
                        (GroupColumn::WindowStart, Some(size)) => Some((i, size - 1)),
                        // An upstream window's column keeps its meaning through the grouping.
                        (GroupColumn::Key(k), _)
                            if a.window == Some(WindowSpec::PerUpstreamWindow) =>
                        {
                            let c = a.keys[*k].downcast_ref::<Column>()?;
                            inner
                                .iter()
                                .find(|(idx, _)| *idx == c.index())
                                .map(|(_, off)| (i, *off))
                        }
                        _ => None,
                    })
                    .collect()
            }
            Step::Join(j) => j.left.time_columns_of(windows_only),
            // The input's columns come first, unchanged.
            Step::Over(o) => o.input.time_columns_of(windows_only),
            Step::Union { .. } | Step::StreamJoin(_) => vec![],
        }
    }

    /// The time columns that hold window bounds of an upstream windowed aggregate (not a
    /// scan's event time): grouping by one of them groups per upstream window.
    pub fn window_columns(&self) -> Vec<(usize, i64)> {
        self.time_columns_of(true)
    }

    /// The largest window size upstream (how long a windowed result can lag its records).
    fn window_lag(&self) -> i64 {
        match self {
            Step::Scan { .. } => 0,
            Step::Filter { input, .. } | Step::Project { input, .. } => input.window_lag(),
            Step::Aggregate(a) => {
                let own = match a.window {
                    Some(WindowSpec::Tumble { size }) | Some(WindowSpec::Hop { size, .. }) => size,
                    Some(WindowSpec::Session { gap }) => gap,
                    Some(WindowSpec::PerUpstreamWindow) | None => 0,
                };
                own.max(a.input.window_lag())
            }
            Step::Union { inputs, .. } => inputs.iter().map(Step::window_lag).max().unwrap_or(0),
            Step::Join(j) => j.left.window_lag(),
            Step::StreamJoin(j) => j.left.window_lag().max(j.right.window_lag()),
            Step::Over(o) => o.input.window_lag(),
        }
    }

    /// Whether this step's output is an upsert stream (a changing table, keyed).
    pub fn is_upsert(&self) -> bool {
        match self {
            Step::Scan { .. } => false,
            Step::Filter { input, .. } | Step::Project { input, .. } => input.is_upsert(),
            Step::Aggregate(a) => a.window.is_none(),
            Step::Union { inputs, .. } => inputs.iter().any(Step::is_upsert),
            Step::Join(j) => j.left.is_upsert(),
            Step::StreamJoin(_) => false,
            Step::Over(o) => o.input.is_upsert(),
        }
    }

    fn describe(&self, depth: usize, out: &mut String) {
        let pad = "  ".repeat(depth);
        let line = match self {
            Step::Scan { input, .. } => format!(
                "Scan {} (topic {}, {:?}{})",
                input.name,
                input.topic,
                input.format,
                input
                    .event_time
                    .map(|i| format!(
                        ", event time {}, watermark −{} ms",
                        input.schema.field(i).name(),
                        input.watermark_ms
                    ))
                    .unwrap_or_default()
            ),
            Step::Filter { predicate, .. } => format!("Filter {predicate}"),
            Step::Project { exprs, .. } => format!(
                "Project {}",
                exprs
                    .iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Step::Aggregate(a) => format!(
                "Aggregate by [{}]{} computing [{}] → {}",
                a.keys
                    .iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                match a.window {
                    Some(WindowSpec::PerUpstreamWindow) => " per window of its input".to_string(),
                    Some(w) => format!(" in {w:?} windows (ms)"),
                    None => String::new(),
                },
                a.aggregates
                    .iter()
                    .map(|f| f.name().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                if a.window.is_some() {
                    "append stream, one result per window when it closes"
                } else {
                    "upsert stream"
                }
            ),
            Step::Union { .. } => "Union all".to_string(),
            Step::Join(j) => format!(
                "{} join with table {} on [{}]",
                if j.left_outer { "Left" } else { "Inner" },
                j.right.name,
                j.left_keys
                    .iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Step::StreamJoin(j) => format!(
                "Stream join on [{}] = [{}], right time within [left − {} ms, left + {} ms] (grace {} ms)",
                j.left_keys
                    .iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                j.right_keys
                    .iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                j.before,
                j.after,
                j.grace
            ),
            Step::Over(o) => o.describe(),
        };
        out.push_str(&format!("{pad}{line}\n"));
        match self {
            Step::Scan { .. } => {}
            Step::Filter { input, .. } | Step::Project { input, .. } => {
                input.describe(depth + 1, out)
            }
            Step::Aggregate(a) => a.input.describe(depth + 1, out),
            Step::Union { inputs, .. } => inputs.iter().for_each(|i| i.describe(depth + 1, out)),
            Step::Join(j) => j.left.describe(depth + 1, out),
            Step::Over(o) => o.input.describe(depth + 1, out),
            Step::StreamJoin(j) => {
                j.left.describe(depth + 1, out);
                j.right.describe(depth + 1, out);
            }
        }
    }
}

/// One `INSERT INTO output SELECT ...`, planned.
pub struct PlannedStatement {
    pub output: OutputDecl,
    pub logical: LogicalPlan,
    pub root: Step,
}

impl PlannedStatement {
    /// The streaming steps, one per line, outermost first.
    pub fn describe_steps(&self) -> String {
        let mut s = String::new();
        self.root.describe(0, &mut s);
        s
    }
}

/// A whole job, planned.
pub struct JobPlan {
    pub job: JobFile,
    pub statements: Vec<PlannedStatement>,
}

/// Plans every statement of the job. Errors name the file, line and column.
///
/// # Errors
///
/// `EngineError::Job` placed at the statement's `file:line:col`: SQL that does not parse, a
/// DataFusion planning error (an unknown table or column, with the closest names), or SQL
/// that streaming jobs do not support yet (an aggregate whose state cannot be stored, an OVER
/// window over values that cannot be kept, ...).
pub fn plan(job: JobFile) -> Result<JobPlan> {
    let statements = each_statement(&job, |planner, stmt| planner.plan(stmt))?;
    Ok(JobPlan { job, statements })
}

/// Each statement's output and its query with windows rewritten (for the batch oracle).
#[cfg(any(test, feature = "test-util"))]
pub(crate) fn rewritten_statements(
    job: &JobFile,
) -> Result<Vec<(OutputDecl, Box<ast::Query>, Option<WindowUse>)>> {
    each_statement(job, |planner, stmt| planner.rewritten(stmt))
}

fn each_statement<T>(
    job: &JobFile,
    f: impl Fn(&StatementPlanner<'_>, Statement) -> Result<T>,
) -> Result<Vec<T>> {
    let sql = job.sql.clone();
    let stmts = Parser::new(&tvf::Dialect)
        .try_with_sql(&sql)
        .and_then(|mut p| p.parse_statements())
        .map_err(|e| {
            let msg = e.to_string();
            let (line, col) = sql_position(&msg).unwrap_or((1, 1));
            job.sql_error(
                line,
                col,
                format!("SQL syntax error: {}", strip_position(&msg)),
            )
        })?;
    if stmts.is_empty() {
        return Err(job.sql_error(
            1,
            1,
            "the job has no SQL statement: write `INSERT INTO <output> SELECT ...`",
        ));
    }
    let starts: Vec<usize> = stmts
        .iter()
        .map(|s| {
            byte_of(
                &sql,
                s.span().start.line as usize,
                s.span().start.column as usize,
            )
        })
        .collect();
    let mut out = Vec::new();
    for (i, stmt) in stmts.into_iter().enumerate() {
        let start = starts[i];
        let end = starts.get(i + 1).copied().unwrap_or(sql.len());
        let planner = StatementPlanner {
            job,
            start,
            text: &sql[start..end],
        };
        out.push(f(&planner, stmt)?);
    }
    Ok(out)
}

/// Byte offset of a 1-based line and column.
fn byte_of(text: &str, line: usize, col: usize) -> usize {
    let mut offset = 0;
    for (i, l) in text.split_inclusive('\n').enumerate() {
        if i + 1 == line {
            return offset
                + l.char_indices()
                    .nth(col.saturating_sub(1))
                    .map_or(l.len(), |(b, _)| b);
        }
        offset += l.len();
    }
    offset
}

struct StatementPlanner<'a> {
    job: &'a JobFile,
    /// Byte offset of this statement in the SQL text, and its text.
    start: usize,
    text: &'a str,
}

fn ident_name(name: &ast::ObjectName) -> String {
    name.0
        .iter()
        .map(|p| match p {
            ObjectNamePart::Identifier(i) => i.value.clone(),
            other => other.to_string(),
        })
        .collect::<Vec<_>>()
        .join(".")
}

impl StatementPlanner<'_> {
    fn error(&self, offset_in_statement: usize, msg: impl std::fmt::Display) -> EngineError {
        self.job.sql_error_at(self.start + offset_in_statement, msg)
    }

    /// Offset of the first whole-word, case-insensitive occurrence of `word` in the statement.
    fn find_word(&self, word: &str) -> usize {
        let lower = self.text.to_lowercase();
        let w = word.to_lowercase();
        if w.is_empty() {
            // Every position would match without moving on.
            return 0;
        }
        let mut from = 0;
        while let Some(i) = lower[from..].find(&w).map(|i| i + from) {
            let before = lower[..i].chars().next_back();
            let after = lower[i + w.len()..].chars().next();
            let is_word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
            if !is_word(before) && !is_word(after) {
                return i;
            }
            from = i + w.len();
        }
        0
    }

    /// The statement's output and query, windows rewritten (see the module docs).
    pub(crate) fn rewritten(
        &self,
        stmt: Statement,
    ) -> Result<(OutputDecl, Box<ast::Query>, Option<WindowUse>)> {
        let Statement::Insert(insert) = stmt else {
            return Err(self.error(
                0,
                "a job's statements are `INSERT INTO <output> SELECT ...`: declare inputs and outputs in the TOML, not with CREATE",
            ));
        };
        let table = match &insert.table {
            TableObject::TableName(n) => ident_name(n),
            other => other.to_string(),
        };
        let Some((_, output)) = self.job.output(&table) else {
            let known: Vec<&str> = self.job.outputs.iter().map(|o| o.name.as_str()).collect();
            return Err(self.error(
                self.find_word(&table),
                format!(
                    "INSERT INTO {table}: no output of that name is declared{}; declare it with [[output]] name = {table:?}",
                    closest_hint(&table, known.iter().copied())
                ),
            ));
        };
        let Some(mut query) = insert.source else {
            return Err(self.error(0, "INSERT INTO needs a SELECT"));
        };
        let windows = self.rewrite_windows(&mut query)?;
        if windows.len() > 1 && windows.iter().any(|w| w.spec != windows[0].spec) {
            return Err(self.error(
                windows[1].at,
                "one statement may use one kind of window: split it into two INSERT INTO statements",
            ));
        }
        Ok((output.clone(), query, windows.into_iter().next()))
    }

    fn plan(&self, stmt: Statement) -> Result<PlannedStatement> {
        let (output, query, window) = self.rewritten(stmt)?;
        if let Some(w) = &window {
            let streams: Vec<&InputDecl> =
                self.job.inputs.iter().filter(|i| i.key.is_none()).collect();
            let cut_on = |i: &&InputDecl| {
                i.event_time.map(|t| i.schema.field(t).name()) == Some(&w.time_column)
            };
            if !streams.iter().any(cut_on) {
                let times: Vec<String> = streams
                    .iter()
                    .filter_map(|i| {
                        i.event_time
                            .map(|t| format!("{} (input {})", i.schema.field(t).name(), i.name))
                    })
                    .collect();
                let hint = if times.is_empty() {
                    format!("declare event_time = {:?} in the input", w.time_column)
                } else {
                    format!("event times: {}", times.join(", "))
                };
                return Err(self.error(
                    w.at,
                    format!(
                        "windows are cut on an input's event time, and `{}` is not one: {hint}",
                        w.time_column
                    ),
                ));
            }
        }
        let ctx = self.context(window.as_ref())?;
        let state = ctx.state();
        let logical = block_on(state.statement_to_plan(
            datafusion::sql::parser::Statement::Statement(Box::new(Statement::Query(query))),
        ))
        .map_err(|e| self.datafusion_error(e))?;
        // Type coercion and function rewrites, as DataFusion does before optimizing.
        let logical = state
            .analyzer()
            .execute_and_check(logical, state.config_options(), |_, _| {})
            .map_err(|e| self.datafusion_error(e))?;
        // Only the rewrites the lowering relies on: simplified expressions (some functions only
        // evaluate once simplified, like `coalesce`), `FROM a, b WHERE a.x = b.y` as a join, and
        // join keys out of the ON condition. No pushdowns: the plan keeps the query's shape.
        use datafusion::optimizer::{
            Optimizer, eliminate_cross_join::EliminateCrossJoin,
            extract_equijoin_predicate::ExtractEquijoinPredicate,
            simplify_expressions::SimplifyExpressions,
        };
        let logical = Optimizer::with_rules(vec![
            Arc::new(SimplifyExpressions::new()),
            Arc::new(EliminateCrossJoin::new()),
            Arc::new(ExtractEquijoinPredicate::new()),
        ])
        .optimize(logical, &state, |_, _| {})
        .map_err(|e| self.datafusion_error(e))?;
        let lower = Lower {
            planner: self,
            state: &state,
            window: window.as_ref(),
        };
        let root = lower.step(&logical)?;
        Ok(PlannedStatement {
            output,
            logical,
            root,
        })
    }

    /// A DataFusion session with every input registered; with a window, the streams whose
    /// event time it is cut on get the `window_start` and `window_end` columns.
    fn context(&self, window: Option<&WindowUse>) -> Result<SessionContext> {
        let config = SessionConfig::new()
            .with_target_partitions(1)
            .with_information_schema(false);
        let ctx = SessionContext::new_with_config(config);
        for input in &self.job.inputs {
            let windowed = window.is_some_and(|w| {
                input.key.is_none()
                    && input.event_time.map(|i| input.schema.field(i).name())
                        == Some(&w.time_column)
            });
            let schema = with_window_columns(&input.schema, windowed);
            let table = MemTable::try_new(schema, vec![vec![]])
                .map_err(|e| EngineError::Job(e.to_string()))?;
            ctx.register_table(input.name.as_str(), Arc::new(table))
                .map_err(|e| EngineError::Job(e.to_string()))?;
        }
        Ok(ctx)
    }

    /// A DataFusion planning error, placed at the name it is about, with the closest names.
    fn datafusion_error(&self, e: datafusion::error::DataFusionError) -> EngineError {
        let msg = e.strip_backtrace();
        if let Some(rest) = msg.split("No field named ").nth(1) {
            let name = rest
                .split(['.', ' '])
                .next()
                .unwrap_or("")
                .trim_matches(|c| c == '"' || c == '\'');
            // The name ends its line or its sentence: "No field named nope.\nValid fields are
            // ..." or "No field named rides.spede. Did you mean ...".
            let field = rest
                .lines()
                .next()
                .unwrap_or("")
                .split(". ")
                .next()
                .unwrap_or(name)
                .trim_end_matches('.')
                .trim_matches('"');
            let last = field.rsplit('.').next().unwrap_or(field).trim_matches('"');
            let known: Vec<String> = self
                .job
                .inputs
                .iter()
                .flat_map(|i| {
                    i.schema
                        .fields()
                        .iter()
                        .map(|f| f.name().clone())
                        .collect::<Vec<_>>()
                })
                .chain(["window_start".to_string(), "window_end".to_string()])
                .collect();
            return self.error(
                self.find_word(last),
                format!(
                    "unknown column {last:?}{}",
                    closest_hint(last, known.iter().map(String::as_str))
                ),
            );
        }
        if let Some(rest) = msg
            .split("table '")
            .nth(1)
            .filter(|_| msg.contains("not found"))
        {
            let full = rest.split('\'').next().unwrap_or("");
            let name = full.rsplit('.').next().unwrap_or(full);
            let known: Vec<&str> = self.job.inputs.iter().map(|i| i.name.as_str()).collect();
            return self.error(
                self.find_word(name),
                format!(
                    "unknown table {name:?}{}; inputs are declared with [[input]] name = ...",
                    closest_hint(name, known.iter().copied())
                ),
            );
        }
        self.error(0, format!("cannot plan this statement: {msg}"))
    }
}

/// Runs a planning future to completion (DataFusion's planner is async but does no I/O here),
/// on its own thread so that it works inside an async caller too.
pub(crate) fn block_on<F>(f: F) -> F::Output
where
    F: std::future::Future + Send,
    F::Output: Send,
{
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("a current-thread runtime")
                .block_on(f)
        })
        .join()
        .expect("the planning thread panicked")
    })
}

/// The default format of outputs that print rows (used by explain).
pub fn describe_output(o: &OutputDecl) -> String {
    format!(
        "{} → topic {} ({})",
        o.name,
        o.topic,
        match o.format {
            Format::Json => "json",
            Format::Csv => "csv",
            Format::Raw => "raw",
        }
    )
}
