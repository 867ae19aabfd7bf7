//! Where a job's result goes when it is written to files (`COPY ... TO
//! 'dir/'`, `DataFrame::write_parquet`, `volley submit --output`): the
//! executors write one file per partition, and the scheduler makes the
//! output appear only when the job succeeds.
//!
//! A local directory is staged: the files go to a hidden directory beside
//! the path, renamed into place on success and deleted on failure.
//!
//! An object-store prefix (`s3://bucket/path`) has no rename. Its files are
//! uploaded whole under a hidden staging prefix beside it
//! (`s3://bucket/.path.volley-staging-JOB/`); only when the job has
//! succeeded are they copied into place (server-side copies), then a
//! `_SUCCESS` object is written last, and the staging objects deleted. So
//! nothing appears under the target while the job runs or after it fails,
//! and a reader that must not see a commit half done waits for `_SUCCESS`
//! (the Hadoop and Spark convention). A commit that fails midway deletes
//! what it copied.

use std::path::PathBuf;
use std::sync::Arc;

use datafusion::datasource::listing::ListingTableUrl;
use datafusion::error::DataFusionError;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::logical_expr::LogicalPlan;
use datafusion::object_store::path::Path as ObjectPath;
use datafusion::object_store::{ObjectStore, ObjectStoreExt};
use futures::StreamExt;
use tracing::warn;
use volley_dataflow::{JobId, OutputFormat, SHARED_MARKER, output_format_from_proto, s3_store};
use volley_proto::v1;
use volley_security::PathPolicy;

/// Where the result goes.
#[derive(Debug, Clone)]
pub(crate) struct OutputTarget {
    location: Location,
    format: OutputFormat,
}

#[derive(Debug, Clone)]
enum Location {
    Local {
        path: PathBuf,
        staging: PathBuf,
    },
    Object {
        /// `s3://bucket/prefix`, the target.
        url: String,
        store: Arc<dyn ObjectStore>,
        prefix: ObjectPath,
        /// `s3://bucket/.prefix.volley-staging-JOB`, where the executors
        /// write.
        staging_url: String,
        staging: ObjectPath,
        /// Objects the commit put under the target so far, for
        /// [`OutputTarget::abandon`].
        committed: Arc<std::sync::Mutex<Vec<ObjectPath>>>,
    },
}

/// The object a successful object-store output ends with.
pub(crate) const SUCCESS_MARKER: &str = "_SUCCESS";

impl OutputTarget {
    /// Checks the output spec; a local path must not hold anything yet (see
    /// [`OutputTarget::prepare`] for object stores).
    pub(crate) fn try_new(
        job_id: &JobId,
        spec: &v1::OutputSpec,
        policy: &PathPolicy,
    ) -> Result<Self, DataFusionError> {
        let format = output_format_from_proto(spec.format)?;
        let raw = spec
            .path
            .trim_start_matches("file://")
            .trim_end_matches('/');
        if raw.is_empty() {
            return Err(DataFusionError::Plan("the output path is empty".into()));
        }
        let location = match raw.split_once("://") {
            Some(("s3" | "s3a", rest)) => {
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() {
                    return Err(DataFusionError::Plan(format!("no bucket in {raw}")));
                }
                policy.check_url(raw).map_err(DataFusionError::Plan)?;
                let bad = |e: datafusion::object_store::path::Error| {
                    DataFusionError::Plan(format!("bad output path {raw}: {e}"))
                };
                let prefix = ObjectPath::parse(prefix).map_err(bad)?;
                let Some(name) = prefix.parts().next_back() else {
                    return Err(DataFusionError::Plan(format!(
                        "write to a prefix inside the bucket (s3://{bucket}/name/), not to the \
                         whole bucket {raw}"
                    )));
                };
                let staging_name = format!(".{}.volley-staging-{job_id}", name.as_ref());
                let (scheme, _) = raw.split_once("://").unwrap_or(("s3", raw));
                let staging_url = match raw.rsplit_once('/') {
                    Some((parent, _)) if parent.len() > scheme.len() + 3 + bucket.len() => {
                        format!("{parent}/{staging_name}")
                    }
                    _ => format!("{scheme}://{bucket}/{staging_name}"),
                };
                policy.check_url(&staging_url).map_err(|e| {
                    DataFusionError::Plan(format!(
                        "the output is staged at {staging_url} until the job succeeds, which \
                         is not allowed ({e}); allow the prefix that holds {raw} (--allow-url)"
                    ))
                })?;
                let staging_path = staging_url
                    .strip_prefix(&format!("{scheme}://{bucket}/"))
                    .unwrap_or_default();
                Location::Object {
                    url: raw.to_string(),
                    store: s3_store(bucket)?,
                    prefix,
                    staging: ObjectPath::parse(staging_path).map_err(bad)?,
                    staging_url,
                    committed: Arc::default(),
                }
            }
            Some((scheme, _)) => {
                return Err(DataFusionError::NotImplemented(format!(
                    "Volley writes job output to local paths and s3:// URLs, not {scheme}://"
                )));
            }
            None => {
                let path = PathBuf::from(raw);
                policy.check_local(&path).map_err(DataFusionError::Plan)?;
                if path.exists()
                    && std::fs::read_dir(&path).map_or(true, |mut d| d.next().is_some())
                {
                    return Err(DataFusionError::Plan(format!(
                        "the output path {} already exists and is not an empty directory",
                        path.display()
                    )));
                }
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().to_string())
                    .unwrap_or_else(|| "output".into());
                let staging = path.with_file_name(format!(".{name}.volley-staging-{job_id}"));
                Location::Local { path, staging }
            }
        };
        Ok(Self { location, format })
    }

    /// Readies the output before any task runs. A local output's staging
    /// directory is made with the [`SHARED_MARKER`] in it, which executors
    /// must see (else they do not share this filesystem, and the job fails
    /// rather than report files that are not in place). An object-store
    /// prefix must not hold objects yet (a local path was checked by
    /// [`OutputTarget::try_new`]); a missing bucket or bad credentials show
    /// here.
    pub(crate) async fn prepare(&self) -> Result<(), DataFusionError> {
        let (url, store, prefix) = match &self.location {
            Location::Local { staging, .. } => {
                let io = |e: std::io::Error| {
                    DataFusionError::Execution(format!("cannot prepare {}: {e}", staging.display()))
                };
                std::fs::create_dir_all(staging).map_err(io)?;
                std::fs::write(staging.join(SHARED_MARKER), b"").map_err(io)?;
                return Ok(());
            }
            Location::Object {
                url, store, prefix, ..
            } => (url, store, prefix),
        };
        let mut listing = store.list(Some(prefix));
        match listing.next().await {
            None => Ok(()),
            Some(Ok(_)) => Err(DataFusionError::Plan(format!(
                "the output path {url} already holds objects"
            ))),
            Some(Err(e)) => Err(DataFusionError::from(e).context(format!("checking {url}"))),
        }
    }

    /// Where the executors write, and the format.
    pub(crate) fn staging_target(&self) -> (String, OutputFormat) {
        let dir = match &self.location {
            Location::Local { staging, .. } => staging.display().to_string(),
            Location::Object { staging_url, .. } => staging_url.clone(),
        };
        (dir, self.format)
    }

    /// Makes a local output appear (a rename); returns its files.
    pub(crate) fn commit_local(&self) -> std::io::Result<Vec<String>> {
        let Location::Local { path, staging } = &self.location else {
            return Err(std::io::Error::other(
                "an object-store output is committed with OutputTarget::commit",
            ));
        };
        if !staging.exists() {
            std::fs::create_dir_all(staging)?;
        }
        match std::fs::remove_file(staging.join(SHARED_MARKER)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        if path.exists() {
            // Checked empty at submission.
            std::fs::remove_dir(path)?;
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::rename(staging, path)?;
        let mut files: Vec<String> = std::fs::read_dir(path)?
            .filter_map(|e| e.ok())
            .map(|e| e.path().display().to_string())
            .collect();
        files.sort();
        Ok(files)
    }

    /// Makes the output appear, local or remote; returns its files. A
    /// remote commit that fails midway deletes what it had copied.
    pub(crate) async fn commit(&self) -> Result<Vec<String>, String> {
        let Location::Object {
            url,
            store,
            prefix,
            staging,
            staging_url,
            committed,
        } = &self.location
        else {
            return self.commit_local().map_err(|e| e.to_string());
        };
        let staged: Vec<ObjectPath> = store
            .list(Some(staging))
            .map(|item| item.map(|meta| meta.location))
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_, _>>()
            .map_err(|e| format!("cannot list the staged output {staging_url}: {e}"))?;
        let mut files = Vec::with_capacity(staged.len());
        let copied = async {
            for from in &staged {
                let relative: Vec<String> = from
                    .prefix_match(staging)
                    .into_iter()
                    .flatten()
                    .map(|part| part.as_ref().to_string())
                    .collect();
                let to = relative
                    .iter()
                    .fold(prefix.clone(), |path, part| path.join(part.as_str()));
                committed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(to.clone());
                store
                    .copy(from, &to)
                    .await
                    .map_err(|e| format!("cannot copy {from} into place: {e}"))?;
                files.push(format!("{url}/{}", relative.join("/")));
            }
            let marker = prefix.clone().join(SUCCESS_MARKER);
            committed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(marker.clone());
            store
                .put(&marker, Vec::<u8>::new().into())
                .await
                .map_err(|e| format!("cannot write {url}/{SUCCESS_MARKER}: {e}"))?;
            Ok::<(), String>(())
        }
        .await;
        if let Err(e) = copied {
            self.abandon();
            return Err(e);
        }
        // The output is in place; what is left in staging is only clutter.
        committed.lock().unwrap_or_else(|p| p.into_inner()).clear();
        for from in &staged {
            if let Err(e) = store.delete(from).await {
                warn!(output = %url, error = %e, "could not delete a staged file after the commit");
            }
        }
        files.sort();
        Ok(files)
    }

    /// Removes what a failed or cancelled job wrote.
    pub(crate) fn abandon(&self) {
        match &self.location {
            Location::Local { staging, .. } => {
                let _ = std::fs::remove_dir_all(staging);
            }
            Location::Object {
                url,
                store,
                staging,
                committed,
                ..
            } => {
                let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                    return;
                };
                let committed =
                    std::mem::take(&mut *committed.lock().unwrap_or_else(|p| p.into_inner()));
                let (store, url, staging) = (Arc::clone(store), url.clone(), staging.clone());
                runtime.spawn(async move {
                    let staged: Vec<ObjectPath> = store
                        .list(Some(&staging))
                        .filter_map(|item| async move { item.ok().map(|meta| meta.location) })
                        .collect()
                        .await;
                    for path in committed.iter().chain(&staged) {
                        match store.delete(path).await {
                            Ok(()) | Err(datafusion::object_store::Error::NotFound { .. }) => {}
                            Err(e) => warn!(output = %url, error = %e, "could not delete a failed job's file"),
                        }
                    }
                });
            }
        }
    }

    /// The local staging directory, for tests.
    #[cfg(test)]
    pub(crate) fn staging_dir(&self) -> Option<&std::path::Path> {
        match &self.location {
            Location::Local { staging, .. } => Some(staging),
            Location::Object { .. } => None,
        }
    }
}

/// Refuses a `COPY` whose target lies outside the node's path policy, or
/// already exists (a file, or a directory or prefix that holds anything):
/// a job never replaces or adds to what was there before it, whatever the
/// target's name, format or partitioning. Checked before anything runs.
pub(crate) async fn check_copy_target(
    plan: &LogicalPlan,
    runtime: &RuntimeEnv,
    policy: &PathPolicy,
) -> Result<(), DataFusionError> {
    let LogicalPlan::Copy(copy) = plan else {
        return Ok(());
    };
    let raw = copy.output_url.trim_start_matches("file://");
    let exists = |what: &str| {
        Err(DataFusionError::Plan(format!(
            "COPY target {} {what}; Volley never replaces or adds to existing output: \
             remove it first or write to a new path",
            copy.output_url
        )))
    };
    if raw.contains("://") {
        policy.check_url(raw).map_err(DataFusionError::Plan)?;
        let url = ListingTableUrl::parse(raw)?;
        let store = runtime.object_store(&url)?;
        let prefix = url.prefix();
        if store.head(prefix).await.is_ok() {
            return exists("exists");
        }
        if let Some(found) = store.list(Some(prefix)).next().await {
            found?;
            return exists("already holds objects");
        }
        return Ok(());
    }
    let path = policy
        .check_local(std::path::Path::new(raw))
        .map_err(DataFusionError::Plan)?;
    match std::fs::metadata(&path) {
        Ok(meta) if meta.is_dir() => {
            let holds_anything = std::fs::read_dir(&path).map_or(true, |mut d| d.next().is_some());
            if holds_anything {
                return exists("is a directory that holds files");
            }
            Ok(())
        }
        Ok(_) => exists("is an existing file"),
        Err(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn an_output_path_that_holds_files_is_refused_and_an_empty_one_accepted() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x"), b"x").unwrap();
        let spec = |path: &Path| v1::OutputSpec {
            path: path.display().to_string(),
            format: v1::OutputFormat::Parquet as i32,
        };
        let job = JobId::from("j");
        assert!(
            OutputTarget::try_new(&job, &spec(dir.path()), &PathPolicy::unrestricted()).is_err()
        );
        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        let target =
            OutputTarget::try_new(&job, &spec(&empty), &PathPolicy::unrestricted()).unwrap();
        assert_eq!(
            target.staging_dir().and_then(Path::parent),
            Some(dir.path())
        );
    }

    #[test]
    fn an_unsupported_url_scheme_is_refused_by_name() {
        let spec = v1::OutputSpec {
            path: "gs://bucket/out".into(),
            format: v1::OutputFormat::Parquet as i32,
        };
        let err = OutputTarget::try_new(&JobId::from("j"), &spec, &PathPolicy::unrestricted())
            .unwrap_err();
        assert!(err.to_string().contains("gs://"), "{err}");
    }
}

/// What a job that succeeded leaves to be moved into place, for plan and
/// script jobs alike: its outputs in the order they are committed (a
/// script's `COPY ... TO 'dir/'` outputs, then its `--output`), and whether
/// the last one is the job's output, whose files its status lists.
#[derive(Debug)]
pub(crate) struct Commit {
    pub(crate) targets: Vec<OutputTarget>,
    pub(crate) lists_files: bool,
}

impl Commit {
    /// Moves every output into place, in order (outside the state lock:
    /// object-store calls); the files of the job's output.
    pub(crate) async fn run(&self) -> Result<Option<Vec<String>>, String> {
        let mut files = None;
        for (i, target) in self.targets.iter().enumerate() {
            let committed = target.commit().await?;
            if self.lists_files && i + 1 == self.targets.len() {
                files = Some(committed);
            }
        }
        Ok(files)
    }

    /// Removes every output (the job failed or was cancelled meanwhile):
    /// staged files, and what was already copied into place.
    pub(crate) fn abandon(&self) {
        self.targets.iter().for_each(OutputTarget::abandon);
    }
}
