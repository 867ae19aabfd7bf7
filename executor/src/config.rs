//! The executor's configuration: one typed struct, filled from flags or
//! environment variables by the binary, or built in code by the embedded
//! cluster.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use datafusion::arrow::ipc::CompressionType;
use volley_dataflow::UdfRegistry;

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
    /// How often the executor tells the scheduler it is alive.
    pub heartbeat_interval: Duration,
    /// Compression of shuffle data sent over the network.
    pub compression: Option<CompressionType>,
    /// User functions this executor can run, by name.
    pub udfs: UdfRegistry,
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
            heartbeat_interval: Duration::from_secs(1),
            compression: Some(CompressionType::LZ4_FRAME),
            udfs: UdfRegistry::default(),
        }
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
}
