//! The executor's Arrow Flight service: `DoGet` with a `ShuffleTicket`
//! streams one output partition of one map output from the shuffle store,
//! compressed as [`WireCompression`] says for that reader. Every other
//! Flight method is unimplemented.

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
use tonic::{Request, Response, Status, Streaming};
use tracing::debug;
use volley_dataflow::{JobId, MapOutputId, StageId};
use volley_proto::v1;

use crate::config::WireCompression;
use crate::flight_encode::encode_flight;
use crate::shuffle_store::ShuffleStore;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[derive(Debug, Clone)]
pub(crate) struct ShuffleFlightService {
    pub(crate) store: Arc<ShuffleStore>,
    pub(crate) compression: WireCompression,
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
        let ticket = v1::ShuffleTicket::decode(request.into_inner().ticket)
            .map_err(|e| Status::invalid_argument(format!("not a Volley shuffle ticket: {e}")))?;
        let id = MapOutputId {
            job_id: JobId::from(ticket.job_id),
            stage_id: StageId(ticket.stage_id),
            map_partition: ticket.map_partition,
        };
        debug!(job_id = %id.job_id, stage = %id.stage_id, map = id.map_partition, output = ticket.output_partition, "serving shuffle data");
        let (schema, stream) = self
            .store
            .read(&id, ticket.output_partition as usize)
            .ok_or_else(|| Status::not_found(format!("this executor holds no output of {id}")))?;
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
