//! Which address a node tells the cluster (etcd records, its own peer-table
//! entry), as a pure decision: the bind address is where it listens, the
//! advertised address is where others reach it. An unspecified address
//! (`0.0.0.0`, `::`) is never advertised: others cannot dial it (and a peer
//! that tries reaches its own localhost).
//!
//! The rule:
//! 1. An explicit advertise address wins (port 0 there means "the bound
//!    port"); it must not be unspecified.
//! 2. A node bound to a specific address advertises it.
//! 3. A node bound to an unspecified address advertises the first address
//!    of the same family on an interface that is up and not loopback, in
//!    the order the OS lists interfaces (`getifaddrs`), skipping IPv6
//!    link-local addresses. With none, it refuses to start: bind a specific
//!    address or set one to advertise.

use std::net::{IpAddr, SocketAddr};

/// An address of this host's interfaces, as the OS lists them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostAddr {
    /// The address.
    pub ip: IpAddr,
    /// Whether its interface is up.
    pub up: bool,
    /// Whether its interface is a loopback one.
    pub loopback: bool,
}

/// Why no address can be advertised.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AdvertiseError {
    /// The advertise address given is itself unspecified.
    #[error("cannot advertise the unspecified address {addr}: give one peers can dial")]
    Unspecified {
        /// The address given.
        addr: SocketAddr,
    },
    /// Bound to an unspecified address, and no interface of that family
    /// has a routable address.
    #[error(
        "bound to {bound} and no up, non-loopback interface has an address of that family: \
         bind a specific address or set one to advertise"
    )]
    NoRoutableAddress {
        /// The bind address.
        bound: SocketAddr,
    },
}

fn usable(ip: IpAddr, v4: bool) -> bool {
    match ip {
        IpAddr::V4(a) => v4 && !a.is_unspecified() && !a.is_loopback() && !a.is_link_local(),
        IpAddr::V6(a) => {
            !v4 && !a.is_unspecified()
                && !a.is_loopback()
                // fe80::/10: valid only with a scope, useless in a record.
                && (a.segments()[0] & 0xffc0) != 0xfe80
        }
    }
}

/// The address to advertise for a node bound at `bound` (its real port),
/// given the configured `advertise` and this host's addresses.
pub fn advertised(
    bound: SocketAddr,
    advertise: Option<SocketAddr>,
    host: &[HostAddr],
) -> Result<SocketAddr, AdvertiseError> {
    if let Some(mut a) = advertise {
        if a.ip().is_unspecified() {
            return Err(AdvertiseError::Unspecified { addr: a });
        }
        if a.port() == 0 {
            a.set_port(bound.port());
        }
        return Ok(a);
    }
    if !bound.ip().is_unspecified() {
        return Ok(bound);
    }
    let v4 = bound.is_ipv4();
    host.iter()
        .find(|h| h.up && !h.loopback && usable(h.ip, v4))
        .map(|h| SocketAddr::new(h.ip, bound.port()))
        .ok_or(AdvertiseError::NoRoutableAddress { bound })
}

/// This host's interface addresses (empty if the OS will not say).
pub fn host_addrs() -> Vec<HostAddr> {
    use nix::net::if_::InterfaceFlags;
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    addrs
        .filter_map(|i| {
            let sa = i.address?;
            let ip = if let Some(v4) = sa.as_sockaddr_in() {
                IpAddr::V4(std::net::Ipv4Addr::from(v4.ip()))
            } else {
                IpAddr::V6(sa.as_sockaddr_in6()?.ip())
            };
            Some(HostAddr {
                ip,
                up: i.flags.contains(InterfaceFlags::IFF_UP),
                loopback: i.flags.contains(InterfaceFlags::IFF_LOOPBACK),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn host(ip: &str, up: bool, loopback: bool) -> HostAddr {
        HostAddr {
            ip: ip.parse().unwrap(),
            up,
            loopback,
        }
    }

    #[test]
    fn an_explicit_address_wins_and_borrows_the_bound_port() {
        let h = [host("10.1.0.5", true, false)];
        assert_eq!(
            advertised(sa("0.0.0.0:7000"), Some(sa("10.9.9.9:0")), &h),
            Ok(sa("10.9.9.9:7000"))
        );
        assert_eq!(
            advertised(sa("0.0.0.0:7000"), Some(sa("10.9.9.9:7100")), &h),
            Ok(sa("10.9.9.9:7100"))
        );
        assert_eq!(
            advertised(sa("0.0.0.0:7000"), Some(sa("0.0.0.0:7000")), &h),
            Err(AdvertiseError::Unspecified {
                addr: sa("0.0.0.0:7000")
            })
        );
    }

    #[test]
    fn a_specific_bind_address_is_advertised_as_is() {
        assert_eq!(
            advertised(sa("127.0.0.2:7000"), None, &[]),
            Ok(sa("127.0.0.2:7000"))
        );
    }

    #[test]
    fn an_unspecified_bind_picks_the_first_routable_address_of_its_family() {
        let h = [
            host("127.0.0.1", true, true),
            host("::1", true, true),
            host("10.0.0.9", false, false), // down
            host("169.254.1.1", true, false),
            host("fe80::1", true, false),
            host("2001:db8::7", true, false),
            host("10.0.0.7", true, false),
            host("10.0.0.8", true, false),
        ];
        assert_eq!(
            advertised(sa("0.0.0.0:7000"), None, &h),
            Ok(sa("10.0.0.7:7000"))
        );
        assert_eq!(
            advertised(sa("[::]:7000"), None, &h),
            Ok(sa("[2001:db8::7]:7000"))
        );
    }

    #[test]
    fn with_only_loopback_an_unspecified_bind_is_refused() {
        let h = [host("127.0.0.1", true, true)];
        assert_eq!(
            advertised(sa("0.0.0.0:7000"), None, &h),
            Err(AdvertiseError::NoRoutableAddress {
                bound: sa("0.0.0.0:7000")
            })
        );
    }

    #[test]
    fn this_host_lists_its_loopback() {
        assert!(host_addrs()
            .iter()
            .any(|h| h.loopback && h.ip.is_loopback()));
    }
}
