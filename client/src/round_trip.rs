//! A check that a plan means the same on the scheduler as in the client.
//!
//! With [`crate::Context::check_plan_round_trip`] on, every plan the client
//! sends is also decoded here as the scheduler would decode it, and both
//! are planned physically by DataFusion; if the two physical plans read
//! differently, the query fails with both, instead of running what the
//! scheduler would have received. The sqllogictest harness turns it on, so
//! every plan of DataFusion's suite is checked.

use datafusion::catalog::Session;
use datafusion::error::Result;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::displayable;
use datafusion::physical_planner::{DefaultPhysicalPlanner, PhysicalPlanner};
use volley_dataflow::{decode_logical_plan, volley_internal};

/// Fails if `sent` (the encoding of `plan`) plans differently from `plan`.
pub(crate) async fn check_round_trip(
    plan: &LogicalPlan,
    sent: &[u8],
    session: &dyn Session,
) -> Result<()> {
    let planner = DefaultPhysicalPlanner::default();
    let Ok(original) = planner.create_physical_plan(plan, session).await else {
        // What cannot be planned here (a COPY's sink, say) is checked by
        // the scheduler's own planning.
        return Ok(());
    };
    let received = decode_logical_plan(sent, &session.task_ctx())?;
    let decoded = planner.create_physical_plan(&received, session).await?;
    let original = displayable(original.as_ref()).indent(true).to_string();
    let decoded = displayable(decoded.as_ref()).indent(true).to_string();
    if original != decoded {
        return Err(volley_internal(format!(
            "the plan changed on its way to the scheduler.\nSent:\n{original}\nReceived:\n{decoded}"
        )));
    }
    Ok(())
}
