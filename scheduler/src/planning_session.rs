//! The session a job is planned in. Building one from scratch constructs
//! and registers every DataFusion function, which cost more than planning
//! a short query; [`PlanningSessions`] builds it once, at start, and gives
//! each job a copy with the job's own settings, catalog and execution
//! properties, as fresh as a newly built one.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::catalog::{CatalogProviderList, MemoryCatalogProviderList};
use datafusion::config::TableOptions;
use datafusion::error::Result;
use datafusion::execution::FunctionRegistry;
use datafusion::execution::SessionStateDefaults;
use datafusion::execution::context::SessionContext;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::execution::session_state::{SessionState, SessionStateBuilder};
use datafusion::logical_expr::execution_props::ExecutionProps;
use datafusion::prelude::SessionConfig;
use volley_dataflow::{apply_settings, install_volley_rules, session_config};

use crate::partition_safety::volley_physical_optimizer_rules;

/// The setting that names a job's partitions.
const TARGET_PARTITIONS: &str = "datafusion.execution.target_partitions";
/// The setting that sizes them by input (`crate::partition_sizing`).
const PARTITION_BYTES: &str = "volley.partition_bytes";

/// Planning sessions of one scheduler: DataFusion's functions and Volley's
/// rules (`partition_safety`), over the scheduler's planning runtime.
#[derive(Debug)]
pub(crate) struct PlanningSessions {
    /// Built once; never planned in itself, only copied.
    template: SessionState,
}

impl PlanningSessions {
    /// Builds the template over `runtime` (its object stores and path rules).
    pub(crate) fn new(runtime: Arc<RuntimeEnv>) -> Self {
        Self {
            template: built(session_config(), runtime),
        }
    }

    /// The runtime jobs are planned with.
    pub(crate) fn runtime(&self) -> &Arc<RuntimeEnv> {
        self.template.runtime_env()
    }

    /// The session of a job planned for `target_partitions` partitions
    /// with the settings its client sent; a bad setting is an error naming
    /// it. A job whose settings name its partitions is not sized by its
    /// input.
    pub(crate) fn for_job(
        &self,
        target_partitions: usize,
        settings: &HashMap<String, String>,
    ) -> Result<SessionContext> {
        let mut config = apply_settings(
            session_config().with_target_partitions(target_partitions.max(1)),
            settings,
        )?;
        // A job that chose its partitions keeps them
        // (`crate::partition_sizing`), unless it also sized them.
        if settings.contains_key(TARGET_PARTITIONS) && !settings.contains_key(PARTITION_BYTES) {
            config.options_mut().set(PARTITION_BYTES, "0")?;
        }
        Ok(self.context(config))
    }

    /// A session for one job, with `config`: what building a new session
    /// with that config would give. Its catalog is its own (a script's
    /// `CREATE TABLE` is seen by no other job), its execution properties
    /// are new (so `now()` is the job's time), and functions that read the
    /// config (`now()` with `datafusion.execution.time_zone`) follow it, as
    /// DataFusion's own `SET` makes them.
    pub(crate) fn context(&self, config: SessionConfig) -> SessionContext {
        let mut state = self.template.clone();
        *state.table_options_mut() = TableOptions::default_from_session_config(config.options());
        *state.config_mut() = config;
        *state.execution_props_mut() = ExecutionProps::new();
        let catalogs: Arc<dyn CatalogProviderList> = Arc::new(MemoryCatalogProviderList::new());
        if state.config().create_default_catalog_and_schema() {
            let catalog = SessionStateDefaults::default_catalog(
                state.config(),
                state.table_factories(),
                state.runtime_env(),
            );
            catalogs.register_catalog(
                state.config().options().catalog.default_catalog.clone(),
                Arc::new(catalog),
            );
        }
        state.register_catalog_list(catalogs);
        let options = state.config().options();
        let updated: Vec<_> = state
            .scalar_functions()
            .values()
            .filter_map(|udf| udf.inner().with_updated_config(options).map(Arc::new))
            .collect();
        for udf in updated {
            // Cannot fail: registering a function only replaces a namesake.
            let _ = state.register_udf(udf);
        }
        SessionContext::new_with_state(state)
    }
}

/// A planning session built from scratch with `config`.
fn built(config: SessionConfig, runtime: Arc<RuntimeEnv>) -> SessionState {
    let mut state = SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(runtime)
        .with_default_features()
        .with_physical_optimizer_rules(volley_physical_optimizer_rules())
        .build();
    // Cannot fail: registering a function only replaces a namesake.
    let _ = install_volley_rules(&mut state);
    state
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{ArrayRef, Int64Array, RecordBatch};
    use datafusion::arrow::datatypes::{DataType, TimeUnit};
    use datafusion::error::Result;

    use super::*;

    fn sessions() -> PlanningSessions {
        PlanningSessions::new(Arc::new(RuntimeEnv::default()))
    }

    #[tokio::test]
    async fn a_table_one_jobs_session_registers_is_not_in_the_next_jobs() -> Result<()> {
        let sessions = sessions();
        let first = sessions.context(session_config());
        let xs: ArrayRef = Arc::new(Int64Array::from(vec![1, 2]));
        first.register_batch("t", RecordBatch::try_from_iter([("x", xs)])?)?;
        assert!(first.table_exist("t")?);
        let second = sessions.context(session_config());
        assert!(!second.table_exist("t")?);
        // The information schema lists the second session's tables only.
        let tables = second
            .sql("SELECT table_name FROM information_schema.tables WHERE table_name = 't'")
            .await?
            .count()
            .await?;
        assert_eq!(tables, 0);
        Ok(())
    }

    #[test]
    fn a_job_that_names_its_partitions_is_not_sized_by_its_input() -> Result<()> {
        let sessions = sessions();
        let sized = |settings: &[(&str, &str)]| -> Result<(usize, u64)> {
            let settings = settings
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let config = sessions.for_job(2, &settings)?.state().config().clone();
            let bytes = volley_dataflow::volley_options(&config).partition_bytes;
            Ok((config.target_partitions(), bytes))
        };
        let default = volley_dataflow::PARTITION_BYTES;
        assert_eq!(sized(&[])?, (2, default));
        assert_eq!(sized(&[(TARGET_PARTITIONS, "16")])?, (16, 0));
        assert_eq!(
            sized(&[(TARGET_PARTITIONS, "16"), (PARTITION_BYTES, "1000")])?,
            (16, 1000),
            "both named: both kept"
        );
        Ok(())
    }

    #[tokio::test]
    async fn a_jobs_time_zone_setting_reaches_now_as_in_a_newly_built_session() -> Result<()> {
        let sessions = sessions();
        let mut config = session_config();
        config
            .options_mut()
            .set("datafusion.execution.time_zone", "+05:00")?;
        let zoned = sessions.context(config);
        let plan = zoned.sql("SELECT now() AS t").await?;
        assert_eq!(
            plan.schema().field(0).data_type(),
            &DataType::Timestamp(TimeUnit::Nanosecond, Some("+05:00".into()))
        );
        // The template, and the next job's session, keep the default.
        let plain = sessions.context(session_config());
        let plan = plain.sql("SELECT now() AS t").await?;
        assert_ne!(
            plan.schema().field(0).data_type(),
            &DataType::Timestamp(TimeUnit::Nanosecond, Some("+05:00".into()))
        );
        Ok(())
    }

    #[tokio::test]
    async fn a_jobs_session_has_what_a_session_built_for_it_would_have() -> Result<()> {
        let sessions = sessions();
        let first = sessions.context(session_config().with_target_partitions(3));
        let second = sessions.context(session_config().with_target_partitions(7));
        assert_eq!(first.state().config().target_partitions(), 3);
        assert_eq!(second.state().config().target_partitions(), 7);
        let fresh = built(
            session_config().with_target_partitions(3),
            Arc::new(RuntimeEnv::default()),
        );
        let copied = first.state();
        let names = |functions: Vec<&String>| {
            let mut names: Vec<String> = functions.into_iter().cloned().collect();
            names.sort();
            names
        };
        assert_eq!(
            names(copied.scalar_functions().keys().collect()),
            names(fresh.scalar_functions().keys().collect())
        );
        assert_eq!(
            names(copied.aggregate_functions().keys().collect()),
            names(fresh.aggregate_functions().keys().collect())
        );
        assert_eq!(
            names(copied.window_functions().keys().collect()),
            names(fresh.window_functions().keys().collect())
        );
        let rules = |state: &SessionState| -> Vec<String> {
            state
                .physical_optimizers()
                .iter()
                .map(|rule| rule.name().to_string())
                .collect()
        };
        assert_eq!(rules(&copied), rules(&fresh));
        assert_eq!(
            copied.config().options().execution.time_zone,
            fresh.config().options().execution.time_zone
        );
        Ok(())
    }
}
