//! A network namespace reached over a veth pair, for real network
//! partitions: the test cuts the link (no RST, packets vanish) and heals it.
//! Created and removed by the test (names carry the test's pid); where
//! namespaces cannot be created (no root, no `ip`), [`Netns::create`] says
//! why and the caller skips.
//!
//! Subnets: `10.231.N.0/24`, host side `.1`, inside `.2`. Test binaries may
//! run at the same time, so each picks its own N (tests/partition.rs uses 7;
//! [`Netns::pid_subnet`] gives 8..=207 from the pid) and [`Netns::create`]
//! refuses a subnet some interface already uses.
//!
//! Multi-host tests (tests/common/hosts.rs) take their subnets from
//! 208..=254, see [`Netns::free_subnets`].
//!
//! Namespaces can also reach each other, routed through the root namespace:
//! [`Netns::forward`] on each and [`Netns::route_to`] both ways.

#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::{Command, Stdio};

/// A namespace with a veth pair; removed on drop.
pub struct Netns {
    /// The namespace's name (for `ip netns exec`).
    pub name: String,
    /// The host side of the veth pair.
    pub host_if: String,
    /// The subnet's third octet, N.
    pub n: u8,
}

/// Runs `ip <args>`; its standard error on failure.
pub fn ip(args: &[&str]) -> Result<(), String> {
    ip_output(args).map(drop)
}

fn ip_output(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Netns {
    /// A subnet number in 8..=207 derived from this process's pid (N=7 is
    /// tests/partition.rs's).
    pub fn pid_subnet() -> u8 {
        8 + (std::process::id() % 200) as u8
    }

    /// A namespace with a veth pair: host side `10.231.N.1/24`, inside `10.231.N.2/24`.
    pub fn create(n: u8) -> Result<Netns, String> {
        let id = std::process::id() % 10_000;
        let in_use = ip_output(&["-o", "addr", "show", "to", &format!("10.231.{n}.0/24")])?;
        if !in_use.trim().is_empty() {
            return Err(format!(
                "subnet 10.231.{n}.0/24 is already in use: {}",
                in_use.trim()
            ));
        }
        // Built before the first `ip` call: a failure half-way drops (and
        // removes) whatever was created.
        let ns = Netns {
            name: format!("domi-{id}-{n}"),
            host_if: format!("dh{id}x{n}"),
            n,
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

    /// The host side's address, `10.231.N.1`.
    pub fn host_ip(&self) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 231, self.n, 1))
    }

    /// The address inside the namespace, `10.231.N.2`.
    pub fn inner_ip(&self) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 231, self.n, 2))
    }

    /// `ip netns exec NAME <program>`: a command running `program` inside.
    pub fn exec(&self, program: impl AsRef<Path>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name])
            .arg(program.as_ref());
        cmd
    }

    /// Sets the host side of the link up or down.
    pub fn link(&self, up: bool) {
        ip(&["link", "set", &self.host_if, if up { "up" } else { "down" }]).unwrap();
    }

    /// Whether some interface already has an address in `10.231.N.0/24`.
    pub fn subnet_in_use(n: u8) -> Result<bool, String> {
        let in_use = ip_output(&["-o", "addr", "show", "to", &format!("10.231.{n}.0/24")])?;
        Ok(!in_use.trim().is_empty())
    }

    /// `k` subnet numbers from `range` that no interface uses now, starting
    /// at a place derived from this process's pid and wrapping around (so
    /// test binaries running at once rarely pick the same ones; a clash
    /// left is caught by [`Netns::create`]'s own check).
    pub fn free_subnets(k: usize, range: std::ops::RangeInclusive<u8>) -> Result<Vec<u8>, String> {
        let all: Vec<u8> = range.collect();
        let start = std::process::id() as usize % all.len().max(1);
        let mut picked = Vec::with_capacity(k);
        for i in 0..all.len() {
            if picked.len() == k {
                break;
            }
            let n = all[(start + i) % all.len()];
            if !Netns::subnet_in_use(n)? {
                picked.push(n);
            }
        }
        if picked.len() < k {
            return Err(format!(
                "fewer than {k} free subnets in 10.231.{all:?}.0/24"
            ));
        }
        Ok(picked)
    }

    /// Lets the root namespace forward packets that arrive from this
    /// namespace: IPv4 `forwarding` on the host side of the veth pair only
    /// (`net.ipv4.conf.<host_if>.forwarding`, which the kernel checks on the
    /// interface a packet comes in on). The global `net.ipv4.ip_forward` is
    /// left alone, and the setting goes away with the interface on drop.
    pub fn forward(&self) -> Result<(), String> {
        let path = format!("/proc/sys/net/ipv4/conf/{}/forwarding", self.host_if);
        std::fs::write(&path, "1").map_err(|e| format!("writing 1 to {path}: {e}"))
    }

    /// A route inside this namespace to `other`'s subnet through the host
    /// side of this namespace's link. With [`Netns::forward`] on both and a
    /// route each way, the two reach each other's inside addresses, routed
    /// through the root namespace (never over loopback).
    pub fn route_to(&self, other: &Netns) -> Result<(), String> {
        self.ip(&[
            "route",
            "add",
            &format!("10.231.{}.0/24", other.n),
            "via",
            &self.host_ip().to_string(),
        ])
    }

    /// Runs `ip <args>` inside this namespace.
    pub fn ip(&self, args: &[&str]) -> Result<(), String> {
        let mut all = vec!["netns", "exec", &self.name, "ip"];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// Cuts the link: packets vanish both ways, no RST.
    pub fn cut(&self) {
        self.link(false);
    }

    /// Restores the link.
    pub fn heal(&self) {
        self.link(true);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["link", "del", &self.host_if]);
        let _ = ip(&["netns", "del", &self.name]);
    }
}
