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

use super::job::{
    InputDecl, JobFile, OutputDecl, closest_hint, parse_duration, sql_position, strip_position,
};
use super::row::Format;
use super::tvf;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::common::tree_node::TreeNode;
use datafusion::common::{DFSchema, JoinType, ScalarValue};
use datafusion::datasource::MemTable;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::aggregate::LoweredAggregateBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::sqlparser::ast::{
    self as ast, DateTimeField, GroupByExpr, Ident, ObjectNamePart, SetExpr, Spanned, Statement,
    TableFactor, TableObject,
};
use datafusion::sql::sqlparser::parser::Parser;
use runnel_engine::error::{EngineError, Result};
use std::ops::ControlFlow;
use std::sync::Arc;

mod over;
pub use over::{Frame, OverFunction, OverStep};

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

/// A windowed `GROUP BY` as written: the window and the column it is computed on.
#[derive(Debug, Clone)]
pub(crate) struct WindowUse {
    pub spec: WindowSpec,
    pub time_column: String,
    /// Byte offset in the statement (for errors).
    at: usize,
    /// The other GROUP BY expressions (sessions are per key), as SQL text.
    pub partition_by: Vec<String>,
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
    /// For each output group column: `Ok(i)` = the i-th key, `Err(true)` = window_start,
    /// `Err(false)` = window_end.
    pub group_columns: Vec<std::result::Result<usize, bool>>,
    pub aggregates: Vec<Arc<AggregateFunctionExpr>>,
    pub window: Option<WindowSpec>,
    pub schema: SchemaRef,
    /// Names of the output record key's columns (the group columns).
    pub key_names: Vec<String>,
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
                        (Err(false), Some(_)) => Some((i, -1)),
                        (Err(true), Some(size)) => Some((i, size - 1)),
                        // An upstream window's column keeps its meaning through the grouping.
                        (Ok(k), _) if a.window == Some(WindowSpec::PerUpstreamWindow) => {
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
pub fn plan(job: JobFile) -> Result<JobPlan> {
    let statements = each_statement(&job, |planner, stmt| planner.plan(stmt))?;
    Ok(JobPlan { job, statements })
}

/// Each statement's output and its query with windows rewritten (for the batch oracle).
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
            let field = rest.split(". ").next().unwrap_or(name).trim_matches('"');
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

    /// Replaces `tumble/hop/session(...)` in GROUP BY lists by `window_start, window_end`, and
    /// the `*_START`/`*_END` functions by those columns; returns the windows found.
    fn rewrite_windows(&self, query: &mut ast::Query) -> Result<Vec<WindowUse>> {
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

fn with_window_columns(schema: &SchemaRef, add: bool) -> SchemaRef {
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

struct Lower<'a> {
    planner: &'a StatementPlanner<'a>,
    state: &'a datafusion::execution::SessionState,
    window: Option<&'a WindowUse>,
}

impl Lower<'_> {
    fn physical(&self, e: &Expr, schema: &DFSchema) -> Result<PhysExpr> {
        self.state
            .create_physical_expr(e.clone(), schema)
            .map_err(|err| {
                self.planner.error(
                    0,
                    format!("cannot evaluate `{e}`: {}", err.strip_backtrace()),
                )
            })
    }

    fn unsupported(&self, word: &str, msg: &str) -> EngineError {
        self.planner.error(self.planner.find_word(word), msg)
    }

    fn step(&self, plan: &LogicalPlan) -> Result<Step> {
        Ok(match plan {
            LogicalPlan::TableScan(scan) => {
                let name = scan.table_name.table().to_string();
                let (_, input) = self
                    .planner
                    .job
                    .input(&name)
                    .expect("DataFusion resolved it");
                let schema = scan.projected_schema.as_arrow().clone();
                let schema = Arc::new(schema);
                let extra = schema.fields()[input.schema.fields().len()..]
                    .iter()
                    .map(|f| f.data_type().clone())
                    .collect();
                if scan.projection.is_some() {
                    return Err(EngineError::Job(
                        "internal: projected scans are not planned".into(),
                    ));
                }
                Step::Scan {
                    input: input.clone(),
                    schema,
                    extra,
                }
            }
            LogicalPlan::SubqueryAlias(a) => self.step(&a.input)?,
            LogicalPlan::Filter(f) => {
                let input = match f.input.as_ref() {
                    LogicalPlan::Join(j) => self.join(j, Some(&f.predicate))?,
                    other => self.step(other)?,
                };
                Step::Filter {
                    predicate: self.physical(&f.predicate, f.input.schema())?,
                    input: Box::new(input),
                }
            }
            LogicalPlan::Projection(p) => Step::Project {
                exprs: p
                    .expr
                    .iter()
                    .map(|e| self.physical(e, p.input.schema()))
                    .collect::<Result<_>>()?,
                schema: Arc::new(p.schema.as_arrow().clone()),
                input: Box::new(self.step(&p.input)?),
            },
            LogicalPlan::Aggregate(a) => self.aggregate(a)?,
            LogicalPlan::Union(u) => Step::Union {
                inputs: u
                    .inputs
                    .iter()
                    .map(|i| self.step(i))
                    .collect::<Result<_>>()?,
                schema: Arc::new(u.schema.as_arrow().clone()),
            },
            LogicalPlan::Join(j) => self.join(j, None)?,
            LogicalPlan::Sort(_) => {
                return Err(self.unsupported(
                    "order",
                    "ORDER BY on an unbounded stream would wait forever: results leave in event-time order of their windows; drop ORDER BY (sort downstream, or read the output topic in order)",
                ));
            }
            LogicalPlan::Limit(_) => {
                return Err(self.unsupported(
                    "limit",
                    "LIMIT on an unbounded stream would stop the job after n rows: drop it (use WHERE to keep fewer rows, or a window to summarize)",
                ));
            }
            LogicalPlan::Window(w) => self.over(w)?,
            LogicalPlan::Distinct(_) => {
                return Err(self.unsupported(
                    "distinct",
                    "SELECT DISTINCT on a stream keeps every row forever: write GROUP BY with the columns (an upsert stream), or within a window",
                ));
            }
            other => {
                return Err(self.planner.error(
                    0,
                    format!("{} is not supported in streaming jobs", other.display()),
                ));
            }
        })
    }

    fn aggregate(&self, a: &datafusion::logical_expr::Aggregate) -> Result<Step> {
        let input_schema = a.input.schema();
        let input = self.step(&a.input)?;
        // Grouping by the window columns of a windowed aggregate below groups per its windows
        // (the window is not cut again on this level).
        let upstream_windows = input.window_columns();
        let per_upstream_window = a.group_expr.iter().any(|g| {
            matches!(g, Expr::Column(c) if input_schema
                .index_of_column(c)
                .is_ok_and(|i| upstream_windows.iter().any(|(w, _)| *w == i)))
        });
        let windowed_here = self.window.is_some() && !per_upstream_window;
        let mut keys = Vec::new();
        let mut group_columns = Vec::new();
        let mut key_names = Vec::new();
        let out_fields = a.schema.fields();
        for (i, g) in a.group_expr.iter().enumerate() {
            match g {
                Expr::Column(c) if windowed_here && c.name == "window_start" => {
                    group_columns.push(Err(true))
                }
                Expr::Column(c) if windowed_here && c.name == "window_end" => {
                    group_columns.push(Err(false))
                }
                Expr::GroupingSet(_) => {
                    return Err(self.unsupported(
                        "grouping",
                        "GROUPING SETS, CUBE and ROLLUP are not supported in streaming jobs",
                    ));
                }
                e => {
                    group_columns.push(Ok(keys.len()));
                    keys.push(self.physical(e, input_schema)?);
                    key_names.push(out_fields[i].name().clone());
                }
            }
        }
        let window = match (self.window, group_columns.iter().any(|c| c.is_err())) {
            _ if per_upstream_window => Some(WindowSpec::PerUpstreamWindow),
            (Some(w), true) => {
                self.check_time_column(&a.input, w)?;
                Some(w.spec)
            }
            _ => None,
        };
        let physical_input = input_schema.as_arrow();
        let mut aggregates = Vec::new();
        for e in &a.aggr_expr {
            let planning = PhysicalPlanningContext::default();
            let lowered = LoweredAggregateBuilder::new(
                e,
                input_schema,
                physical_input,
                self.state.execution_props(),
                &planning,
            )
            .build()
            .map_err(|err| {
                self.planner.error(
                    0,
                    format!("cannot plan aggregate `{e}`: {}", err.strip_backtrace()),
                )
            })?;
            let (f, filter) = (lowered.aggregate, lowered.filter);
            if filter.is_some() {
                return Err(self.unsupported("filter", "aggregate FILTER (WHERE ...) is not supported yet: use CASE WHEN inside the aggregate"));
            }
            let states = f
                .state_fields()
                .map_err(|err| EngineError::Job(err.to_string()))?;
            if let Some(bad) = states.iter().find(|s| !storable(s.data_type())) {
                return Err(self.unsupported(
                    f.name().split('(').next().unwrap_or_default(),
                    &format!(
                        "aggregate {} keeps a state of type {} that streaming jobs cannot store yet (supported: COUNT, SUM, AVG, MIN, MAX, and others with scalar states)",
                        f.name(),
                        bad.data_type()
                    ),
                ));
            }
            if input.is_upsert() {
                // Rows of an upsert stream change: each replaced row is taken back out. MIN and
                // MAX are named because DataFusion's sliding versions say they retract, but
                // only in arrival order (a moving window), not any row.
                let name = f.fun().name().to_ascii_lowercase();
                let retractable = !matches!(name.as_str(), "min" | "max")
                    && f.create_sliding_accumulator()
                        .is_ok_and(|a| a.supports_retract_batch());
                if !retractable {
                    return Err(self.unsupported(
                        f.fun().name(),
                        &format!(
                            "{} over the result of another GROUP BY (whose rows change) cannot take a changed row back out: use COUNT, SUM or AVG there, or aggregate the input stream directly",
                            f.fun().name().to_uppercase()
                        ),
                    ));
                }
            }
            aggregates.push(f);
        }
        if input.is_upsert() && window.is_some() {
            return Err(self.unsupported(
                "group",
                "a window over the result of another GROUP BY without a window (an upsert stream) is not supported: window the input stream, or group both levels by windows",
            ));
        }
        Ok(Step::Aggregate(Box::new(AggregateStep {
            input,
            keys,
            group_columns,
            aggregates,
            window,
            schema: Arc::new(a.schema.as_arrow().clone()),
            key_names,
        })))
    }

    /// Windows are cut on the input's event time: the window's column must be it.
    fn check_time_column(&self, input: &LogicalPlan, w: &WindowUse) -> Result<()> {
        let mut scans = Vec::new();
        let _ = input.apply(|p| {
            if let LogicalPlan::TableScan(s) = p {
                scans.push(s.table_name.table().to_string());
            }
            Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
        });
        for name in scans {
            let (_, decl) = self.planner.job.input(&name).expect("resolved");
            if decl.key.is_some() {
                continue; // a table joined to the stream: not what the window cuts
            }
            let event_time = decl.event_time.map(|i| decl.schema.field(i).name().clone());
            if event_time.as_deref() != Some(w.time_column.as_str()) {
                let hint = match &event_time {
                    Some(t) => format!("write {t}, the event time of input {name}"),
                    None => format!("declare event_time = {:?} in input {name}", w.time_column),
                };
                return Err(self.planner.error(
                    w.at,
                    format!("windows are cut on the input's event time, and `{}` is not the event time of input {name}: {hint}", w.time_column),
                ));
            }
        }
        Ok(())
    }

    /// A join: with a table input on the right, a stream–table join; else an interval join of
    /// two streams, whose time bound comes from the join condition or the WHERE above it.
    fn join(
        &self,
        j: &datafusion::logical_expr::Join,
        where_clause: Option<&Expr>,
    ) -> Result<Step> {
        let table = table_scan_of(&j.right)
            .and_then(|n| self.planner.job.input(&n).map(|(_, i)| i.clone()));
        if !table.as_ref().is_some_and(|t| t.key.is_some()) {
            return self.stream_join(j, where_clause);
        }
        let left_outer = match j.join_type {
            JoinType::Inner => false,
            JoinType::Left => true,
            other => {
                return Err(self.unsupported(
                    "join",
                    &format!("{other} JOIN is not supported: a stream joins a table with JOIN or LEFT JOIN"),
                ));
            }
        };
        let table = table.expect("checked above");
        let key = table.key.clone().unwrap();
        let mut left_keys = vec![None; key.len()];
        for (l, r) in &j.on {
            let Expr::Column(rc) = r else {
                return Err(self.unsupported("on", "join conditions compare a stream expression with a table key column: `ON s.x = t.key`"));
            };
            let Some(pos) = key
                .iter()
                .position(|k| table.schema.field(*k).name() == &rc.name)
            else {
                return Err(self.unsupported(
                    &rc.name,
                    &format!(
                        "the table {} is keyed by [{}]: the join must match its key columns",
                        table.name,
                        key.iter()
                            .map(|k| table.schema.field(*k).name().clone())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            };
            left_keys[pos] = Some(self.physical(l, j.left.schema())?);
        }
        let Some(left_keys) = left_keys.into_iter().collect::<Option<Vec<_>>>() else {
            return Err(self.unsupported(
                "on",
                &format!(
                    "the join must match every key column of table {}",
                    table.name
                ),
            ));
        };
        let filter = match &j.filter {
            Some(f) => Some(self.physical(f, &j.schema)?),
            None => None,
        };
        Ok(Step::Join(Box::new(JoinStep {
            left: self.step(&j.left)?,
            right_schema: Arc::new(j.right.schema().as_arrow().clone()),
            right: table,
            left_keys,
            left_outer,
            filter,
            schema: Arc::new(j.schema.as_arrow().clone()),
        })))
    }
}

impl Lower<'_> {
    fn stream_join(
        &self,
        j: &datafusion::logical_expr::Join,
        where_clause: Option<&Expr>,
    ) -> Result<Step> {
        if j.join_type != JoinType::Inner {
            return Err(self.unsupported(
                "join",
                &format!(
                    "{} JOIN of two streams is not supported yet: use JOIN (inner), or make the right side a table input (key = [...])",
                    j.join_type
                ),
            ));
        }
        if j.on.is_empty() {
            return Err(self.unsupported(
                "join",
                "a join of two streams needs equal keys: `ON a.x = b.x`",
            ));
        }
        let left = self.step(&j.left)?;
        let right = self.step(&j.right)?;
        if left.is_upsert() || right.is_upsert() {
            return Err(self.unsupported("join", "a join of two streams cannot take the result of a GROUP BY without a window (an upsert stream)"));
        }
        let left_len = j.left.schema().fields().len();
        let times = TimeSides {
            left: left.time_columns(),
            right: right
                .time_columns()
                .into_iter()
                .map(|(i, o)| (i + left_len, o))
                .collect(),
            left_len,
        };
        let (mut lo, mut hi) = (i64::MIN, i64::MAX);
        let mut bound = |l: i64, h: i64| {
            lo = lo.max(l);
            hi = hi.min(h);
        };
        for (l, r) in &j.on {
            if let Some(b) = times.compare(l, r, datafusion::logical_expr::Operator::Eq, &j.schema)
            {
                bound(b.0, b.1);
            }
        }
        for e in j.filter.iter().chain(where_clause) {
            for c in datafusion::logical_expr::utils::split_conjunction(e) {
                if let Some(b) = times.bound(c, &j.schema) {
                    bound(b.0, b.1);
                }
            }
        }
        if lo == i64::MIN || hi == i64::MAX || lo > hi {
            return Err(self.unsupported(
                "join",
                "a join of two streams needs a time bound on both sides' event times, or the state would grow forever: \
                 add `AND b.ts BETWEEN a.ts - INTERVAL '10' SECOND AND a.ts + INTERVAL '10' SECOND`, \
                 or join the windows of two windowed aggregates on window_start",
            ));
        }
        let left_keys =
            j.on.iter()
                .map(|(l, _)| self.physical(l, j.left.schema()))
                .collect::<Result<Vec<_>>>()?;
        let right_keys =
            j.on.iter()
                .map(|(_, r)| self.physical(r, j.right.schema()))
                .collect::<Result<Vec<_>>>()?;
        let filter = match &j.filter {
            Some(f) => Some(self.physical(f, &j.schema)?),
            None => None,
        };
        let grace = left.window_lag().max(right.window_lag());
        Ok(Step::StreamJoin(Box::new(StreamJoinStep {
            left,
            right,
            left_keys,
            right_keys,
            before: (-lo).max(0),
            after: hi.max(0),
            grace,
            filter,
            schema: Arc::new(j.schema.as_arrow().clone()),
        })))
    }
}

/// The event-time columns of a join's two sides (right indexes shifted past the left ones).
struct TimeSides {
    left: Vec<(usize, i64)>,
    right: Vec<(usize, i64)>,
    left_len: usize,
}

impl TimeSides {
    /// `e` as `record time of a side + k`: (is right side, k).
    fn term(&self, e: &Expr, schema: &DFSchema) -> Option<(bool, i64)> {
        use datafusion::logical_expr::{BinaryExpr, Operator};
        match e {
            Expr::Cast(c) => self.term(&c.expr, schema),
            Expr::TryCast(c) => self.term(&c.expr, schema),
            Expr::Alias(a) => self.term(&a.expr, schema),
            Expr::Column(c) => {
                let idx = schema.index_of_column(c).ok()?;
                let side = idx >= self.left_len;
                let list = if side { &self.right } else { &self.left };
                list.iter()
                    .find(|(i, _)| *i == idx)
                    .map(|(_, off)| (side, *off))
            }
            Expr::BinaryExpr(BinaryExpr { left, op, right })
                if matches!(op, Operator::Plus | Operator::Minus) =>
            {
                let (side, k) = self.term(left, schema)?;
                let ms = literal_ms(right)?;
                Some((
                    side,
                    if *op == Operator::Plus {
                        k + ms
                    } else {
                        k - ms
                    },
                ))
            }
            _ => None,
        }
    }

    /// A comparison `a OP b` as a bound on right time − left time.
    fn compare(
        &self,
        a: &Expr,
        b: &Expr,
        op: datafusion::logical_expr::Operator,
        schema: &DFSchema,
    ) -> Option<(i64, i64)> {
        use datafusion::logical_expr::Operator;
        let (sa, ka) = self.term(a, schema)?;
        let (sb, kb) = self.term(b, schema)?;
        if sa == sb {
            return None;
        }
        // Written as left + kl OP right + kr, so d = right − left compares with kl − kr.
        let (op, kl, kr) = if sa {
            (op.swap()?, kb, ka)
        } else {
            (op, ka, kb)
        };
        let c = kl - kr;
        Some(match op {
            Operator::Eq => (c, c),
            Operator::LtEq => (c, i64::MAX), // left + kl <= right + kr  ⇔ d >= kl − kr
            Operator::Lt => (c + 1, i64::MAX),
            Operator::GtEq => (i64::MIN, c),
            Operator::Gt => (i64::MIN, c - 1),
            _ => return None,
        })
    }

    fn bound(&self, e: &Expr, schema: &DFSchema) -> Option<(i64, i64)> {
        use datafusion::logical_expr::{Between, BinaryExpr, Operator};
        match e {
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                self.compare(left, right, *op, schema)
            }
            Expr::Between(Between {
                expr,
                negated: false,
                low,
                high,
            }) => {
                let a = self.compare(expr, low, Operator::GtEq, schema)?;
                let b = self.compare(expr, high, Operator::LtEq, schema)?;
                Some((a.0.max(b.0), a.1.min(b.1)))
            }
            _ => None,
        }
    }
}

/// An interval (or duration) literal in milliseconds.
fn literal_ms(e: &Expr) -> Option<i64> {
    match e {
        Expr::Cast(c) => literal_ms(&c.expr),
        Expr::Literal(v, _) => scalar_ms(v),
        _ => None,
    }
}

/// An interval (or duration) value in milliseconds.
fn scalar_ms(v: &ScalarValue) -> Option<i64> {
    match v {
        ScalarValue::IntervalMonthDayNano(Some(v)) if v.months == 0 => {
            Some(v.days as i64 * 86_400_000 + v.nanoseconds / 1_000_000)
        }
        ScalarValue::IntervalDayTime(Some(v)) => {
            Some(v.days as i64 * 86_400_000 + v.milliseconds as i64)
        }
        ScalarValue::DurationMillisecond(Some(v)) => Some(*v),
        ScalarValue::DurationSecond(Some(v)) => Some(v * 1000),
        ScalarValue::DurationMicrosecond(Some(v)) => Some(v / 1000),
        ScalarValue::DurationNanosecond(Some(v)) => Some(v / 1_000_000),
        _ => None,
    }
}

fn table_scan_of(plan: &LogicalPlan) -> Option<String> {
    match plan {
        LogicalPlan::TableScan(s) => Some(s.table_name.table().to_string()),
        LogicalPlan::SubqueryAlias(a) => table_scan_of(&a.input),
        _ => None,
    }
}

/// Whether [`super::row::RowCodec`] can keep values of this type.
fn storable(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Int64
            | DataType::UInt64
            | DataType::Int32
            | DataType::Float64
            | DataType::Utf8
            | DataType::Boolean
            | DataType::Timestamp(..)
            | DataType::Null
    )
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
