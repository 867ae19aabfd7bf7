//! The executor's Arrow Flight service: `DoGet` with a ticket streams one
//! output partition of one map output from the shuffle store, compressed as
//! [`WireCompression`] says for that reader. On a secure cluster the ticket
//! must be the scheduler's signed grant, unexpired, for the credential the
//! reader presents (another executor's, or the job owner's token). Every
//! other Flight method is unimplemented.

use std::pin::Pin;
use std::sync::Arc;

use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use datafusion::arrow::ipc::writer::IpcWriteOptions;
use futures::{Stream, TryStreamExt};
use prost::Message;
use std::time::SystemTime;

use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};
use tracing::debug;
use volley_dataflow::{JobId, MapOutputId, OutputAttempt, StageId};
use volley_proto::v1;
use volley_security::{TicketSigner, TokenHash, bearer};

use crate::config::WireCompression;
use crate::flight_encode::encode_flight;
use crate::shuffle_store::ShuffleStore;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[derive(Debug, Clone)]
pub(crate) struct ShuffleFlightService {
    pub(crate) store: Arc<ShuffleStore>,
    pub(crate) compression: WireCompression,
    /// Verifies signed tickets; `None` on an insecure cluster, which takes
    /// plain ones.
    pub(crate) tickets: Option<TicketSigner>,
}

impl ShuffleFlightService {
    /// The piece a `DoGet` asks for, if its ticket may have it.
    fn piece(&self, metadata: &MetadataMap, ticket: &[u8]) -> Result<v1::ShuffleTicket, Status> {
        let Some(signer) = &self.tickets else {
            return v1::ShuffleTicket::decode(ticket).map_err(|e| {
                Status::invalid_argument(format!("not a Volley shuffle ticket: {e}"))
            });
        };
        let Some(credential) = bearer::presented(metadata) else {
            return Err(Status::unauthenticated(
                "no credentials: this executor serves data only with a token or the cluster's credential",
            ));
        };
        signer
            .verify(
                ticket,
                &TokenHash::of(credential.as_bytes()),
                SystemTime::now(),
            )
            .map_err(|e| Status::permission_denied(format!("ticket refused: {e}")))
    }
}

fn unimplemented<T>(what: &str) -> Result<T, Status> {
    Err(Status::unimplemented(format!(
        "a Volley executor serves only DoGet; {what} is not supported"
    )))
}

#[tonic::async_trait]
impl FlightService for ShuffleFlightService {
    type HandshakeStream = BoxStream<HandshakeResponse>;
    type ListFlightsStream = BoxStream<FlightInfo>;
    type DoGetStream = BoxStream<FlightData>;
    type DoPutStream = BoxStream<PutResult>;
    type DoActionStream = BoxStream<arrow_flight::Result>;
    type ListActionsStream = BoxStream<ActionType>;
    type DoExchangeStream = BoxStream<FlightData>;

    async fn handshake(
        &self,
        _request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        unimplemented("Handshake")
    }

    async fn list_flights(
        &self,
        _request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        unimplemented("ListFlights")
    }

    async fn get_flight_info(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        unimplemented("GetFlightInfo")
    }

    async fn poll_flight_info(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        unimplemented("PollFlightInfo")
    }

    async fn get_schema(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        unimplemented("GetSchema")
    }

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        let compression = self.compression.for_peer(
            request.remote_addr().map(|a| a.ip()),
            request.local_addr().map(|a| a.ip()),
        );
        let ticket = self.piece(request.metadata(), &request.get_ref().ticket)?;
        let job_id =
            JobId::parse(&ticket.job_id).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let id = MapOutputId {
            job_id,
            stage_id: StageId(ticket.stage_id),
            map_partition: ticket.map_partition,
        };
        let attempt = OutputAttempt::from(ticket.attempt.as_ref());
        debug!(job_id = %id.job_id, stage = %id.stage_id, map = id.map_partition, %attempt, output = ticket.output_partition, compression = ?compression, "serving shuffle data");
        let (schema, stream) = self
            .store
            .read(&id, attempt, ticket.output_partition as usize)
            .ok_or_else(|| {
                Status::not_found(format!(
                    "this executor holds no output of {id} written by attempt {attempt}"
                ))
            })?;
        let served = self.store.metrics().shuffle_bytes_served.clone();
        let stream = stream.inspect_ok(move |batch| {
            served.inc_by(batch.get_array_memory_size() as u64);
        });
        let wire_out = self.store.metrics().flight_bytes_out.clone();
        let options = IpcWriteOptions::default()
            .try_with_compression(compression)
            .map_err(|e| Status::internal(e.to_string()))?;
        let encoded = encode_flight(
            schema,
            stream.map_err(|e| FlightError::ExternalError(Box::new(e))),
            options,
        )
        .map_err(|e| match e {
            FlightError::Tonic(status) => *status,
            other => Status::internal(other.to_string()),
        })
        .inspect_ok(move |data| {
            wire_out.inc_by((data.data_header.len() + data.data_body.len()) as u64);
        });
        Ok(Response::new(Box::pin(encoded)))
    }

    async fn do_put(
        &self,
        _request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        unimplemented("DoPut")
    }

    async fn do_action(
        &self,
        _request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        unimplemented("DoAction")
    }

    async fn list_actions(
        &self,
        _request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        unimplemented("ListActions")
    }

    async fn do_exchange(
        &self,
        _request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        unimplemented("DoExchange")
    }
}

#[cfg(test)]
mod tests {

    use arrow_flight::flight_service_server::FlightServiceServer;
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
    use datafusion::arrow::record_batch::RecordBatch;
    use datafusion::execution::memory_pool::{GreedyMemoryPool, MemoryPool};
    use futures::StreamExt;
    use tonic::transport::server::TcpIncoming;
    use volley_dataflow::{ExecutorId, PartitionLocation, ShuffleSink};
    use volley_security::Link;

    use super::*;
    use crate::flight_fetch::{fetch_location, flight_channel};
    use crate::shuffle_store::StoreSink;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]))
    }

    fn location(map: u32, endpoint: &str) -> PartitionLocation {
        PartitionLocation {
            map_output: MapOutputId {
                job_id: JobId::from("job"),
                stage_id: StageId(0),
                map_partition: map,
            },
            output_partition: 0,
            executor_id: ExecutorId::from("exec-test"),
            endpoint: endpoint.to_string(),
            grant: Vec::new(),
            attempt: Default::default(),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fetches_parked_on_one_connection_do_not_stall_the_one_being_read()
    -> Result<(), Box<dyn std::error::Error>> {
        // Four map outputs of 8 MiB each, served uncompressed.
        let dir = tempfile::tempdir()?;
        let pool: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(1 << 30));
        let store = Arc::new(ShuffleStore::new(
            pool,
            dir.path().to_path_buf(),
            usize::MAX,
            crate::spill_codec::SpillCompression::Never,
        ));
        for map in 0..4 {
            let id = location(map, "").map_output;
            let mut writer =
                StoreSink::new(Arc::clone(&store), Default::default()).open(id, schema(), 1)?;
            for _ in 0..4 {
                let values = Int64Array::from_iter_values(0..250_000);
                writer.write(0, RecordBatch::try_new(schema(), vec![Arc::new(values)])?)?;
            }
            writer.finish()?;
        }
        let incoming = TcpIncoming::bind("127.0.0.1:0".parse()?)?;
        let endpoint = format!("http://{}", incoming.local_addr()?);
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(FlightServiceServer::new(ShuffleFlightService {
                    store,
                    compression: WireCompression::None,
                    tickets: None,
                }))
                .serve_with_incoming(incoming),
        );
        let channel = flight_channel(&endpoint, &Link::insecure())?;

        // Three fetches over the one connection read a batch and then wait,
        // as a join's later build sides wait while an earlier one is read.
        let mut parked = Vec::new();
        for map in 1..4 {
            let mut stream = fetch_location(
                channel.clone(),
                &location(map, &endpoint),
                schema(),
                &Link::insecure(),
            )
            .await?;
            stream.next().await.transpose()?;
            parked.push(stream);
        }
        let first = fetch_location(
            channel,
            &location(0, &endpoint),
            schema(),
            &Link::insecure(),
        )
        .await?;
        // A fetch stalled behind the parked ones would never end here.
        let rows = first
            .fold(Ok(0), |rows: Result<usize, String>, batch| async move {
                Ok(rows? + batch.map_err(|e| e.to_string())?.num_rows())
            })
            .await?;
        assert_eq!(rows, 1_000_000);
        drop(parked);
        server.abort();
        Ok(())
    }
}
