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
