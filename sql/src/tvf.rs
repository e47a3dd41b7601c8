//! Flink's window table functions in `FROM`, for window aggregates:
//!
//! ```sql
//! SELECT auction, window_start, window_end, COUNT(*) AS bids
//! FROM TABLE(HOP(TABLE bid, DESCRIPTOR(date_time), INTERVAL '2' SECOND, INTERVAL '10' SECOND))
//! GROUP BY auction, window_start, window_end
//! ```
//!
//! - Parsing: [`Dialect`] is sqlparser's `GenericDialect` plus one expression, the data
//!   argument `TABLE <name> [PARTITION BY <key> | (<keys>)]`, parsed as the call
//!   `TABLE(<name>) OVER (PARTITION BY <keys>)`.
//! - Planning: [`rewrite_select`] turns a SELECT over `TABLE(TUMBLE | HOP | SESSION(...))` into
//!   the same SELECT over the input (with the function's alias), its `window_start, window_end`
//!   in GROUP BY replaced by `tumble(...)`, `hop(...)` or `session(...)`: the form the planner
//!   rewrites next. The AST is rewritten, not the text, so errors keep their positions.
//!
//! Only window aggregates of one such function are accepted; the rest (CUMULATE, windowed rows
//! without `GROUP BY window_start, window_end`, window joins, a session grouped by other keys
//! than its `PARTITION BY`) is refused with what to write instead.

use super::job::{JobFile, closest_hint};
use datafusion::sql::sqlparser::ast::{
    self, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr, Ident, ObjectName,
    ObjectNamePart, Spanned, TableAlias, TableFactor,
};
use datafusion::sql::sqlparser::dialect::{Dialect as SqlDialect, GenericDialect};
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::{Span, Token};
use runnel_engine::error::{EngineError, Result};
use std::any::TypeId;

/// The name of the call a `TABLE <name>` argument is parsed as.
const TABLE: &str = "TABLE";

/// The supported functions: name, parameters in Flink's order (also the names of named
/// arguments) and usage. After DATA and TIMECOL they are the arguments of our window function.
const FUNCTIONS: [(&str, &[&str], &str); 3] = [
    (
        "tumble",
        &["DATA", "TIMECOL", "SIZE"],
        "TUMBLE(TABLE <input>, DESCRIPTOR(<event time column>), INTERVAL '10' SECOND)",
    ),
    (
        "hop",
        &["DATA", "TIMECOL", "SLIDE", "SIZE"],
        "HOP(TABLE <input>, DESCRIPTOR(<event time column>), INTERVAL '<slide>' SECOND, INTERVAL '<size>' SECOND)",
    ),
    (
        "session",
        &["DATA", "TIMECOL", "GAP"],
        "SESSION(TABLE <input> [PARTITION BY <key> | (<keys>)], DESCRIPTOR(<event time column>), INTERVAL '<gap>' SECOND)",
    ),
];

/// sqlparser's `GenericDialect`, plus `TABLE <name> [PARTITION BY ...]` as an expression.
#[derive(Debug)]
pub(crate) struct Dialect;

/// Methods answered as `GenericDialect` answers them.
macro_rules! generic {
    ($($flag:ident),* $(,)?) => {
        $(fn $flag(&self) -> bool {
            GenericDialect.$flag()
        })*
    };
}

impl SqlDialect for Dialect {
    /// The parser's own dialect checks compare this id: they see `GenericDialect`.
    fn dialect(&self) -> TypeId {
        TypeId::of::<GenericDialect>()
    }

    fn is_identifier_start(&self, ch: char) -> bool {
        GenericDialect.is_identifier_start(ch)
    }

    fn is_identifier_part(&self, ch: char) -> bool {
        GenericDialect.is_identifier_part(ch)
    }

    fn is_delimited_identifier_start(&self, ch: char) -> bool {
        GenericDialect.is_delimited_identifier_start(ch)
    }

    // Every flag GenericDialect (sqlparser 0.62) sets apart from the trait's default.
    generic!(
        supports_unicode_string_literal,
        supports_partition_by_after_order_by,
        supports_array_join_syntax,
        supports_group_by_expr,
        supports_group_by_with_modifier,
        supports_left_associative_joins_without_parens,
        supports_connect_by,
        supports_match_recognize,
        supports_pipe_operator,
        supports_start_transaction_modifier,
        supports_window_function_null_treatment_arg,
        supports_dictionary_syntax,
        supports_window_clause_named_window_reference,
        supports_parenthesized_set_variables,
        supports_select_wildcard_except,
        support_map_literal_syntax,
        allow_extract_custom,
        allow_extract_single_quotes,
        supports_extract_comma_syntax,
        supports_create_view_comment_syntax,
        supports_parens_around_table_factor,
        supports_values_as_table_factor,
        supports_create_index_with_clause,
        supports_explain_with_utility_options,
        supports_limit_comma,
        supports_update_order_by,
        supports_from_first_select,
        supports_projection_trailing_commas,
        supports_asc_desc_in_column_definition,
        supports_try_convert,
        supports_bitwise_shift_operators,
        supports_comment_on,
        supports_load_extension,
        supports_named_fn_args_with_assignment_operator,
        supports_struct_literal,
        supports_empty_projections,
        supports_nested_comments,
        supports_multiline_comment_hints,
        supports_user_host_grantee,
        supports_string_escape_constant,
        supports_array_typedef_with_brackets,
        supports_match_against,
        supports_set_names,
        supports_comma_separated_set_assignments,
        supports_filter_during_aggregation,
        supports_select_wildcard_exclude,
        supports_data_type_signed_suffix,
        supports_interval_options,
        supports_quote_delimited_string,
        supports_select_wildcard_replace,
        supports_select_wildcard_ilike,
        supports_select_wildcard_rename,
        supports_optimize_table,
        supports_install,
        supports_detach,
        supports_prewhere,
        supports_with_fill,
        supports_limit_by,
        supports_interpolate,
        supports_settings,
        supports_select_format,
        supports_comment_optimizer_hint,
        supports_constraint_keyword_without_name,
        supports_key_column_option,
        supports_comma_separated_trim,
        supports_cte_without_as,
        supports_select_item_multi_column_alias,
        supports_xml_expressions,
    );

    fn parse_prefix(&self, parser: &mut Parser) -> Option<std::result::Result<Expr, ParserError>> {
        // `TABLE (...)` stays what it is elsewhere; only `TABLE <name>` is the data argument.
        let data = parser.peek_keyword(Keyword::TABLE)
            && matches!(parser.peek_nth_token_ref(1).token, Token::Word(_));
        data.then(|| data_argument(parser))
    }
}

/// `TABLE <name> [PARTITION BY <key> | (<keys>)]` as `TABLE(<name>) OVER (PARTITION BY ...)`.
fn data_argument(parser: &mut Parser) -> std::result::Result<Expr, ParserError> {
    let keyword = parser.next_token().span;
    let name = parser.parse_object_name(false)?;
    let idents = name
        .0
        .into_iter()
        .map(|part| match part {
            ObjectNamePart::Identifier(i) => Ok(i),
            other => Err(ParserError::ParserError(format!(
                "expected a table name after TABLE, found {other}"
            ))),
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    // Several keys are parenthesized (Flink's syntax): a plain list would take the next argument.
    let partition_by = if parser.parse_keywords(&[Keyword::PARTITION, Keyword::BY]) {
        match parser.parse_expr()? {
            Expr::Tuple(keys) => keys,
            Expr::Nested(key) => vec![*key],
            key => vec![key],
        }
    } else {
        vec![]
    };
    let over = (!partition_by.is_empty()).then(|| {
        ast::WindowType::WindowSpec(ast::WindowSpec {
            window_name: None,
            partition_by,
            order_by: vec![],
            window_frame: None,
        })
    });
    Ok(call(
        Ident::with_span(keyword, TABLE),
        vec![Expr::CompoundIdentifier(idents)],
        over,
    ))
}

fn call(name: Ident, args: Vec<Expr>, over: Option<ast::WindowType>) -> Expr {
    Expr::Function(ast::Function {
        name: ObjectName::from(vec![name]),
        uses_odbc_syntax: false,
        parameters: FunctionArguments::None,
        args: FunctionArguments::List(ast::FunctionArgumentList {
            duplicate_treatment: None,
            args: args
                .into_iter()
                .map(|e| FunctionArg::Unnamed(FunctionArgExpr::Expr(e)))
                .collect(),
            clauses: vec![],
        }),
        filter: None,
        null_treatment: None,
        over,
        within_group: vec![],
    })
}

/// A function's positional arguments (named ones are left out).
pub(crate) fn positional_args(f: &ast::Function) -> Vec<&Expr> {
    match &f.args {
        FunctionArguments::List(l) => l
            .args
            .iter()
            .filter_map(|a| match a {
                FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e),
                _ => None,
            })
            .collect(),
        _ => vec![],
    }
}

fn error(job: &JobFile, span: Span, message: impl std::fmt::Display) -> EngineError {
    job.sql_error(
        span.start.line as usize,
        span.start.column as usize,
        message,
    )
}

/// Rewrites a SELECT over a window table function (see the module docs); other SELECTs are
/// left as they are.
pub(crate) fn rewrite_select(job: &JobFile, select: &mut ast::Select) -> Result<()> {
    let mut found: Option<WindowFunction> = None;
    let relations = select.from.iter_mut().flat_map(|t| {
        std::iter::once(&mut t.relation).chain(t.joins.iter_mut().map(|j| &mut j.relation))
    });
    for factor in relations {
        let TableFactor::TableFunction { expr, alias } = factor else {
            continue;
        };
        if found.is_some() {
            return Err(error(
                job,
                expr.span(),
                "one window table function per SELECT: aggregate each in its own SELECT (GROUP BY window_start, window_end, ...) and join those results on window_start and window_end",
            ));
        }
        let function = WindowFunction::parse(job, expr)?;
        *factor = function.table(alias.take());
        found = Some(function);
    }
    let Some(function) = found else {
        return Ok(());
    };
    function.check_event_time(job)?;
    function.group_by_window(job, &mut select.group_by)
}

/// A call of TUMBLE, HOP or SESSION in `FROM TABLE(...)`.
struct WindowFunction {
    /// As written: errors about the window point at it.
    name: Ident,
    /// Our window function's name.
    kind: &'static str,
    table: ObjectName,
    partition_by: Vec<Expr>,
    time: Ident,
    /// The arguments after TIMECOL: the size; the slide and the size; the gap.
    intervals: Vec<Expr>,
}

impl WindowFunction {
    fn parse(job: &JobFile, expr: &Expr) -> Result<Self> {
        let Expr::Function(f) = expr else {
            return Err(error(
                job,
                expr.span(),
                "FROM TABLE(...) takes a window function: TUMBLE, HOP or SESSION",
            ));
        };
        let name = f.name.0.last().and_then(|p| p.as_ident()).cloned();
        let name = name.unwrap_or_else(|| Ident::with_span(f.span(), f.name.to_string()));
        let written = name.value.to_uppercase();
        let Some(&(kind, params, usage)) = FUNCTIONS
            .iter()
            .find(|(k, ..)| k.eq_ignore_ascii_case(&name.value))
        else {
            let message = if written == "CUMULATE" {
                "CUMULATE windows are not supported: use HOP (a window of the size every slide) or TUMBLE".to_string()
            } else {
                format!(
                    "unknown window table function {written}{}: use TUMBLE, HOP or SESSION",
                    closest_hint(&written, FUNCTIONS.iter().map(|(k, ..)| *k))
                )
            };
            return Err(error(job, name.span, message));
        };
        let usage_error = |span: Span, what: &str| error(job, span, format!("{what}: {usage}"));
        let takes = format!("{written} takes {}", params.join(", "));
        let args = match &f.args {
            FunctionArguments::List(l) => l.args.as_slice(),
            _ => &[],
        };
        let bound = bind(params, args).map_err(|span| usage_error(span, &takes))?;
        let Some(bound) = bound.into_iter().collect::<Option<Vec<&Expr>>>() else {
            return Err(usage_error(name.span, &takes));
        };
        let Some((table, partition_by)) = data(bound[0]) else {
            return Err(usage_error(
                bound[0].span(),
                "the data is an input: TABLE <input>",
            ));
        };
        if kind != "session" && !partition_by.is_empty() {
            return Err(error(
                job,
                partition_by[0].span(),
                format!(
                    "PARTITION BY belongs to SESSION: a {written} window does not depend on other rows, drop it (GROUP BY the keys)"
                ),
            ));
        }
        let Some(time) = descriptor(bound[1]) else {
            return Err(usage_error(
                bound[1].span(),
                "the time column is given as DESCRIPTOR(<event time column>)",
            ));
        };
        Ok(Self {
            kind,
            table,
            partition_by,
            time,
            intervals: bound[2..].iter().map(|e| (*e).clone()).collect(),
            name,
        })
    }

    /// The input in place of the function.
    fn table(&self, alias: Option<TableAlias>) -> TableFactor {
        TableFactor::Table {
            name: self.table.clone(),
            alias,
            args: None,
            with_hints: vec![],
            version: None,
            with_ordinality: false,
            partitions: vec![],
            json_path: None,
            sample: None,
            index_hints: vec![],
        }
    }

    /// The window is cut on the input's event time, the column its watermark is declared on.
    fn check_event_time(&self, job: &JobFile) -> Result<()> {
        let table = self.table.0.last().and_then(|p| p.as_ident());
        // An unknown table is reported by the planner, with the closest input names.
        let Some((_, input)) = table.and_then(|t| job.input(&t.value)) else {
            return Ok(());
        };
        let declared = input.event_time.map(|i| input.schema.field(i).name());
        let time = &self.time.value;
        let message = match declared {
            Some(column) if column == time => return Ok(()),
            Some(column) => format!(
                "DESCRIPTOR({time}): the watermark of input {} is declared on its event_time column {column}: write DESCRIPTOR({column})",
                input.name
            ),
            None => format!(
                "DESCRIPTOR({time}): input {} declares no event_time (its watermark follows the record timestamps): declare event_time = {time:?} in its [[input]]",
                input.name
            ),
        };
        Err(error(job, self.time.span, message))
    }

    /// `GROUP BY ..., window_start, window_end` → `GROUP BY ..., <our window function>(...)`.
    fn group_by_window(&self, job: &JobFile, group_by: &mut GroupByExpr) -> Result<()> {
        let written = self.name.value.to_uppercase();
        let not_aggregated = || {
            error(
                job,
                self.name.span,
                format!(
                    "{written}(...) is supported in window aggregates only: GROUP BY window_start, window_end (and any keys) in the same SELECT; to join windows, join two such aggregates on window_start and window_end"
                ),
            )
        };
        let GroupByExpr::Expressions(exprs, _) = group_by else {
            return Err(not_aggregated());
        };
        let position = |column: &str| {
            exprs
                .iter()
                .position(|e| column_name(e).as_deref() == Some(column))
        };
        let (Some(start), Some(end)) = (position("window_start"), position("window_end")) else {
            return Err(not_aggregated());
        };
        if self.kind == "session" {
            self.check_session_keys(job, exprs, [start, end])?;
        }
        exprs[start.min(end)] = self.window_call();
        exprs.remove(start.max(end));
        Ok(())
    }

    /// Our sessions are per group key; Flink's are per PARTITION BY key, then grouped: the
    /// same when the keys are the same, and refused otherwise.
    fn check_session_keys(&self, job: &JobFile, exprs: &[Expr], window: [usize; 2]) -> Result<()> {
        let key_name = |e: &Expr| column_name(e).unwrap_or_else(|| e.to_string());
        let mut keys: Vec<String> = exprs
            .iter()
            .enumerate()
            .filter(|(i, _)| !window.contains(i))
            .map(|(_, e)| key_name(e))
            .collect();
        let mut partition: Vec<String> = self.partition_by.iter().map(key_name).collect();
        keys.sort();
        partition.sort();
        if keys == partition {
            return Ok(());
        }
        let (table, keys, partition) = (&self.table, keys.join(", "), partition.join(", "));
        let message = if partition.is_empty() {
            format!(
                "a SESSION without PARTITION BY cuts sessions over all rows of {table}, and grouping them by {keys} too is not supported: for sessions per key write SESSION(TABLE {table} PARTITION BY {keys}, ...)"
            )
        } else {
            format!(
                "SESSION(TABLE {table} PARTITION BY {partition}, ...) cuts sessions per {partition}: group by exactly those keys (GROUP BY window_start, window_end, {partition})"
            )
        };
        Err(error(job, self.name.span, message))
    }

    /// `tumble(ts, size)`, `hop(ts, slide, size)` or `session(ts, gap)`, placed at the function.
    fn window_call(&self) -> Expr {
        let args = std::iter::once(Expr::Identifier(self.time.clone()))
            .chain(self.intervals.iter().cloned())
            .collect();
        call(Ident::with_span(self.name.span, self.kind), args, None)
    }
}

/// The arguments bound to `params`, by position or by name (`SIZE => ...`); else the span of
/// the first argument that fits no free parameter.
fn bind<'a>(
    params: &[&str],
    args: &'a [FunctionArg],
) -> std::result::Result<Vec<Option<&'a Expr>>, Span> {
    let mut bound = vec![None; params.len()];
    for (i, arg) in args.iter().enumerate() {
        let (slot, value) = match arg {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => (Some(i), e),
            FunctionArg::Named {
                name,
                arg: FunctionArgExpr::Expr(e),
                ..
            } => (
                params
                    .iter()
                    .position(|p| p.eq_ignore_ascii_case(&name.value)),
                e,
            ),
            _ => return Err(arg.span()),
        };
        match slot.and_then(|s| bound.get_mut(s)) {
            Some(free @ None) => *free = Some(value),
            _ => return Err(arg.span()),
        }
    }
    Ok(bound)
}

/// The table and partition keys of a data argument (see [`data_argument`]).
fn data(e: &Expr) -> Option<(ObjectName, Vec<Expr>)> {
    let Expr::Function(f) = e else {
        return None;
    };
    if f.name.to_string() != TABLE {
        return None;
    }
    let table = match positional_args(f).as_slice() {
        [Expr::CompoundIdentifier(parts)] => ObjectName::from(parts.clone()),
        _ => return None,
    };
    let partition_by = match &f.over {
        Some(ast::WindowType::WindowSpec(w)) => w.partition_by.clone(),
        _ => vec![],
    };
    Some((table, partition_by))
}

/// The column of `DESCRIPTOR(<column>)`.
fn descriptor(e: &Expr) -> Option<Ident> {
    let Expr::Function(f) = e else {
        return None;
    };
    if !f.name.to_string().eq_ignore_ascii_case("descriptor") {
        return None;
    }
    match positional_args(f).as_slice() {
        [Expr::Identifier(i)] => Some(i.clone()),
        [Expr::CompoundIdentifier(parts)] => parts.last().cloned(),
        _ => None,
    }
}

/// The column an expression names (unquoted names fold to lower case, as in DataFusion).
fn column_name(e: &Expr) -> Option<String> {
    let ident = match e {
        Expr::Identifier(i) => i,
        Expr::CompoundIdentifier(parts) => parts.last()?,
        _ => return None,
    };
    Some(match ident.quote_style {
        Some(_) => ident.value.clone(),
        None => ident.value.to_lowercase(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const INPUTS: &str = r#"
[[input]]
name = "bid"
schema = "auction BIGINT, bidder BIGINT, price BIGINT, date_time TIMESTAMP"
event_time = "date_time"
"#;

    fn select(sql: &str) -> ast::Select {
        let mut stmts = Parser::parse_sql(&Dialect, sql).unwrap();
        let ast::Statement::Query(q) = stmts.remove(0) else {
            panic!("not a query: {sql}");
        };
        let ast::SetExpr::Select(s) = *q.body else {
            panic!("not a SELECT: {sql}");
        };
        *s
    }

    /// The SELECT rewritten, or the error (the SQL starts on line 4 of the job file).
    fn rewrite(sql: &str) -> std::result::Result<String, String> {
        let toml = format!("[job]\nname = \"j\"\nsql = \"\"\"\n{sql}\n\"\"\"\n{INPUTS}");
        let job = JobFile::parse(Path::new("job.toml"), &toml).unwrap();
        let mut s = select(sql);
        rewrite_select(&job, &mut s).map_err(|e| e.to_string())?;
        Ok(s.to_string())
    }

    #[test]
    fn the_data_argument_needs_this_dialect() {
        let sql = "SELECT * FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(date_time), INTERVAL '10' SECOND)) AS t";
        assert!(Parser::parse_sql(&GenericDialect, sql).is_err());
        let s = select(sql);
        let TableFactor::TableFunction { expr, alias } = &s.from[0].relation else {
            panic!("{:?}", s.from[0].relation);
        };
        assert_eq!(alias.as_ref().unwrap().name.value, "t");
        assert_eq!(
            expr.to_string(),
            "TUMBLE(TABLE(bid), DESCRIPTOR(date_time), INTERVAL '10' SECOND)"
        );
        let session = select(
            "SELECT * FROM TABLE(SESSION(TABLE bid PARTITION BY (bidder, auction), DESCRIPTOR(date_time), INTERVAL '5' SECOND))",
        );
        let TableFactor::TableFunction { expr, .. } = &session.from[0].relation else {
            panic!("{:?}", session.from[0].relation);
        };
        assert_eq!(
            expr.to_string(),
            "SESSION(TABLE(bid) OVER (PARTITION BY bidder, auction), DESCRIPTOR(date_time), INTERVAL '5' SECOND)"
        );
    }

    #[test]
    fn window_aggregates_become_group_by_windows() {
        assert_eq!(
            rewrite(
                "SELECT auction, window_start, COUNT(*) AS n FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(date_time), INTERVAL '10' SECOND)) AS t GROUP BY window_start, auction, t.window_end"
            ),
            Ok("SELECT auction, window_start, COUNT(*) AS n FROM bid AS t GROUP BY tumble(date_time, INTERVAL '10' SECOND), auction".into())
        );
        assert_eq!(
            rewrite(
                "SELECT COUNT(*) FROM TABLE(HOP(DATA => TABLE bid, TIMECOL => DESCRIPTOR(date_time), SIZE => INTERVAL '10' SECOND, SLIDE => INTERVAL '2' SECOND)) GROUP BY window_start, window_end"
            ),
            Ok("SELECT COUNT(*) FROM bid GROUP BY hop(date_time, INTERVAL '2' SECOND, INTERVAL '10' SECOND)".into())
        );
        assert_eq!(
            rewrite(
                "SELECT bidder, COUNT(*) FROM TABLE(SESSION(TABLE bid PARTITION BY bidder, DESCRIPTOR(date_time), INTERVAL '5' SECOND)) GROUP BY bidder, window_start, window_end"
            ),
            Ok("SELECT bidder, COUNT(*) FROM bid GROUP BY bidder, session(date_time, INTERVAL '5' SECOND)".into())
        );
        assert_eq!(
            rewrite("SELECT COUNT(*) FROM bid GROUP BY tumble(date_time, INTERVAL '1' SECOND)"),
            Ok("SELECT COUNT(*) FROM bid GROUP BY tumble(date_time, INTERVAL '1' SECOND)".into())
        );
    }

    #[test]
    fn what_is_not_a_window_aggregate_is_refused_where_it_is_written() {
        let refused = |sql: &str| rewrite(sql).unwrap_err();
        assert_eq!(
            refused(
                "SELECT * FROM\n  TABLE(TUMBLE(TABLE bid, DESCRIPTOR(date_time), INTERVAL '10' SECOND))"
            ),
            "job.toml:5:9: TUMBLE(...) is supported in window aggregates only: GROUP BY window_start, window_end (and any keys) in the same SELECT; to join windows, join two such aggregates on window_start and window_end"
        );
        assert!(refused(
            "SELECT COUNT(*) FROM TABLE(CUMULATE(TABLE bid, DESCRIPTOR(date_time), INTERVAL '2' SECOND, INTERVAL '10' SECOND)) GROUP BY window_start, window_end"
        )
        .starts_with("job.toml:4:28: CUMULATE windows are not supported"));
        assert!(
            refused("SELECT COUNT(*) FROM TABLE(TUMBEL(TABLE bid, DESCRIPTOR(date_time), INTERVAL '2' SECOND)) GROUP BY window_start, window_end")
                .contains("unknown window table function TUMBEL (did you mean \"tumble\"?)")
        );
        assert_eq!(
            refused(
                "SELECT COUNT(*) FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(price), INTERVAL '2' SECOND)) GROUP BY window_start, window_end"
            ),
            "job.toml:4:57: DESCRIPTOR(price): the watermark of input bid is declared on its event_time column date_time: write DESCRIPTOR(date_time)"
        );
        assert!(
            refused("SELECT bidder, COUNT(*) FROM TABLE(SESSION(TABLE bid, DESCRIPTOR(date_time), INTERVAL '5' SECOND)) GROUP BY bidder, window_start, window_end")
                .contains("for sessions per key write SESSION(TABLE bid PARTITION BY bidder, ...)")
        );
        assert!(
            refused("SELECT COUNT(*) FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(date_time))) GROUP BY window_start, window_end")
                .ends_with("TUMBLE takes DATA, TIMECOL, SIZE: TUMBLE(TABLE <input>, DESCRIPTOR(<event time column>), INTERVAL '10' SECOND)")
        );
        assert!(
            refused("SELECT COUNT(*) FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(date_time), INTERVAL '1' SECOND)) a JOIN TABLE(TUMBLE(TABLE bid, DESCRIPTOR(date_time), INTERVAL '1' SECOND)) b ON a.auction = b.auction GROUP BY a.window_start, a.window_end")
                .contains("one window table function per SELECT")
        );
    }
}
