//! An object store that lets through only what the node's [`PathPolicy`]
//! allows: every read, listing, write, copy, rename and delete is checked
//! against it first (local paths after resolving `..` and symlinks), so no
//! query can reach a file or bucket its node was not allowed, whatever path
//! DataFusion computed.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions,
};
use volley_security::PathPolicy;

/// Where a guarded store's paths live.
#[derive(Clone, Debug)]
enum Base {
    /// The local filesystem, rooted at `/`.
    Local(Arc<LocalFileSystem>),
    /// A bucket: `s3://bucket`.
    Url(String),
}

/// Checks every location against a [`PathPolicy`] before `inner` sees it.
#[derive(Clone, Debug)]
pub struct GuardedStore {
    inner: Arc<dyn ObjectStore>,
    base: Base,
    policy: Arc<PathPolicy>,
}

impl GuardedStore {
    /// The local filesystem, as allowed by `policy`.
    pub fn local(policy: Arc<PathPolicy>) -> Self {
        let local = Arc::new(LocalFileSystem::new());
        Self {
            inner: Arc::clone(&local) as Arc<dyn ObjectStore>,
            base: Base::Local(local),
            policy,
        }
    }

    /// `inner`, the store of `base` (`s3://bucket`), as allowed by `policy`.
    pub fn url(inner: Arc<dyn ObjectStore>, base: String, policy: Arc<PathPolicy>) -> Self {
        Self {
            inner,
            base: Base::Url(base),
            policy,
        }
    }

    fn check(&self, location: &Path) -> object_store::Result<()> {
        let allowed = match &self.base {
            Base::Local(local) => local
                .path_to_filesystem(location)
                .map_err(|e| e.to_string())
                .and_then(|path| self.policy.check_local(&path).map(|_| ())),
            Base::Url(base) => self.policy.check_url(&format!("{base}/{location}")),
        };
        allowed.map_err(|message| object_store::Error::PermissionDenied {
            path: location.to_string(),
            source: message.into(),
        })
    }

    fn check_prefix(&self, prefix: Option<&Path>) -> object_store::Result<()> {
        self.check(prefix.unwrap_or(&Path::default()))
    }
}

impl fmt::Display for GuardedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Guarded({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for GuardedStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.check(location)?;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.check(location)?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.check(location)?;
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        self.check(location)?;
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        // Checked one by one: a refused location fails, the rest go on.
        let guard = self.clone();
        let allowed = locations.map(move |location| {
            let location = location?;
            guard.check(&location)?;
            Ok(location)
        });
        self.inner.delete_stream(allowed.boxed())
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        match self.check_prefix(prefix) {
            Ok(()) => self.inner.list(prefix),
            Err(e) => stream::once(async move { Err(e) }).boxed(),
        }
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.check_prefix(prefix)?;
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.check(from)?;
        self.check(to)?;
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(
        &self,
        from: &Path,
        to: &Path,
        options: RenameOptions,
    ) -> object_store::Result<()> {
        self.check(from)?;
        self.check(to)?;
        self.inner.rename_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use futures::TryStreamExt;
    use object_store::ObjectStoreExt;

    use super::*;

    #[tokio::test]
    async fn only_allowed_local_paths_are_read_listed_or_written() {
        let dir = tempfile::tempdir().unwrap();
        let allowed = dir.path().join("data");
        let outside = dir.path().join("secret");
        std::fs::create_dir_all(&allowed).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(allowed.join("t.csv"), "a\n1\n").unwrap();
        std::fs::write(outside.join("key"), "k").unwrap();
        let policy = Arc::new(PathPolicy::deny_all().allow_path(&allowed).unwrap());
        let store = GuardedStore::local(policy);
        let path = |p: &std::path::Path| Path::from_absolute_path(p).unwrap();

        assert!(store.get(&path(&allowed.join("t.csv"))).await.is_ok());
        let listed: Vec<ObjectMeta> = store
            .list(Some(&path(&allowed)))
            .try_collect()
            .await
            .unwrap();
        assert_eq!(listed.len(), 1);
        assert!(
            store
                .put(&path(&allowed.join("new.csv")), "x".into())
                .await
                .is_ok()
        );

        let refused = store.get(&path(&outside.join("key"))).await.unwrap_err();
        assert!(refused.to_string().contains("--allow-path"), "{refused}");
        assert!(
            store
                .list(Some(&path(&outside)))
                .try_collect::<Vec<_>>()
                .await
                .is_err()
        );
        assert!(store.list(None).try_collect::<Vec<_>>().await.is_err());
        assert!(
            store
                .put(&path(&outside.join("w")), "x".into())
                .await
                .is_err()
        );
        assert!(!outside.join("w").exists());
        assert!(
            store
                .copy(&path(&outside.join("key")), &path(&allowed.join("stolen")))
                .await
                .is_err()
        );
        assert!(!allowed.join("stolen").exists());
    }
}
