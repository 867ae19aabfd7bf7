//! Many hosts on one machine: network namespaces joined by a bridge, each
//! with its own address on a private test subnet (`10.201.N.0/24`), and the
//! real binaries started inside them. A process in one namespace reaches
//! the others only by those addresses, never by 127.0.0.1, as on separate
//! machines; they still share the filesystem (only the network is split),
//! so tests keep tables and outputs in an S3 server on its own host.
//!
//! Links can be shaped (`tc`: latency where the kernel has `netem`,
//! bandwidth always), cut (the host's cable pulled: its veth goes down) and
//! filtered between two hosts (`nft`, inside their namespaces).
//!
//! Needs root, `ip` (iproute2), `tc` and `nft` (nftables): the test script
//! installs them; without them the harness fails saying so, it never skips.
//! Every namespace (and with them the bridge and veths) is deleted when the
//! [`Network`] is dropped, also when a test fails.

use std::ffi::OsStr;
use std::net::Ipv4Addr;
use std::process::{Command, Output};

/// The first octets of every test subnet: `10.201.N.0/24`, N claimed per
/// [`Network`].
const PREFIX: [u8; 2] = [10, 201];

/// One host of a [`Network`]: a namespace with one interface and address.
#[derive(Debug, Clone)]
pub struct Host {
    /// Its name in the test (`scheduler`, `executor-1`, ...).
    pub name: String,
    /// Its address on the test subnet.
    pub address: Ipv4Addr,
    namespace: String,
    /// Its interface, inside its namespace.
    interface: String,
    /// The other end of its cable, on the bridge.
    bridge_port: String,
}

/// Network namespaces on one bridge; deleted on drop.
#[derive(Debug)]
pub struct Network {
    subnet: u8,
    hub: String,
    hosts: Vec<Host>,
}

/// Runs a command that must succeed; panics with its output otherwise.
fn run(program: &str, args: &[&str]) -> Output {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `{program}` ({e}): the multi-host tests need root and iproute2 \
                 (ip, tc) and nftables (nft); the test script (./test.sh) installs them"
            )
        });
    assert!(
        output.status.success(),
        "`{program} {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn try_run(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

impl Network {
    /// Creates one namespace per name, each with an address on a fresh
    /// subnet, all on one bridge.
    pub fn create(names: &[&str]) -> Network {
        assert!(names.len() < 200, "a test network has at most 199 hosts");
        // Claim a subnet: creating its hub namespace is atomic, so two
        // tests (or test binaries) running at once never share one.
        let subnet = (0..=250u8)
            .find(|n| try_run("ip", &["netns", "add", &format!("volley-{n}-hub")]))
            .unwrap_or_else(|| {
                run("ip", &["netns", "list"]);
                panic!(
                    "cannot create a network namespace (volley-N-hub): the multi-host tests \
                     need root and iproute2; or 251 test networks exist already \
                     (`ip netns list`; delete stale ones with `ip netns del`)"
                )
            });
        let hub = format!("volley-{subnet}-hub");
        let mut network = Network {
            subnet,
            hub: hub.clone(),
            hosts: Vec::new(),
        };
        network.in_hub(&["ip", "link", "add", "br0", "type", "bridge"]);
        network.in_hub(&["ip", "link", "set", "br0", "up"]);
        for (index, name) in names.iter().enumerate() {
            let host = Host {
                name: name.to_string(),
                address: Ipv4Addr::new(PREFIX[0], PREFIX[1], subnet, 10 + index as u8),
                namespace: format!("volley-{subnet}-{index}"),
                interface: "eth0".into(),
                bridge_port: format!("port{index}"),
            };
            run("ip", &["netns", "add", &host.namespace]);
            // Pushed before it is complete, so a failure below still
            // deletes the namespace.
            network.hosts.push(host.clone());
            network.in_hub(&[
                "ip",
                "link",
                "add",
                &host.bridge_port,
                "type",
                "veth",
                "peer",
                "name",
                &host.interface,
                "netns",
                &host.namespace,
            ]);
            network.in_hub(&["ip", "link", "set", &host.bridge_port, "master", "br0"]);
            network.in_hub(&["ip", "link", "set", &host.bridge_port, "up"]);
            let cidr = format!("{}/24", host.address);
            network.on(&host, &["ip", "addr", "add", &cidr, "dev", &host.interface]);
            network.on(&host, &["ip", "link", "set", &host.interface, "up"]);
            network.on(&host, &["ip", "link", "set", "lo", "up"]);
        }
        network
    }

    /// The host named `name`.
    pub fn host(&self, name: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host {name} in this network"))
    }

    /// Every host's address.
    pub fn addresses(&self) -> Vec<Ipv4Addr> {
        self.hosts.iter().map(|h| h.address).collect()
    }

    /// The subnet, `10.201.N.0/24`.
    pub fn subnet(&self) -> String {
        format!("{}.{}.{}.0/24", PREFIX[0], PREFIX[1], self.subnet)
    }

    fn in_hub(&self, command: &[&str]) -> Output {
        let mut args = vec!["netns", "exec", self.hub.as_str()];
        args.extend_from_slice(command);
        run("ip", &args)
    }

    /// `ip netns exec NAMESPACE COMMAND...`, the arguments of `ip`.
    fn in_namespace<'a>(host: &'a Host, command: &[&'a str]) -> Vec<&'a str> {
        let mut args = vec!["netns", "exec", host.namespace.as_str()];
        args.extend_from_slice(command);
        args
    }

    /// Runs a command (that must succeed) on `host`.
    pub fn on(&self, host: &Host, command: &[&str]) -> Output {
        run("ip", &Self::in_namespace(host, command))
    }

    /// A command that runs `program` on `host`.
    pub fn command(&self, host: &Host, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &host.namespace])
            .arg(program);
        command
    }

    /// Shapes `host`'s outgoing traffic: `delay_ms` of latency and `rate`
    /// (e.g. `1gbit`) of bandwidth with `netem`; on a kernel without
    /// `netem` (some VMs), bandwidth only, with `tbf`. Returns what was
    /// applied.
    pub fn shape(&self, host: &Host, delay_ms: u32, rate: &str) -> String {
        let delay = format!("{delay_ms}ms");
        let netem = [
            "tc",
            "qdisc",
            "add",
            "dev",
            &host.interface,
            "root",
            "netem",
            "delay",
            &delay,
            "rate",
            rate,
        ];
        let args = Self::in_namespace(host, &netem);
        if try_run("ip", &args) {
            return format!("netem delay {delay} rate {rate}");
        }
        self.on(
            host,
            &[
                "tc",
                "qdisc",
                "add",
                "dev",
                &host.interface,
                "root",
                "tbf",
                "rate",
                rate,
                "burst",
                "256kb",
                "latency",
                "50ms",
            ],
        );
        format!("tbf rate {rate} (this kernel has no netem: no added latency)")
    }

    /// Pulls `host`'s cable: its bridge port goes down, so nothing reaches
    /// it or leaves it; connections stay open, as after a real cut.
    pub fn cut(&self, host: &Host) {
        self.in_hub(&["ip", "link", "set", &host.bridge_port, "down"]);
    }

    /// Plugs `host`'s cable back in.
    pub fn restore(&self, host: &Host) {
        self.in_hub(&["ip", "link", "set", &host.bridge_port, "up"]);
    }

    /// Drops all traffic between `a` and `b` (both directions, filtered in
    /// both namespaces), while both still reach everyone else.
    pub fn separate(&self, a: &Host, b: &Host) {
        for (from, to) in [(a, b), (b, a)] {
            let peer = to.address.to_string();
            self.on(from, &["nft", "add", "table", "inet", "volley"]);
            for (chain, hook, direction) in [("out", "output", "daddr"), ("in", "input", "saddr")] {
                let spec = format!("{{ type filter hook {hook} priority 0 ; }}");
                self.on(
                    from,
                    &["nft", "add", "chain", "inet", "volley", chain, &spec],
                );
                self.on(
                    from,
                    &[
                        "nft", "add", "rule", "inet", "volley", chain, "ip", direction, &peer,
                        "drop",
                    ],
                );
            }
        }
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        // Deleting a namespace deletes its interfaces, and a veth goes
        // with its peer; the bridge goes with the hub.
        for host in &self.hosts {
            let _ = Command::new("ip")
                .args(["netns", "del", &host.namespace])
                .output();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.hub])
            .output();
    }
}
