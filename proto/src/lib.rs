//! Volley's wire protocol: the `volley.v1` protobuf package and the gRPC
//! services generated from it. The scheduler serves [`v1::scheduler_service_server`];
//! executors and clients talk to it through [`v1::scheduler_service_client`].
//! Shuffle and result data does not travel here but over Arrow Flight, with a
//! [`v1::ShuffleTicket`] as the ticket. This crate holds no logic.
#![warn(missing_docs)]

/// The protocol version executors announce when they register. Bump it on
/// any change to `volley.proto` that old peers cannot read.
pub const PROTOCOL_VERSION: u32 = 1;

/// Generated code of the `volley.v1` package.
// Generated code is not ours to lint; which lints fire depends on the
// generator's version, so `allow` rather than `expect`.
#[allow(
    missing_docs,
    unreachable_pub,
    clippy::all,
    clippy::pedantic,
    clippy::clone_on_ref_ptr,
    clippy::unwrap_used
)]
pub mod v1 {
    tonic::include_proto!("volley.v1");
}
