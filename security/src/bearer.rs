//! Credentials on the wire: `authorization: Bearer <credential>` metadata on
//! every gRPC and Flight request. Clients send a user's token; executors
//! send their credential derived from the cluster secret.

use std::fmt;

use tonic::metadata::{AsciiMetadataValue, MetadataMap};
use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::secret::Secret;

/// The metadata key credentials travel under.
pub const AUTHORIZATION: &str = "authorization";

/// The credential a request presents, if any.
pub fn presented(metadata: &MetadataMap) -> Option<&str> {
    metadata
        .get(AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

/// Adds a credential to every request of a client; with none, adds nothing
/// (an insecure cluster).
#[derive(Clone, Default)]
pub struct BearerInterceptor {
    value: Option<AsciiMetadataValue>,
}

impl BearerInterceptor {
    /// Presents `credential` (or nothing).
    pub fn new(credential: Option<&Secret>) -> Result<Self, Status> {
        let value = match credential {
            None => None,
            Some(secret) => Some(
                format!("Bearer {}", secret.expose())
                    .parse::<AsciiMetadataValue>()
                    .map_err(|_| Status::invalid_argument("a token must be printable ASCII"))?,
            ),
        };
        Ok(Self { value })
    }

    /// Adds the credential to `request`.
    pub fn attach<T>(&self, request: &mut Request<T>) {
        if let Some(value) = &self.value {
            request.metadata_mut().insert(AUTHORIZATION, value.clone());
        }
    }
}

impl Interceptor for BearerInterceptor {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        self.attach(&mut request);
        Ok(request)
    }
}

impl fmt::Debug for BearerInterceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = if self.value.is_some() {
            "<redacted>"
        } else {
            "none"
        };
        write!(f, "BearerInterceptor({shown})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_credential_attached_is_the_credential_presented_and_never_printed() {
        let secret = Secret::new("tok-123");
        let mut interceptor = BearerInterceptor::new(Some(&secret)).unwrap();
        let request = interceptor.call(Request::new(())).unwrap();
        assert_eq!(presented(request.metadata()), Some("tok-123"));
        assert!(!format!("{interceptor:?}").contains("tok-123"));
        let mut none = BearerInterceptor::new(None).unwrap();
        assert_eq!(
            presented(none.call(Request::new(())).unwrap().metadata()),
            None
        );
        assert!(BearerInterceptor::new(Some(&Secret::new("a\nb"))).is_err());
    }
}
