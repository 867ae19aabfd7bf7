//! How a node connects out: the credential it presents on every request
//! and the TLS it expects of the server.

use tonic::transport::Endpoint;
use tonic::{Request, Status};

use crate::bearer::BearerInterceptor;
use crate::secret::Secret;
use crate::tls::{ClientTls, check_scheme};

/// A client's side of every connection it opens: to a scheduler, or to an
/// executor's Flight service.
#[derive(Clone, Debug, Default)]
pub struct Link {
    bearer: BearerInterceptor,
    tls: Option<ClientTls>,
}

impl Link {
    /// No credential, no TLS: an insecure cluster.
    pub fn insecure() -> Self {
        Self::default()
    }

    /// Presents `credential` (a user's token, or an executor's credential)
    /// and, with `tls`, speaks only TLS to servers `tls` trusts.
    pub fn new(credential: Option<&Secret>, tls: Option<ClientTls>) -> Result<Self, Status> {
        Ok(Self {
            bearer: BearerInterceptor::new(credential)?,
            tls,
        })
    }

    /// Does this link use TLS?
    pub fn uses_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// A tonic endpoint for `url`, refused when its scheme does not match
    /// the TLS setting.
    pub fn endpoint(&self, url: &str) -> Result<Endpoint, String> {
        check_scheme(url, self.tls.is_some())?;
        let endpoint = Endpoint::from_shared(url.to_string())
            .map_err(|e| format!("invalid URL {url}: {e}"))?;
        match &self.tls {
            Some(tls) => endpoint
                .tls_config(tls.config())
                .map_err(|e| format!("TLS for {url}: {e}")),
            None => Ok(endpoint),
        }
    }

    /// Adds the credential to `request`.
    pub fn attach<T>(&self, request: &mut Request<T>) {
        self.bearer.attach(request);
    }

    /// An interceptor that adds the credential to every request of a
    /// generated client.
    pub fn interceptor(&self) -> BearerInterceptor {
        self.bearer.clone()
    }
}
