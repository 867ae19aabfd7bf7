//! The executor's [`ShuffleSource`]: pieces this executor holds are read
//! straight from its store (no network, no copy); others come over Flight
//! from the executor that holds them, on one cached channel per endpoint.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use tonic::transport::Channel;
use volley_dataflow::{ExchangeError, ExecutorId, PartitionLocation, ShuffleSource};
use volley_security::Link;

use crate::flight_channels::FlightChannels;
use crate::flight_fetch::fetch_counting;
use crate::shuffle_store::ShuffleStore;

#[derive(Debug)]
pub(crate) struct ExchangeClient {
    executor_id: ExecutorId,
    store: Arc<ShuffleStore>,
    /// The executor's credential and TLS, for other executors' Flight.
    link: Link,
    channels: FlightChannels,
}

impl ExchangeClient {
    pub(crate) fn new(executor_id: ExecutorId, store: Arc<ShuffleStore>, link: Link) -> Self {
        Self {
            executor_id,
            store,
            link,
            channels: FlightChannels::default(),
        }
    }

    fn channel(&self, location: &PartitionLocation) -> Result<Channel, ExchangeError> {
        self.channels
            .get(&location.endpoint, &self.link)
            .map_err(|e| ExchangeError::FetchFailed {
                location: Box::new(location.clone()),
                reason: format!("bad endpoint: {e}"),
            })
    }
}

#[async_trait]
impl ShuffleSource for ExchangeClient {
    async fn fetch(
        &self,
        location: &PartitionLocation,
        schema: SchemaRef,
    ) -> Result<SendableRecordBatchStream, ExchangeError> {
        if location.executor_id == self.executor_id {
            return match self.store.read(
                &location.map_output,
                location.attempt,
                location.output_partition as usize,
            ) {
                Some((_, stream)) => Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream))),
                None => Err(ExchangeError::FetchFailed {
                    location: Box::new(location.clone()),
                    reason: format!(
                        "the output of attempt {} is no longer held by this executor",
                        location.attempt
                    ),
                }),
            };
        }
        let channel = self.channel(location)?;
        tracing::debug!(map_output = %location.map_output, output = location.output_partition, from = %location.executor_id, "fetching shuffle piece");
        let wire_in = Some(self.store.metrics().flight_bytes_in.clone());
        let fetched = fetch_counting(channel, location, schema, &self.link, wire_in).await;
        tracing::debug!(map_output = %location.map_output, output = location.output_partition, from = %location.executor_id, ok = fetched.is_ok(), "shuffle piece opened");
        fetched
    }
}
