//! Uncorrelated scalar subqueries, checked to return at most one row.
//!
//! Volley plans an uncorrelated scalar subquery such as `SELECT x FROM t
//! WHERE x > (SELECT v FROM s)` as a left join (`session_config` explains
//! why), and a join has no way to say that `s` returned two rows: the
//! query would return a row per match instead of DataFusion's "Scalar
//! subquery returned more than one row". [`SingleRowScalarSubqueries`], an
//! analyzer rule of every Volley session, therefore rewrites each such
//! subquery that is not known to return at most one row into
//!
//! ```text
//! Projection: volley_scalar_subquery_value(__volley_rows, __volley_value)
//!   Aggregate: count(1) AS __volley_rows, first_value(v) AS __volley_value
//!     <the subquery>
//! ```
//!
//! which is one row whatever the subquery returns, and whose function
//! ([`scalar_subquery_value`]) fails the query when it counted more than
//! one row. No rows give NULL, as a scalar subquery does.

use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{Array, Int64Array};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, ScalarValue, exec_err, plan_err};
use datafusion::config::ConfigOptions;
use datafusion::error::Result;
use datafusion::execution::FunctionRegistry;
use datafusion::execution::session_state::SessionState;
use datafusion::functions_aggregate::expr_fn::{count, first_value};
use datafusion::logical_expr::{
    ColumnarValue, Expr, LogicalPlan, LogicalPlanBuilder, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature, Subquery, Volatility, lit,
};
use datafusion::optimizer::AnalyzerRule;

/// The name of the check function.
pub const SCALAR_SUBQUERY_VALUE: &str = "volley_scalar_subquery_value";

static SCALAR_SUBQUERY_VALUE_UDF: LazyLock<Arc<ScalarUDF>> =
    LazyLock::new(|| Arc::new(ScalarUDF::new_from_impl(ScalarSubqueryValue::new())));

/// `volley_scalar_subquery_value(rows, value)`: `value`, or the error
/// single-node DataFusion raises when `rows` is more than one. Registered
/// in every Volley session, so executors know it by name.
pub fn scalar_subquery_value() -> Arc<ScalarUDF> {
    Arc::clone(&SCALAR_SUBQUERY_VALUE_UDF)
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct ScalarSubqueryValue {
    signature: Signature,
}

impl ScalarSubqueryValue {
    fn new() -> Self {
        Self {
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for ScalarSubqueryValue {
    fn name(&self) -> &str {
        SCALAR_SUBQUERY_VALUE
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match arg_types {
            [_, value] => Ok(value.clone()),
            _ => plan_err!("{SCALAR_SUBQUERY_VALUE} takes a row count and a value"),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [rows, value] = args.args.as_slice() else {
            return exec_err!("{SCALAR_SUBQUERY_VALUE} takes a row count and a value");
        };
        let too_many = match rows {
            ColumnarValue::Scalar(ScalarValue::Int64(Some(n))) => *n > 1,
            ColumnarValue::Scalar(_) => false,
            ColumnarValue::Array(array) => array
                .as_any()
                .downcast_ref::<Int64Array>()
                .is_some_and(|counts| counts.iter().flatten().any(|n| n > 1)),
        };
        if too_many {
            return exec_err!("Scalar subquery returned more than one row");
        }
        Ok(value.clone())
    }
}

/// The analyzer rule of the module doc.
#[derive(Debug, Default)]
pub struct SingleRowScalarSubqueries;

impl AnalyzerRule for SingleRowScalarSubqueries {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        Ok(plan
            .transform_up_with_subqueries(|node| {
                node.map_expressions(|expr| {
                    expr.transform_up(|e| match e {
                        Expr::ScalarSubquery(subquery)
                            if subquery.outer_ref_columns.is_empty()
                                && subquery.subquery.max_rows().is_none_or(|n| n > 1) =>
                        {
                            Ok(Transformed::yes(Expr::ScalarSubquery(checked(subquery)?)))
                        }
                        other => Ok(Transformed::no(other)),
                    })
                })
            })?
            .data)
    }

    fn name(&self) -> &str {
        "volley_single_row_scalar_subqueries"
    }
}

/// The subquery, made one row that fails when it would be several.
fn checked(subquery: Subquery) -> Result<Subquery> {
    let schema = subquery.subquery.schema();
    if schema.fields().len() != 1 {
        return Ok(subquery);
    }
    let (qualifier, field) = schema.qualified_field(0);
    let value = Expr::Column(Column::new(qualifier.cloned(), field.name()));
    let name = field.name().clone();
    let plan = LogicalPlanBuilder::from(subquery.subquery.as_ref().clone())
        .aggregate(
            Vec::<Expr>::new(),
            vec![
                count(lit(1)).alias("__volley_rows"),
                first_value(value, Vec::new()).alias("__volley_value"),
            ],
        )?
        .project(vec![
            scalar_subquery_value()
                .call(vec![
                    Expr::Column(Column::from_name("__volley_rows")),
                    Expr::Column(Column::from_name("__volley_value")),
                ])
                .alias(name),
        ])?
        .build()?;
    Ok(Subquery {
        subquery: Arc::new(plan),
        ..subquery
    })
}

/// Gives a session what every Volley session has beside DataFusion's:
/// the [`SingleRowScalarSubqueries`] rule and the function it calls.
pub fn install_volley_rules(state: &mut SessionState) -> Result<()> {
    state.add_analyzer_rule(Arc::new(SingleRowScalarSubqueries));
    state.register_udf(scalar_subquery_value())?;
    state.register_udf(crate::key_filter::bloom_contains())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use datafusion::execution::session_state::SessionStateBuilder;
    use datafusion::prelude::SessionContext;

    use super::*;
    use crate::session_config;

    async fn run(sql: &str) -> Result<Vec<datafusion::arrow::record_batch::RecordBatch>> {
        // Volley's settings plan the subquery as a join, as on a cluster.
        let mut state = SessionStateBuilder::new()
            .with_config(session_config())
            .with_default_features()
            .build();
        install_volley_rules(&mut state)?;
        let ctx = SessionContext::new_with_state(state);
        ctx.sql("CREATE TABLE s(v INT) AS VALUES (1), (2)")
            .await?
            .collect()
            .await?;
        ctx.sql(sql).await?.collect().await
    }

    #[tokio::test]
    async fn a_scalar_subquery_of_two_rows_fails_as_in_datafusion() {
        let err = run("SELECT (SELECT v FROM s)").await.expect_err("two rows");
        assert!(
            err.to_string()
                .contains("Scalar subquery returned more than one row"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_scalar_subquery_of_one_row_or_none_gives_its_value_or_null() -> Result<()> {
        let one = run("SELECT (SELECT v FROM s WHERE v = 2) AS x").await?;
        assert_eq!(
            datafusion::arrow::util::pretty::pretty_format_batches(&one)?.to_string(),
            "+---+\n| x |\n+---+\n| 2 |\n+---+"
        );
        let none = run("SELECT (SELECT v FROM s WHERE v = 5) AS x").await?;
        assert_eq!(none.iter().map(|b| b.num_rows()).sum::<usize>(), 1);
        assert!(none[0].column(0).is_null(0));
        Ok(())
    }
}
