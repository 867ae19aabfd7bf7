//! HTTP endpoints (the scheduler's web UI and every node's `/metrics`)
//! under the same rules as gRPC: a caller is who its bearer credential says
//! ([`http_caller`]; a browser may carry it in the [`SESSION_COOKIE`] a
//! login form sets instead of a header), and the server presents the same
//! TLS certificate ([`serve_http`], through tonic's server, which speaks
//! HTTP/1.1 too).

use std::net::SocketAddr;

use tonic::Status;
use tonic::codegen::http::{HeaderMap, HeaderValue};
use tonic::metadata::MetadataMap;
use tonic::transport::server::TcpIncoming;

use crate::authenticator::{Authenticator, Caller};
use crate::bearer::AUTHORIZATION;
use crate::secret::TokenHash;
use crate::tls::ServerTls;

/// The cookie a browser session carries its token in: set by a login form,
/// `HttpOnly` (no script reads it) and `SameSite=Strict` (no other site
/// sends it), `Secure` over TLS.
pub const SESSION_COOKIE: &str = "volley_token";

/// The token in `headers`' [`SESSION_COOKIE`], if any.
fn session_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, token)| token)
}

/// Who sent an HTTP request: its `Authorization: Bearer` header, else its
/// session cookie, checked by `authenticator` exactly as a gRPC call's.
pub fn http_caller(authenticator: &Authenticator, headers: &HeaderMap) -> Result<Caller, Status> {
    let mut headers = headers.clone();
    if !headers.contains_key(AUTHORIZATION)
        && let Some(token) = session_token(&headers)
        && let Ok(value) = HeaderValue::from_str(&format!("Bearer {token}"))
    {
        headers.insert(AUTHORIZATION, value);
    }
    authenticator.identify(&MetadataMap::from_headers(headers))
}

/// Whether a request may read `/metrics`: any caller [`http_caller`]
/// accepts, or the cluster's metrics credential
/// ([`crate::ClusterSecret::metrics_credential`]), which reads nothing else.
pub fn may_read_metrics(authenticator: &Authenticator, headers: &HeaderMap) -> bool {
    if http_caller(authenticator, headers).is_ok() {
        return true;
    }
    let Some(cluster) = authenticator.cluster() else {
        return false;
    };
    let presented = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    presented
        .is_some_and(|token| TokenHash::of(token.as_bytes()) == cluster.metrics_credential().hash())
}

/// The `Set-Cookie` value that starts a browser session with `token`.
pub fn session_cookie(token: &str, tls: bool) -> String {
    let secure = if tls { "; Secure" } else { "" };
    format!("{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict{secure}")
}

/// An HTTP server bound and ready to serve.
#[derive(Debug)]
pub struct HttpServer {
    incoming: TcpIncoming,
    addr: SocketAddr,
}

impl HttpServer {
    /// Binds `bind` (port 0: a free port).
    pub fn bind(bind: SocketAddr) -> std::io::Result<Self> {
        let incoming = TcpIncoming::bind(bind)?;
        let addr = incoming.local_addr()?;
        Ok(Self { incoming, addr })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves `router` (HTTP/1.1 and HTTP/2), over `tls` when given, until
    /// the future is dropped or fails.
    pub async fn serve(
        self,
        router: axum::Router,
        tls: Option<&ServerTls>,
    ) -> Result<(), tonic::transport::Error> {
        let mut server = tonic::transport::Server::builder().accept_http1(true);
        if let Some(tls) = tls {
            server = server.tls_config(tls.config())?;
        }
        server
            .add_routes(tonic::service::Routes::from(router))
            .serve_with_incoming(self.incoming)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::ClusterSecret;
    use crate::users::{Role, Users};

    #[test]
    fn a_browser_session_cookie_authenticates_like_a_bearer_header() {
        let (ana, token) = Users::create("ana".parse().unwrap(), Role::Read).unwrap();
        let users = Users::new(vec![ana]);
        let authenticator = Authenticator::new(users, ClusterSecret::random().unwrap());
        let mut headers = HeaderMap::new();
        assert!(http_caller(&authenticator, &headers).is_err());
        headers.insert(
            "cookie",
            HeaderValue::from_str(&format!("theme=dark; {SESSION_COOKIE}={}", token.expose()))
                .unwrap(),
        );
        assert!(matches!(
            http_caller(&authenticator, &headers),
            Ok(Caller::User(_))
        ));
        headers.insert("cookie", HeaderValue::from_static("volley_token=guessed"));
        assert!(http_caller(&authenticator, &headers).is_err());
        let mut metrics = HeaderMap::new();
        assert!(!may_read_metrics(&authenticator, &metrics));
        let cluster = authenticator.cluster().unwrap();
        let scrape = format!("Bearer {}", cluster.metrics_credential().expose());
        metrics.insert(AUTHORIZATION, HeaderValue::from_str(&scrape).unwrap());
        assert!(may_read_metrics(&authenticator, &metrics));
        assert!(
            http_caller(&authenticator, &metrics).is_err(),
            "the metrics credential reads metrics only"
        );
        let cookie = session_cookie("t", true);
        assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
        assert!(cookie.ends_with("; Secure"));
    }
}
