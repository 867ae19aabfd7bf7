//! The executor's configuration: one typed struct, filled from flags or
//! environment variables by the binary, or built in code by the embedded
//! cluster.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use datafusion::arrow::ipc::CompressionType;
use volley_dataflow::UdfRegistry;
use volley_security::tls::{ClientTls, ServerTls};
use volley_security::{ClusterSecret, PathPolicy};

use crate::spill_codec::SpillCompression;

/// How an executor proves itself, whom it trusts, and what it may touch.
#[derive(Clone, Debug)]
pub struct ExecutorSecurity {
    /// The secret shared with the scheduler; `None` only on an insecure
    /// cluster.
    pub cluster_secret: Option<ClusterSecret>,
    /// TLS this executor's Flight server presents.
    pub server_tls: Option<ServerTls>,
    /// TLS this executor expects of the scheduler and other executors (and
    /// the client certificate it may present).
    pub client_tls: Option<ClientTls>,
    /// Local roots and URLs tasks may read and write.
    pub paths: PathPolicy,
}

impl ExecutorSecurity {
    /// No secret, no TLS, every path allowed: for tests of other features
    /// against an insecure scheduler.
    pub fn insecure_unrestricted() -> Self {
        Self {
            cluster_secret: None,
            server_tls: None,
            client_tls: None,
            paths: PathPolicy::unrestricted(),
        }
    }
}

/// How shuffle and result data is compressed on the wire (`--shuffle-compression`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WireCompression {
    /// Uncompressed to a reader on this machine (a loopback address, or the
    /// address the reader reached this executor on), LZ4 to any other. On
    /// one machine compressing costs more CPU than the copy it saves: at
    /// TPC-H SF 1 with two executors, LZ4 was a fifth of Volley's CPU time
    /// (`benchmarks/README.md`). Spilled files are uncompressed until the
    /// executor holds a quarter of its memory budget in them, then LZ4
    /// (`SpillCompression::Lz4Past`).
    #[default]
    Auto,
    /// Never compressed.
    None,
    /// Always LZ4 (frame).
    Lz4,
    /// Always ZSTD.
    Zstd,
}

impl WireCompression {
    /// The IPC compression for a reader at `peer` that reached this
    /// executor at `local` (either unknown: treated as remote).
    pub fn for_peer(
        self,
        peer: Option<std::net::IpAddr>,
        local: Option<std::net::IpAddr>,
    ) -> Option<CompressionType> {
        if self == Self::Auto {
            let same_machine = peer.is_some_and(|p| p.is_loopback() || Some(p) == local);
            return (!same_machine).then_some(CompressionType::LZ4_FRAME);
        }
        self.codec()
    }

    /// The codec chosen explicitly, if any.
    fn codec(self) -> Option<CompressionType> {
        match self {
            Self::Auto | Self::None => None,
            Self::Lz4 => Some(CompressionType::LZ4_FRAME),
            Self::Zstd => Some(CompressionType::ZSTD),
        }
    }

    /// How shuffle output spilled to local files is compressed by an
    /// executor of `memory_limit` bytes: `Auto` leaves it uncompressed
    /// until a quarter of that is held in spilled files, then LZ4.
    pub(crate) fn for_local_files(self, memory_limit: usize) -> SpillCompression {
        match self {
            Self::Auto => SpillCompression::Lz4Past(memory_limit as u64 / 4),
            Self::None => SpillCompression::Never,
            Self::Lz4 => SpillCompression::Always(CompressionType::LZ4_FRAME),
            Self::Zstd => SpillCompression::Always(CompressionType::ZSTD),
        }
    }
}

impl std::str::FromStr for WireCompression {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "none" => Ok(Self::None),
            "lz4" => Ok(Self::Lz4),
            "zstd" => Ok(Self::Zstd),
            _ => Err(format!(
                "`{text}` is not a compression (use auto, none, lz4 or zstd)"
            )),
        }
    }
}

/// How an executor runs.
#[derive(Clone, Debug)]
pub struct ExecutorConfig {
    /// `http://host:port` of the scheduler.
    pub scheduler_url: String,
    /// Address of the executor's Flight service; port 0 picks a free port
    /// and the real one is registered.
    pub bind: SocketAddr,
    /// Host name other executors and clients reach this one by (default: the
    /// bind address's IP).
    pub advertise_host: Option<String>,
    /// Tasks run at once.
    pub slots: usize,
    /// Where spilled shuffle output and operator spill files go.
    pub work_dir: PathBuf,
    /// Bytes of memory the executor's tasks and shuffle buffers may use.
    pub memory_limit: usize,
    /// Bytes of stored shuffle output kept in memory, all outputs together;
    /// the rest goes to files in the work dir (`None`: [`memory_limit`]
    /// divided by [`SHUFFLE_MEMORY_SHARE`]).
    ///
    /// [`memory_limit`]: ExecutorConfig::memory_limit
    pub shuffle_memory: Option<usize>,
    /// How often the executor tells the scheduler it is alive.
    pub heartbeat_interval: Duration,
    /// How long to keep trying to reach a scheduler that does not answer
    /// yet (it may be starting), with backoff, before giving up.
    pub register_patience: Duration,
    /// How long a draining executor waits for its running tasks and for the
    /// jobs that read its stored output before it stops anyway.
    pub drain_timeout: Duration,
    /// How long an executor that lost its scheduler keeps its stored map
    /// outputs while it registers again: a scheduler restarted from its
    /// state store takes them over instead of running their tasks again.
    pub orphan_grace: Duration,
    /// Compression of shuffle and result data sent over the network.
    pub compression: WireCompression,
    /// Where `/metrics` listens (`--metrics-bind`); `None`: not served.
    pub metrics_bind: Option<SocketAddr>,
    /// User functions this executor can run, by name.
    pub udfs: UdfRegistry,
    /// Credentials, TLS and path rules.
    pub security: ExecutorSecurity,
}

impl ExecutorConfig {
    /// A config with defaults for everything but the scheduler and work dir.
    pub fn new(scheduler_url: impl Into<String>, work_dir: impl Into<PathBuf>) -> Self {
        Self {
            scheduler_url: scheduler_url.into(),
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            advertise_host: None,
            slots: std::thread::available_parallelism().map_or(2, |n| n.get()),
            work_dir: work_dir.into(),
            memory_limit: default_memory_limit(),
            shuffle_memory: None,
            heartbeat_interval: Duration::from_secs(1),
            register_patience: Duration::from_secs(60),
            drain_timeout: Duration::from_secs(300),
            orphan_grace: Duration::from_secs(600),
            compression: WireCompression::Auto,
            metrics_bind: None,
            udfs: UdfRegistry::default(),
            security: ExecutorSecurity::insecure_unrestricted(),
        }
    }
}

/// The part of an executor's memory limit its stored shuffle output may
/// keep in memory by default (1/16). Shuffle output is held from the end of
/// the task that wrote it to the end of its job, beside the operators of
/// the stages that read it, while single-node DataFusion streams the same
/// rows through. Measured at TPC-H SF 10 (`benchmarks/README.md`).
pub const SHUFFLE_MEMORY_SHARE: usize = 16;

impl ExecutorConfig {
    /// Bytes of shuffle output kept in memory (see [`ExecutorConfig::shuffle_memory`]).
    pub fn shuffle_memory_bytes(&self) -> usize {
        self.shuffle_memory
            .unwrap_or(self.memory_limit / SHUFFLE_MEMORY_SHARE)
    }
}

/// Parses a size such as `512M`, `2G`, `1.5GiB` or a plain number of bytes.
pub fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size (e.g. 512M, 2G)"))?;
    let factor: f64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1.0,
        "K" | "KB" | "KIB" => 1024.0,
        "M" | "MB" | "MIB" => 1024.0 * 1024.0,
        "G" | "GB" | "GIB" => 1024.0 * 1024.0 * 1024.0,
        "T" | "TB" | "TIB" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        other => {
            return Err(format!(
                "`{text}` has an unknown unit `{other}` (use K, M, G or T)"
            ));
        }
    };
    let bytes = value * factor;
    if !bytes.is_finite() || bytes < 1.0 {
        return Err(format!("`{text}` is not a usable size"));
    }
    Ok(bytes as usize)
}

/// Half of the memory this process may use: the cgroup limit when there is
/// one, else the machine's memory; 4 GiB if neither can be read.
pub fn default_memory_limit() -> usize {
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok());
    let machine = std::fs::read_to_string("/proc/meminfo").ok().and_then(|s| {
        s.lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<usize>().ok())
            .map(|kb| kb * 1024)
    });
    let total = match (cgroup, machine) {
        (Some(c), Some(m)) => c.min(m),
        (c, m) => c.or(m).unwrap_or(8 << 30),
    };
    total / 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("2X").is_err());
    }

    #[test]
    fn automatic_compression_skips_readers_on_this_machine_and_spills_lz4_past_a_quarter_of_memory()
    {
        let loopback = Some("127.0.0.1".parse().unwrap());
        let lan = Some("10.0.0.7".parse().unwrap());
        let other = Some("10.0.0.8".parse().unwrap());
        let auto = WireCompression::Auto;
        assert_eq!(auto.for_peer(loopback, loopback), None);
        assert_eq!(auto.for_peer(lan, lan), None, "same address: same machine");
        assert_eq!(auto.for_peer(other, lan), Some(CompressionType::LZ4_FRAME));
        assert_eq!(auto.for_peer(None, lan), Some(CompressionType::LZ4_FRAME));
        assert_eq!(
            WireCompression::Lz4.for_peer(loopback, loopback),
            Some(CompressionType::LZ4_FRAME)
        );
        assert_eq!(WireCompression::None.for_peer(other, lan), None);
        assert_eq!(
            auto.for_local_files(8 << 30),
            SpillCompression::Lz4Past(2 << 30)
        );
        assert_eq!(
            WireCompression::None.for_local_files(8 << 30),
            SpillCompression::Never
        );
        assert_eq!(
            WireCompression::Lz4.for_local_files(8 << 30),
            SpillCompression::Always(CompressionType::LZ4_FRAME)
        );
        assert_eq!("ZSTD".parse(), Ok(WireCompression::Zstd));
        assert!("snappy".parse::<WireCompression>().is_err());
    }
}
