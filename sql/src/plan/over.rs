//! Planning `f(...) OVER (PARTITION BY ... ORDER BY ... <frame>)`: DataFusion's
//! `LogicalPlan::Window` → [`OverStep`] (run by [`crate::over`]).
//!
//! Accepted: every DataFusion aggregate function and `ROW_NUMBER()`, any `PARTITION BY`
//! expressions, `ORDER BY` columns, and frames that end at the current row: `ROWS BETWEEN n
//! PRECEDING`, `ROWS BETWEEN UNBOUNDED PRECEDING`, `RANGE BETWEEN UNBOUNDED PRECEDING` (the
//! default with `ORDER BY`) and `RANGE BETWEEN <interval or number> PRECEDING` (one `ORDER BY`
//! column, a timestamp or an integer), each `AND CURRENT ROW`. The window functions of one
//! `SELECT` share one window. Over a stream (not an upsert stream) the first `ORDER BY`
//! column is its event time, ascending: rows are taken in that order once the watermark
//! passed them. Everything else is refused with what to write instead.

use super::lower::{Lower, scalar_ms, storable};
use super::{PhysExpr, Step};
use datafusion::arrow::compute::SortOptions;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::ScalarValue;
use datafusion::common::tree_node::TreeNode;
use datafusion::logical_expr::expr::{AggregateFunction, WindowFunction, WindowFunctionParams};
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{
    Expr, LogicalPlan, Window, WindowFrame, WindowFrameBound, WindowFrameUnits,
    WindowFunctionDefinition,
};
use datafusion::physical_expr::aggregate::{AggregateFunctionExpr, LoweredAggregateBuilder};
use runnel_engine::error::{EngineError, Result};
use std::sync::Arc;

/// The rows an OVER window's functions see for the current row. Frames end at the current
/// row (for `RANGE`, at its last peer: the rows with equal `ORDER BY` values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// `ROWS BETWEEN n PRECEDING AND CURRENT ROW`; `None`: `UNBOUNDED PRECEDING`.
    Rows(Option<usize>),
    /// `RANGE BETWEEN v PRECEDING AND CURRENT ROW`: the rows whose `ORDER BY` value is within
    /// `v` of the current row's (milliseconds for a timestamp); `None`: `UNBOUNDED PRECEDING`.
    Range(Option<i64>),
}

impl std::fmt::Display for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (units, start) = match self {
            Frame::Rows(n) => ("ROWS", n.map(|n| n.to_string())),
            Frame::Range(v) => ("RANGE", v.map(|v| v.to_string())),
        };
        let start = start.unwrap_or_else(|| "UNBOUNDED".to_string());
        write!(f, "{units} BETWEEN {start} PRECEDING AND CURRENT ROW")
    }
}

impl Frame {
    /// Whether the frame's first row moves on (its functions must take rows back out).
    pub fn bounded(&self) -> bool {
        matches!(self, Frame::Rows(Some(_)) | Frame::Range(Some(_)))
    }
}

/// One window column.
pub enum OverFunction {
    Aggregate(Arc<AggregateFunctionExpr>),
    RowNumber,
}

/// A window: the input's rows, each followed by the window functions over its frame.
pub struct OverStep {
    pub input: Step,
    pub partition_by: Vec<PhysExpr>,
    /// Names of the partition expressions (the record key of a result over a stream).
    pub partition_names: Vec<String>,
    /// `ORDER BY` columns of the input, with their direction.
    pub order_by: Vec<(usize, SortOptions)>,
    pub frame: Frame,
    pub functions: Vec<OverFunction>,
    pub schema: SchemaRef,
}

impl OverStep {
    pub(super) fn describe(&self) -> String {
        let functions: Vec<String> = self
            .functions
            .iter()
            .map(|f| match f {
                OverFunction::Aggregate(a) => a.name().to_string(),
                OverFunction::RowNumber => "row_number".to_string(),
            })
            .collect();
        let input = self.input.schema();
        let order: Vec<String> = self
            .order_by
            .iter()
            .map(|(c, o)| {
                let dir = if o.descending { " DESC" } else { "" };
                format!("{}{dir}", input.field(*c).name())
            })
            .collect();
        format!(
            "Over [{}] partition by [{}] order by [{}] {}{} → {}",
            functions.join(", "),
            self.partition_names.join(", "),
            order.join(", "),
            self.frame,
            if matches!(self.frame, Frame::Range(Some(_))) {
                " (milliseconds for a timestamp)"
            } else {
                ""
            },
            if self.input.is_upsert() {
                "upsert stream keyed as its input: the rows whose frame a change touched"
            } else {
                "append stream, one row per input row once the watermark passed it"
            }
        )
    }
}

fn window_function(e: &Expr) -> Option<&WindowFunction> {
    match e {
        Expr::Alias(a) => window_function(&a.expr),
        Expr::WindowFunction(w) => Some(w),
        _ => None,
    }
}

/// Whether two window functions use the same window (ROW_NUMBER ignores the frame).
fn same_window(a: &WindowFunctionParams, b: &WindowFunctionParams, frames: bool) -> bool {
    a.partition_by == b.partition_by
        && a.order_by == b.order_by
        && (!frames || a.window_frame == b.window_frame)
}

impl Lower<'_> {
    pub(super) fn over(&self, w: &Window) -> Result<Step> {
        const ONE_WINDOW: &str = "the window functions of one SELECT must share one window (the same PARTITION BY, ORDER BY and frame): split the query into two statements, or name the window once with WINDOW w AS (...) and write OVER w";
        if w.input
            .exists(|p| Ok(matches!(p, LogicalPlan::Window(_))))
            .unwrap_or(false)
        {
            return Err(self.unsupported("over", ONE_WINDOW));
        }
        let input = self.step(&w.input)?;
        let input_schema = w.input.schema();
        let mut first: Option<&WindowFunctionParams> = None;
        let mut functions = Vec::new();
        for e in &w.window_expr {
            let Some(f) = window_function(e) else {
                return Err(
                    self.unsupported("over", &format!("cannot plan window expression `{e}`"))
                );
            };
            let p = &f.params;
            if p.filter.is_some() || p.distinct {
                return Err(self.unsupported(
                    "over",
                    "DISTINCT and FILTER (WHERE ...) are not supported in OVER windows: filter in a subquery first",
                ));
            }
            let function = match &f.fun {
                WindowFunctionDefinition::AggregateUDF(udaf) => {
                    let call = Expr::AggregateFunction(AggregateFunction::new_udf(
                        udaf.clone(),
                        p.args.clone(),
                        false,
                        None,
                        vec![],
                        None,
                    ));
                    let planning = PhysicalPlanningContext::default();
                    let lowered = LoweredAggregateBuilder::new(
                        &call,
                        input_schema,
                        input_schema.as_arrow(),
                        self.state.execution_props(),
                        &planning,
                    )
                    .build()
                    .map_err(|err| {
                        self.planner
                            .error(0, format!("cannot plan `{e}`: {}", err.strip_backtrace()))
                    })?;
                    OverFunction::Aggregate(lowered.aggregate)
                }
                WindowFunctionDefinition::WindowUDF(udwf) if udwf.name() == "row_number" => {
                    OverFunction::RowNumber
                }
                WindowFunctionDefinition::WindowUDF(udwf) => {
                    return Err(self.unsupported(
                        udwf.name(),
                        &format!(
                            "the window function {}() is not supported in streaming jobs: use ROW_NUMBER() or an aggregate function (COUNT, SUM, AVG, MIN, MAX, ...) OVER (...)",
                            udwf.name().to_uppercase()
                        ),
                    ));
                }
            };
            let is_aggregate = matches!(function, OverFunction::Aggregate(_));
            match first {
                Some(q) if !same_window(q, p, is_aggregate) => {
                    return Err(self.unsupported("over", ONE_WINDOW));
                }
                None if is_aggregate => first = Some(p),
                _ => {}
            }
            functions.push((function, p));
        }
        // The window of the aggregates, or of ROW_NUMBER when it is alone (its frame is moot).
        let params = first.unwrap_or(functions[0].1);
        if params.order_by.is_empty() {
            return Err(self.unsupported(
                "over",
                "an OVER window in a streaming job needs ORDER BY (the rows of a partition arrive forever, so a frame is counted back from the current row): write OVER (PARTITION BY ... ORDER BY <event time> ROWS BETWEEN n PRECEDING AND CURRENT ROW)",
            ));
        }
        let frame = match first {
            Some(p) => self.frame(&p.window_frame, &p.order_by, input_schema)?,
            None => Frame::Rows(Some(0)),
        };
        let order_by = self.order_by(params, &input, input_schema)?;
        let partition_by = params
            .partition_by
            .iter()
            .map(|e| self.physical(e, input_schema))
            .collect::<Result<Vec<_>>>()?;
        let partition_names = params
            .partition_by
            .iter()
            .map(|e| match e {
                Expr::Column(c) => c.name.clone(),
                other => other.schema_name().to_string(),
            })
            .collect();
        let functions: Vec<OverFunction> = functions.into_iter().map(|(f, _)| f).collect();
        for f in &functions {
            if let OverFunction::Aggregate(a) = f {
                self.check_over_aggregate(a, frame, input.is_upsert(), input_schema.as_arrow())?;
            }
        }
        Ok(Step::Over(Box::new(OverStep {
            input,
            partition_by,
            partition_names,
            order_by,
            frame,
            functions,
            schema: Arc::new(w.schema.as_arrow().clone()),
        })))
    }

    /// The `ORDER BY` columns; over a stream, led by its event time.
    fn order_by(
        &self,
        p: &WindowFunctionParams,
        input: &Step,
        schema: &datafusion::common::DFSchema,
    ) -> Result<Vec<(usize, SortOptions)>> {
        let mut order = Vec::new();
        for s in &p.order_by {
            let Expr::Column(c) = &s.expr else {
                return Err(self.unsupported(
                    "order",
                    &format!(
                        "ORDER BY in OVER (...) takes columns, not `{}`: compute it in a subquery and order by its column",
                        s.expr
                    ),
                ));
            };
            let idx = schema
                .index_of_column(c)
                .map_err(|e| EngineError::Job(e.to_string()))?;
            order.push((
                idx,
                SortOptions {
                    descending: !s.asc,
                    nulls_first: s.nulls_first,
                },
            ));
        }
        let times = input.time_columns();
        let (lead, lead_options) = order[0];
        if !input.is_upsert() && (lead_options.descending || !times.iter().any(|(t, _)| *t == lead))
        {
            let names: Vec<&str> = times
                .iter()
                .map(|(t, _)| schema.field(*t).name().as_str())
                .collect();
            let hint = match names.as_slice() {
                [] => "declare the input's event_time in the TOML".to_string(),
                names => format!("write ORDER BY {} (ascending)", names.join(" or ")),
            };
            return Err(self.unsupported(
                "order",
                &format!(
                    "an OVER window over a stream is ordered by its event time first, ascending (rows are taken in that order once the watermark passes them), and `{}` is not it: {hint}",
                    schema.field(lead).name()
                ),
            ));
        }
        Ok(order)
    }

    fn frame(
        &self,
        f: &WindowFrame,
        order_by: &[datafusion::logical_expr::SortExpr],
        schema: &datafusion::common::DFSchema,
    ) -> Result<Frame> {
        if !matches!(f.end_bound, WindowFrameBound::CurrentRow) {
            return Err(self.unsupported(
                "following",
                "OVER frames in streaming jobs end at the current row (a FOLLOWING row has not arrived yet): write ROWS BETWEEN n PRECEDING AND CURRENT ROW",
            ));
        }
        let preceding = match &f.start_bound {
            WindowFrameBound::Preceding(v) if v.is_null() => None,
            WindowFrameBound::Preceding(v) => Some(v.clone()),
            WindowFrameBound::CurrentRow => Some(ScalarValue::UInt64(Some(0))),
            WindowFrameBound::Following(_) => {
                return Err(self.unsupported(
                    "following",
                    "an OVER frame cannot start after the current row: write ROWS BETWEEN n PRECEDING AND CURRENT ROW",
                ));
            }
        };
        match f.units {
            WindowFrameUnits::Rows => {
                let n = match &preceding {
                    None => None,
                    Some(v) => Some(
                        match v {
                            ScalarValue::UInt64(Some(n)) => usize::try_from(*n).ok(),
                            ScalarValue::Int64(Some(n)) => usize::try_from(*n).ok(),
                            _ => None,
                        }
                        .ok_or_else(|| {
                            self.unsupported("rows", &format!("ROWS BETWEEN takes a row count, not `{v}`"))
                        })?,
                    ),
                };
                Ok(Frame::Rows(n))
            }
            WindowFrameUnits::Range => {
                let Some(v) = preceding else {
                    return Ok(Frame::Range(None));
                };
                let column = order_by
                    .first()
                    .and_then(|s| match &s.expr {
                        Expr::Column(c) => schema.qualified_field_from_column(c).ok().map(|(_, f)| f),
                        _ => None,
                    })
                    .map(|f| f.data_type().clone());
                let ms = match (column, v) {
                    (Some(DataType::Timestamp(..)), v) => scalar_ms(&v),
                    (Some(DataType::Int64 | DataType::Int32), ScalarValue::UInt64(Some(n))) => {
                        i64::try_from(n).ok()
                    }
                    (Some(DataType::Int64 | DataType::Int32), ScalarValue::Int64(Some(n))) => {
                        Some(n)
                    }
                    _ => None,
                };
                match ms {
                    Some(ms) if order_by.len() == 1 => Ok(Frame::Range(Some(ms))),
                    _ => Err(self.unsupported(
                        "range",
                        "RANGE BETWEEN <v> PRECEDING needs one ORDER BY column, a timestamp (v an INTERVAL) or an integer (v a number): write ORDER BY ts RANGE BETWEEN INTERVAL '10' SECOND PRECEDING AND CURRENT ROW",
                    )),
                }
            }
            WindowFrameUnits::Groups => Err(self.unsupported(
                "groups",
                "GROUPS frames are not supported in streaming jobs: write ROWS or RANGE BETWEEN ... PRECEDING AND CURRENT ROW",
            )),
        }
    }

    /// A frame that moves on takes rows back out; one that grows over a stream keeps its
    /// accumulator states in the store.
    fn check_over_aggregate(
        &self,
        a: &AggregateFunctionExpr,
        frame: Frame,
        upsert: bool,
        input: &datafusion::arrow::datatypes::Schema,
    ) -> Result<()> {
        let name = a.fun().name();
        if frame.bounded() {
            let slides = a
                .create_sliding_accumulator()
                .is_ok_and(|acc| acc.supports_retract_batch());
            if !slides {
                return Err(self.unsupported(
                    name,
                    &format!(
                        "{} cannot take a row back out of a frame that moves on: use ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW, or COUNT, SUM, AVG, MIN or MAX",
                        name.to_uppercase()
                    ),
                ));
            }
        } else if !upsert {
            let states = a
                .state_fields()
                .map_err(|err| EngineError::Job(err.to_string()))?;
            if let Some(bad) = states.iter().find(|s| !storable(s.data_type())) {
                return Err(self.unsupported(
                    name,
                    &format!(
                        "{} keeps a state of type {} that streaming jobs cannot store yet (supported: COUNT, SUM, AVG, MIN, MAX, and others with scalar states)",
                        name.to_uppercase(),
                        bad.data_type()
                    ),
                ));
            }
        }
        for e in a.expressions() {
            let t = e
                .data_type(input)
                .map_err(|err| EngineError::Job(err.to_string()))?;
            if !storable(&t) {
                return Err(self.unsupported(
                    name,
                    &format!("the arguments of {} OVER (...) are of type {t}, which streaming jobs cannot keep in a window yet: CAST them to BIGINT, DOUBLE or VARCHAR", name.to_uppercase()),
                ));
            }
        }
        Ok(())
    }
}
