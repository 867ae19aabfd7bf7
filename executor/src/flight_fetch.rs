//! Fetching one piece of shuffle or result data from an executor's Flight
//! service. Used by executors (remote shuffle reads) and by clients (job
//! results); every failure is a typed [`ExchangeError::FetchFailed`] naming
//! the piece.

use std::sync::Arc;
use std::time::Duration;

use arrow_flight::Ticket;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_client::FlightServiceClient;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::TryStreamExt;
use prometheus_client::metrics::counter::Counter;
use tonic::transport::Channel;
use volley_dataflow::{ExchangeError, PartitionLocation, from_wire};
use volley_proto::limits::MAX_FLIGHT_MESSAGE_BYTES;
use volley_security::Link;

/// How much unread data one fetch may have in flight (its HTTP/2 stream
/// window).
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;

/// How much unread data all fetches over one connection may have in flight
/// together: room for 512 streams' windows, so the connection's window is
/// never what stops a stream.
///
/// All fetches from one executor share a connection, and readers do not
/// drain their streams in step: the probe side of a broadcast join starts
/// fetching its inner joins' build sides while the outer build side is
/// still being read, and stops reading them until it gets to them. With
/// hyper's default 5 MiB connection window two such parked streams filled
/// it, and the build side being read could receive nothing more: the task
/// hung (seen in `volley-bench chaos` on q9).
const CONNECTION_WINDOW: u32 = 512 * STREAM_WINDOW;

/// A lazily connecting channel to an executor's Flight endpoint, with the
/// TLS `link` expects.
pub fn flight_channel(endpoint: &str, link: &Link) -> Result<Channel, String> {
    Ok(link
        .endpoint(endpoint)?
        .connect_timeout(Duration::from_secs(5))
        // A peer behind a cut link is found by HTTP/2 pings, so a fetch from
        // it fails (and recovery starts) instead of waiting forever.
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true)
        .tcp_nodelay(true)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .connect_lazy())
}

/// Streams the piece of data at `location` over `channel`, presenting
/// `link`'s credential with the location's ticket.
pub async fn fetch_location(
    channel: Channel,
    location: &PartitionLocation,
    schema: SchemaRef,
    link: &Link,
) -> Result<SendableRecordBatchStream, ExchangeError> {
    fetch_counting(channel, location, schema, link, None).await
}

/// [`fetch_location`], adding the bytes received (as encoded on the wire)
/// to `wire_in`.
pub(crate) async fn fetch_counting(
    channel: Channel,
    location: &PartitionLocation,
    schema: SchemaRef,
    link: &Link,
    wire_in: Option<Counter>,
) -> Result<SendableRecordBatchStream, ExchangeError> {
    let mut client =
        FlightServiceClient::new(channel).max_decoding_message_size(MAX_FLIGHT_MESSAGE_BYTES);
    let mut ticket = tonic::Request::new(Ticket {
        ticket: location.ticket_bytes().into(),
    });
    link.attach(&mut ticket);
    let failed = |reason: String| ExchangeError::FetchFailed {
        location: Box::new(location.clone()),
        reason,
    };
    let response = client
        .do_get(ticket)
        .await
        .map_err(|status| failed(status.message().to_string()))?;
    let piece = location.clone();
    let stream = FlightRecordBatchStream::new_from_flight_data(
        response
            .into_inner()
            .inspect_ok(move |data| {
                if let Some(wire_in) = &wire_in {
                    wire_in.inc_by((data.data_header.len() + data.data_body.len()) as u64);
                }
            })
            .map_err(|status| FlightError::Tonic(Box::new(status))),
    )
    .map_err(move |e| {
        DataFusionError::from(ExchangeError::FetchFailed {
            location: Box::new(piece.clone()),
            reason: e.to_string(),
        })
    });
    let expected = Arc::clone(&schema);
    let stream = stream.and_then(move |batch| {
        let expected = Arc::clone(&expected);
        async move { Ok(from_wire(batch, &expected)?) }
    });
    Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
}
