//! Where a piece of shuffle output lives, and its conversion to and from
//! the wire's `PartitionLocation`.

use std::fmt;

use volley_proto::v1;

use crate::ids::{ExecutorId, JobId, MapOutputId, OutputAttempt, StageId};

/// One output partition of one map output, on one executor.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PartitionLocation {
    /// The map output this piece belongs to.
    pub map_output: MapOutputId,
    /// The attempt of the map task that wrote it.
    pub attempt: OutputAttempt,
    /// Which of the map output's partitions.
    pub output_partition: u32,
    /// The executor holding it.
    pub executor_id: ExecutorId,
    /// `http://host:port` (or `https://`) of that executor's Flight service.
    pub endpoint: String,
    /// The scheduler's signed ticket for this piece, issued to the one
    /// reader it was handed to; empty on an insecure cluster.
    pub grant: Vec<u8>,
}

impl fmt::Display for PartitionLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}) partition {} on executor {} ({})",
            self.map_output, self.attempt, self.output_partition, self.executor_id, self.endpoint
        )
    }
}

impl From<&PartitionLocation> for v1::PartitionLocation {
    fn from(value: &PartitionLocation) -> Self {
        v1::PartitionLocation {
            executor_id: value.executor_id.to_string(),
            endpoint: value.endpoint.clone(),
            stage_id: value.map_output.stage_id.0,
            map_partition: value.map_output.map_partition,
            output_partition: value.output_partition,
            job_id: value.map_output.job_id.to_string(),
            grant: value.grant.clone(),
            attempt: Some(value.attempt.into()),
        }
    }
}

impl From<&v1::PartitionLocation> for PartitionLocation {
    fn from(value: &v1::PartitionLocation) -> Self {
        PartitionLocation {
            map_output: MapOutputId {
                job_id: JobId::from(value.job_id.as_str()),
                stage_id: StageId(value.stage_id),
                map_partition: value.map_partition,
            },
            attempt: OutputAttempt::from(value.attempt.as_ref()),
            output_partition: value.output_partition,
            executor_id: ExecutorId::from(value.executor_id.as_str()),
            endpoint: value.endpoint.clone(),
            grant: value.grant.clone(),
        }
    }
}

impl PartitionLocation {
    /// What this piece is, as a ticket names it.
    pub fn ticket(&self) -> v1::ShuffleTicket {
        v1::ShuffleTicket {
            job_id: self.map_output.job_id.to_string(),
            stage_id: self.map_output.stage_id.0,
            map_partition: self.map_output.map_partition,
            output_partition: self.output_partition,
            attempt: Some(self.attempt.into()),
        }
    }

    /// The bytes of the Flight ticket that fetches this piece: the
    /// scheduler's signed grant, or on an insecure cluster the plain ticket.
    pub fn ticket_bytes(&self) -> Vec<u8> {
        use prost::Message;
        if self.grant.is_empty() {
            self.ticket().encode_to_vec()
        } else {
            self.grant.clone()
        }
    }
}
