//! From a DataFusion logical plan to the tree of streaming [`Step`]s: scans, filters,
//! projections, unions and aggregates here, joins in [`super::joins`], `OVER` in
//! [`super::over`].

use super::{AggregateStep, GroupColumn, PhysExpr, StatementPlanner, Step, WindowSpec, WindowUse};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::tree_node::TreeNode;
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::physical_expr::aggregate::LoweredAggregateBuilder;
use runnel_engine::error::{EngineError, Result};
use std::sync::Arc;

pub(super) struct Lower<'a> {
    pub(super) planner: &'a StatementPlanner<'a>,
    pub(super) state: &'a datafusion::execution::SessionState,
    pub(super) window: Option<&'a WindowUse>,
}

impl Lower<'_> {
    pub(super) fn physical(&self, e: &Expr, schema: &DFSchema) -> Result<PhysExpr> {
        self.state
            .create_physical_expr(e.clone(), schema)
            .map_err(|err| {
                self.planner.error(
                    0,
                    format!("cannot evaluate `{e}`: {}", err.strip_backtrace()),
                )
            })
    }

    pub(super) fn unsupported(&self, word: &str, msg: &str) -> EngineError {
        self.planner.error(self.planner.find_word(word), msg)
    }

    pub(super) fn step(&self, plan: &LogicalPlan) -> Result<Step> {
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
                    group_columns.push(GroupColumn::WindowStart)
                }
                Expr::Column(c) if windowed_here && c.name == "window_end" => {
                    group_columns.push(GroupColumn::WindowEnd)
                }
                Expr::GroupingSet(_) => {
                    return Err(self.unsupported(
                        "grouping",
                        "GROUPING SETS, CUBE and ROLLUP are not supported in streaming jobs",
                    ));
                }
                e => {
                    group_columns.push(GroupColumn::Key(keys.len()));
                    keys.push(self.physical(e, input_schema)?);
                    key_names.push(out_fields[i].name().clone());
                }
            }
        }
        let window = match (
            self.window,
            group_columns
                .iter()
                .any(|c| !matches!(c, GroupColumn::Key(_))),
        ) {
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
}

/// An interval (or duration) value in milliseconds.
pub(super) fn scalar_ms(v: &ScalarValue) -> Option<i64> {
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

/// Whether [`crate::row::RowCodec`] can keep values of this type.
pub(super) fn storable(t: &DataType) -> bool {
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
