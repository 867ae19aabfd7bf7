//! Newtype IDs shared by the scheduler, the executors and the client, so an
//! id of one kind can never be passed where another is expected.

use std::fmt;

/// Text that is not an id of its kind: ids name files and directories on
/// executors, so every id that arrives from the network is checked first.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not a valid {kind} id (1 to 64 letters, digits, `-` or `_`)")]
pub struct InvalidId {
    kind: &'static str,
    text: String,
}

/// Checks `text` is 1 to 64 of `A-Z a-z 0-9 - _`: nothing a path could
/// climb out of a directory with.
fn well_formed(kind: &'static str, text: &str) -> Result<(), InvalidId> {
    let ok = !text.is_empty()
        && text.len() <= 64
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        let shown: String = text.chars().take(80).collect();
        Err(InvalidId { kind, text: shown })
    }
}

/// A job: one query or script submitted to the scheduler.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(String);

impl JobId {
    /// A fresh, random job id.
    pub fn new_random() -> Self {
        let uuid = uuid::Uuid::new_v4().simple().to_string();
        // Twelve hex digits tell jobs apart in logs and shells, and stay short.
        Self(uuid[..12].to_string())
    }

    /// A job id received from the network, checked.
    pub fn parse(text: &str) -> Result<Self, InvalidId> {
        well_formed("job", text)?;
        Ok(Self(text.to_string()))
    }

    /// Is this id well formed (safe to name a directory by)?
    pub fn is_well_formed(&self) -> bool {
        well_formed("job", &self.0).is_ok()
    }

    /// The job id as the wire and people see it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<String> for JobId {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for JobId {
    fn from(value: &str) -> Self {
        Self(value.to_string())
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A stage within a job; stage ids are dense, from 0, in creation order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StageId(pub u32);

impl fmt::Display for StageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A task: one attempt at one partition of one stage, unique per scheduler.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId(pub u64);

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// An executor process (or in-process executor) for one life: a restarted
/// executor registers with a new id.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExecutorId(String);

impl ExecutorId {
    /// A fresh, random executor id.
    pub fn new_random() -> Self {
        let uuid = uuid::Uuid::new_v4().simple().to_string();
        Self(format!("exec-{}", &uuid[..8]))
    }

    /// An executor id received from the network, checked.
    pub fn parse(text: &str) -> Result<Self, InvalidId> {
        well_formed("executor", text)?;
        Ok(Self(text.to_string()))
    }

    /// The executor id as the wire and people see it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<String> for ExecutorId {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for ExecutorId {
    fn from(value: &str) -> Self {
        Self(value.to_string())
    }
}

impl fmt::Display for ExecutorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The address of one map output: what a shuffle writer stored for one
/// partition of its input, possibly split into several output partitions.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MapOutputId {
    /// The job the stage belongs to.
    pub job_id: JobId,
    /// The stage that wrote it.
    pub stage_id: StageId,
    /// The input partition (map task) that produced it.
    pub map_partition: u32,
}

impl fmt::Display for MapOutputId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "job {} stage {} map {}",
            self.job_id, self.stage_id, self.map_partition
        )
    }
}

/// Which attempt of a map task wrote an output: the stage attempt that ran
/// it, under the epoch of the scheduler that launched it (0 without a
/// state store). Every stored output, location and ticket names its
/// attempt, so a reader gets exactly the output the scheduler resolved for
/// it or a fetch failure, never another attempt's.
///
/// Ordered by epoch, then stage attempt: a scheduler restarted from its
/// state store numbers stage attempts from 0 again, under a higher epoch,
/// so its attempts still outrank every attempt launched before it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OutputAttempt {
    /// The epoch of the scheduler that launched the attempt.
    pub epoch: u64,
    /// The stage attempt (0 first, under that scheduler).
    pub stage_attempt: u32,
}

impl OutputAttempt {
    /// Stage attempt `stage_attempt`, launched by a scheduler of `epoch`.
    pub fn new(epoch: u64, stage_attempt: u32) -> Self {
        Self {
            epoch,
            stage_attempt,
        }
    }
}

impl fmt::Display for OutputAttempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "e{}a{}", self.epoch, self.stage_attempt)
    }
}

impl From<Option<&volley_proto::v1::OutputAttempt>> for OutputAttempt {
    fn from(value: Option<&volley_proto::v1::OutputAttempt>) -> Self {
        value.map_or_else(Self::default, |a| Self::new(a.epoch, a.stage_attempt))
    }
}

impl From<OutputAttempt> for volley_proto::v1::OutputAttempt {
    fn from(value: OutputAttempt) -> Self {
        Self {
            epoch: value.epoch,
            stage_attempt: value.stage_attempt,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_from_the_network_cannot_name_a_path() {
        assert!(JobId::parse(JobId::new_random().as_str()).is_ok());
        assert!(ExecutorId::parse(ExecutorId::new_random().as_str()).is_ok());
        for bad in ["", "/some/dir", "..", "a/b", "a b", &"x".repeat(65)] {
            assert!(JobId::parse(bad).is_err(), "{bad:?}");
            assert!(ExecutorId::parse(bad).is_err(), "{bad:?}");
        }
        assert!(!JobId::from("../x").is_well_formed());
    }

    #[test]
    fn a_restarted_schedulers_first_attempt_outranks_every_earlier_one() {
        let before_restart = OutputAttempt::new(7, 3);
        let after_restart = OutputAttempt::new(8, 0);
        assert!(after_restart > before_restart);
        assert!(OutputAttempt::new(7, 4) > before_restart);
        assert_eq!(after_restart.to_string(), "e8a0");
    }
}
