//! Lowering joins: a stream with a table (on the table's key), and two streams within a time
//! bound on their event times (an interval join), the bound read from the join condition and
//! the `WHERE` above it ([`TimeSides`]).

use super::lower::{Lower, scalar_ms};
use super::{JoinStep, Step, StreamJoinStep};
use datafusion::common::{DFSchema, JoinType};
use datafusion::logical_expr::{Expr, LogicalPlan};
use runnel_engine::error::Result;
use std::sync::Arc;

impl Lower<'_> {
    /// A join: with a table input on the right, a stream–table join; else an interval join of
    /// two streams, whose time bound comes from the join condition or the WHERE above it.
    pub(super) fn join(
        &self,
        j: &datafusion::logical_expr::Join,
        where_clause: Option<&Expr>,
    ) -> Result<Step> {
        let table = table_scan_of(&j.right)
            .and_then(|n| self.planner.job.input(&n).map(|(_, i)| i.clone()));
        if table.as_ref().is_none_or(|t| t.key.is_none()) {
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

fn table_scan_of(plan: &LogicalPlan) -> Option<String> {
    match plan {
        LogicalPlan::TableScan(s) => Some(s.table_name.table().to_string()),
        LogicalPlan::SubqueryAlias(a) => table_scan_of(&a.input),
        _ => None,
    }
}
