//! Which files and object-store URLs a node may touch: local paths under
//! one of its `--allow-path` roots (after resolving `..` and symlinks) and
//! URLs under one of its `--allow-url` prefixes. Everything else is refused
//! before anything is read or created.

use std::path::{Component, Path, PathBuf};

/// The roots and URL prefixes a node may read and write.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PathPolicy {
    /// Canonical local roots.
    roots: Vec<PathBuf>,
    /// URL prefixes, `scheme://bucket/prefix` without a trailing `/`.
    urls: Vec<String>,
    /// Everything allowed (`--allow-path /` says the same for local files;
    /// this also allows every URL).
    unrestricted: bool,
}

impl PathPolicy {
    /// Nothing allowed.
    pub fn deny_all() -> Self {
        Self::default()
    }

    /// Everything allowed (tests of other features, and an operator who
    /// asks for it).
    pub fn unrestricted() -> Self {
        Self {
            unrestricted: true,
            ..Self::default()
        }
    }

    /// Also allows everything under `root`, which must exist.
    pub fn allow_path(mut self, root: &Path) -> Result<Self, String> {
        let canonical = std::fs::canonicalize(root)
            .map_err(|e| format!("--allow-path {}: {e}", root.display()))?;
        self.roots.push(canonical);
        Ok(self)
    }

    /// Also allows every URL under `prefix` (`s3://bucket` or
    /// `s3://bucket/some/prefix`).
    pub fn allow_url(mut self, prefix: &str) -> Result<Self, String> {
        let Some((scheme, rest)) = prefix.split_once("://") else {
            return Err(format!(
                "--allow-url {prefix}: not a URL like s3://bucket/prefix"
            ));
        };
        if scheme == "file" || rest.trim_matches('/').is_empty() {
            return Err(format!(
                "--allow-url {prefix}: name a bucket (local files are allowed with --allow-path)"
            ));
        }
        self.urls
            .push(format!("{scheme}://{}", rest.trim_end_matches('/')));
        Ok(self)
    }

    /// The policy of a node's `--allow-path` and `--allow-url` flags.
    pub fn from_flags(roots: &[std::path::PathBuf], urls: &[String]) -> Result<Self, String> {
        let mut policy = Self::deny_all();
        for root in roots {
            policy = policy.allow_path(root)?;
        }
        for url in urls {
            policy = policy.allow_url(url)?;
        }
        Ok(policy)
    }

    /// Is every path allowed?
    pub fn is_unrestricted(&self) -> bool {
        self.unrestricted
    }

    /// The roots, for messages and status.
    pub fn roots(&self) -> &[PathBuf] {
        &self.roots
    }

    /// Checks a local path, existing or about to be created: the path with
    /// `..` and symlinks resolved must lie under an allowed root. Returns
    /// the resolved path.
    pub fn check_local(&self, path: &Path) -> Result<PathBuf, String> {
        let resolved = resolve(path)
            .map_err(|e| format!("cannot resolve local path {}: {e}", path.display()))?;
        if self.unrestricted || self.roots.iter().any(|root| resolved.starts_with(root)) {
            return Ok(resolved);
        }
        Err(format!(
            "local path {} is outside the paths this cluster may use ({}); an operator \
             allows more with --allow-path",
            path.display(),
            self.describe_roots()
        ))
    }

    /// Checks an object-store URL (`s3://bucket/key`).
    pub fn check_url(&self, url: &str) -> Result<(), String> {
        let url = url.trim_end_matches('/');
        let allowed = self.unrestricted
            || self.urls.iter().any(|prefix| {
                url == prefix
                    || url
                        .strip_prefix(prefix.as_str())
                        .is_some_and(|rest| rest.starts_with('/'))
            });
        if allowed {
            Ok(())
        } else {
            Err(format!(
                "{url} is outside the URLs this cluster may use; an operator allows a \
                 bucket or prefix with --allow-url"
            ))
        }
    }

    fn describe_roots(&self) -> String {
        if self.roots.is_empty() {
            "none".to_string()
        } else {
            self.roots
                .iter()
                .map(|r| r.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        }
    }
}

/// `path` made absolute, with `..` and every symlink of its longest
/// existing ancestor resolved; the part that does not exist yet is appended
/// as written, and may not contain `..`.
fn resolve(path: &Path) -> std::io::Result<PathBuf> {
    let absolute = std::path::absolute(path)?;
    let mut existing = absolute.as_path();
    let mut missing = Vec::new();
    loop {
        match std::fs::canonicalize(existing) {
            Ok(mut resolved) => {
                for part in missing.iter().rev() {
                    resolved.push(part);
                }
                return Ok(resolved);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if existing.components().next_back() == Some(Component::ParentDir) {
                    return Err(std::io::Error::other(
                        "`..` after a part of the path that does not exist",
                    ));
                }
                let (Some(parent), Some(name)) = (existing.parent(), existing.file_name()) else {
                    return Err(e);
                };
                missing.push(name.to_os_string());
                existing = parent;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_paths_outside_the_roots_are_refused_however_they_are_spelled() {
        let dir = tempfile::tempdir().unwrap();
        let allowed = dir.path().join("data");
        let outside = dir.path().join("secret");
        std::fs::create_dir_all(&allowed).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("key"), "x").unwrap();
        std::fs::write(allowed.join("t.csv"), "a\n1\n").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(outside.join("key"), allowed.join("link.csv")).unwrap();
        let policy = PathPolicy::deny_all().allow_path(&allowed).unwrap();

        assert!(policy.check_local(&allowed.join("t.csv")).is_ok());
        assert!(policy.check_local(&allowed.join("new/out.csv")).is_ok());
        for refused in [
            outside.join("key"),
            allowed.join("../secret/key"),
            allowed.join("new/../../secret/key"),
            PathBuf::from("/etc/shadow"),
        ] {
            let message = policy.check_local(&refused).unwrap_err();
            assert!(
                message.contains("--allow-path") || message.contains("`..`"),
                "{}: {message}",
                refused.display()
            );
        }
        #[cfg(unix)]
        assert!(policy.check_local(&allowed.join("link.csv")).is_err());
        assert!(PathPolicy::deny_all().check_local(&allowed).is_err());
        assert!(PathPolicy::unrestricted().check_local(&outside).is_ok());
    }

    #[test]
    fn urls_are_allowed_by_bucket_and_prefix_on_segment_boundaries() {
        let policy = PathPolicy::deny_all()
            .allow_url("s3://data/team-a/")
            .unwrap();
        assert!(policy.check_url("s3://data/team-a/t.parquet").is_ok());
        assert!(policy.check_url("s3://data/team-a").is_ok());
        assert!(policy.check_url("s3://data/team-ab/t.parquet").is_err());
        assert!(policy.check_url("s3://other/team-a/t.parquet").is_err());
        assert!(PathPolicy::deny_all().allow_url("s3://").is_err());
        assert!(PathPolicy::deny_all().allow_url("/tmp").is_err());
    }
}
