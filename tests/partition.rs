//! A real network partition: one server runs in a network namespace of its
//! own, reached over a veth pair; the test cuts the link (no RST, packets
//! vanish), checks that requests fail over within the silence timeout, then
//! restores the link and checks the node is used again. Namespaces are
//! created and removed by the test; where they cannot be created (no root,
//! no `ip`), the test says so and skips.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::procs::{example_path, Server};
use common::*;
use domi::{BusError, Channel};

const CH: Channel = Channel(50);

struct Netns {
    name: String,
    host_if: String,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Netns {
    /// A namespace with a veth pair: host side `10.231.N.1/24`, inside `10.231.N.2/24`.
    fn create(n: u8) -> Result<Netns, String> {
        let id = std::process::id() % 10_000;
        let ns = Netns {
            name: format!("domi-{id}-{n}"),
            host_if: format!("dh{id}x{n}"),
        };
        let inner = format!("dn{id}x{n}");
        ip(&["netns", "add", &ns.name])?;
        ip(&[
            "link",
            "add",
            &ns.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &inner,
        ])?;
        ip(&["link", "set", &inner, "netns", &ns.name])?;
        ip(&[
            "addr",
            "add",
            &format!("10.231.{n}.1/24"),
            "dev",
            &ns.host_if,
        ])?;
        ip(&["link", "set", &ns.host_if, "up"])?;
        ip(&[
            "netns",
            "exec",
            &ns.name,
            "ip",
            "addr",
            "add",
            &format!("10.231.{n}.2/24"),
            "dev",
            &inner,
        ])?;
        ip(&["netns", "exec", &ns.name, "ip", "link", "set", &inner, "up"])?;
        ip(&["netns", "exec", &ns.name, "ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    fn link(&self, up: bool) {
        ip(&["link", "set", &self.host_if, if up { "up" } else { "down" }]).unwrap();
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["link", "del", &self.host_if]);
        let _ = ip(&["netns", "del", &self.name]);
    }
}

#[test]
fn a_partitioned_node_is_routed_around_and_heals() {
    let ns = match Netns::create(7) {
        Ok(ns) => ns,
        Err(e) => {
            eprintln!("SKIPPED: cannot create network namespaces here: {e}");
            return;
        }
    };
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &ns.name])
        .arg(example_path("server"));
    let far = Server::start_cmd("far", cmd, &["--tcp", "10.231.7.2:0", "--node-id", "961"]);
    let near = Server::start("near", 962);
    let client = small("client")
        .peers([far.addr, near.addr])
        .start()
        .unwrap();
    client.wait_for_providers(CH, 2, SETTLE).unwrap();
    for _ in 0..20 {
        client.request(CH, b"x", Duration::from_secs(5)).unwrap();
    }

    ns.link(false);
    let cut = Instant::now();
    let mut late_failures = 0;
    let mut answered = 0;
    while cut.elapsed() < Duration::from_secs(6) {
        let t = Instant::now();
        match client.request(CH, b"x", Duration::from_secs(5)) {
            Ok(_) => answered += 1,
            Err(BusError::PeerLost { .. }) | Err(BusError::Timeout { .. }) => {
                if t > cut + Duration::from_secs(4) {
                    late_failures += 1;
                }
            }
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert!(answered > 0);
    assert_eq!(
        late_failures, 0,
        "within the timeout every request goes to the reachable node"
    );
    assert_eq!(
        client.peers().providers(CH),
        [domi::NodeId(near.id)],
        "the far node is out of rotation"
    );

    ns.link(true);
    wait_until("the far node to be back", Duration::from_secs(20), || {
        client.peers().providers(CH).len() == 2
    });
    // Round-robin over both again; every request is answered.
    for _ in 0..20 {
        client.request(CH, b"x", Duration::from_secs(5)).unwrap();
    }
    drop(far);
}
