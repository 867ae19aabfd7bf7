//! `CREATE EXTERNAL TABLE` in the client, with errors that name the file.
//!
//! The client registers external tables itself (their schema is inferred
//! here, from the files). When that fails on a corrupt or unreadable file,
//! DataFusion's error (say "Parquet error: Invalid Parquet file. Corrupt
//! footer") does not say which file of the location it was. Every table
//! factory of a Volley session is wrapped in a [`NamingTableFactory`],
//! which then reads the location's files one by one and names the first
//! that fails.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider, TableProviderFactory};
use datafusion::datasource::listing::ListingTableUrl;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::CreateExternalTable;
use futures::{StreamExt, TryStreamExt};

/// Files read one by one at most, to name a failing one.
const MAX_FILES_CHECKED: usize = 1000;

/// A table factory whose file errors name the file (see the module doc).
#[derive(Debug)]
pub(crate) struct NamingTableFactory {
    inner: Arc<dyn TableProviderFactory>,
}

impl NamingTableFactory {
    pub(crate) fn new(inner: Arc<dyn TableProviderFactory>) -> Self {
        Self { inner }
    }
}

#[async_trait]
impl TableProviderFactory for NamingTableFactory {
    async fn create(
        &self,
        state: &dyn Session,
        cmd: &CreateExternalTable,
    ) -> Result<Arc<dyn TableProvider>> {
        match self.inner.create(state, cmd).await {
            Err(e) if reads_a_file(&e) => match failing_file(state, cmd).await {
                Some(file) => Err(e.context(format!("reading {file}"))),
                None => Err(e),
            },
            other => other,
        }
    }
}

/// Did the error come from reading a file's contents?
fn reads_a_file(error: &DataFusionError) -> bool {
    matches!(
        error.find_root(),
        DataFusionError::ParquetError(_)
            | DataFusionError::ArrowError(..)
            | DataFusionError::IoError(_)
            | DataFusionError::ObjectStore(_)
    )
}

/// The first file of the table's location whose schema cannot be read.
async fn failing_file(state: &dyn Session, cmd: &CreateExternalTable) -> Option<String> {
    let state = state.as_any().downcast_ref::<SessionState>()?;
    let format = state
        .get_file_format_factory(&cmd.file_type)?
        .create(state, &cmd.options)
        .ok()?;
    for location in &cmd.locations {
        let url = ListingTableUrl::parse(location).ok()?;
        let store = state.runtime_env().object_store(&url).ok()?;
        let files: Vec<_> = StreamExt::take(
            url.list_all_files(state, store.as_ref(), "").await.ok()?,
            MAX_FILES_CHECKED,
        )
        .try_collect()
        .await
        .ok()?;
        for file in files {
            if format
                .infer_schema(state, &store, std::slice::from_ref(&file))
                .await
                .is_err()
            {
                return Some(format!("{}{}", url.object_store().as_str(), file.location));
            }
        }
    }
    None
}
