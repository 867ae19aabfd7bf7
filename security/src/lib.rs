//! Who may do what in a Volley cluster, checked the same way on every node.
//!
//! - [`Users`]: the people (clients) a scheduler knows, from a tokens file;
//!   each has a [`Role`]. A client proves who it is with its token, sent as
//!   a bearer credential ([`bearer`]).
//! - [`ClusterSecret`]: what executors and the scheduler share. Executors
//!   prove it to the scheduler, and the scheduler proves it back; it also
//!   keys the [`TicketSigner`], which issues the signed, expiring tickets
//!   executors require before they hand out shuffle or result data.
//! - [`tls`]: rustls (through tonic) for every connection, and development
//!   certificates made with rcgen.
//! - [`PathPolicy`]: the local roots and object-store URLs a node may read
//!   or write.
//! - [`HttpServer`], [`http_caller`]: the HTTP endpoints (web UI,
//!   `/metrics`) authenticated and encrypted as gRPC is.
//!
//! The scheduler (`volley-scheduler`) authenticates every RPC with
//! [`Authenticator`]; executors (`volley-executor`) verify tickets and the
//! scheduler's proof; clients (`volley-client`) attach their token. This
//! crate knows nothing of DataFusion.

mod authenticator;
pub mod bearer;
mod cluster;
mod error;
mod http;
mod link;
mod paths;
mod secret;
mod tickets;
pub mod tls;
mod users;

pub use authenticator::{Authenticator, Caller};
pub use cluster::ClusterSecret;
pub use error::SecurityError;
pub use http::{HttpServer, SESSION_COOKIE, http_caller, may_read_metrics, session_cookie};
pub use link::Link;
pub use paths::PathPolicy;
pub use secret::{Secret, TokenHash};
pub use tickets::{TicketError, TicketSigner};
pub use users::{Role, User, UserName, Users};
