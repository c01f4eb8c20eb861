//! Advertised addresses: a node bound to an unspecified address never
//! registers it; with `advertise` the etcd record holds the advertised bus
//! and admin addresses, and peers reach the node there.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::etcd::Etcd;
use common::{wait_until, SETTLE};
use domi::{Channel, ConfigError, Handler, Node, StartError};

const CH: Channel = Channel(50);

fn record_of(etcd: &Etcd, cluster: &str, node: &Node) -> serde_json::Value {
    let key = format!("/domi/{cluster}/nodes/{}", node.id().get());
    let mut value = None;
    wait_until("the node's record", SETTLE, || {
        value = etcd.get(&key);
        value.is_some()
    });
    serde_json::from_str(&value.unwrap()).expect("a JSON record")
}

fn addr_field(record: &serde_json::Value, field: &str) -> SocketAddr {
    record[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} in {record}"))
        .parse()
        .unwrap()
}

#[test]
fn a_node_bound_to_every_interface_registers_its_advertised_addresses() {
    let etcd = Etcd::start();
    let server = Node::builder("server")
        .shards(1)
        .small()
        .cluster("adv")
        .etcd([etcd.endpoint()])
        .tcp("0.0.0.0:0".parse().unwrap())
        .advertise("127.0.0.2:0".parse().unwrap())
        .http("0.0.0.0:0".parse().unwrap())
        .advertise_http("127.0.0.3:0".parse().unwrap())
        .subscribe(CH, Handler::sync(|req| drop(req.reply(b"pong"))))
        .start()
        .unwrap();
    let port = server.local_addr().port();
    assert!(server.local_addr().ip().is_unspecified());
    assert_eq!(
        server.advertised_addr(),
        SocketAddr::from(([127, 0, 0, 2], port))
    );
    let record = record_of(&etcd, "adv", &server);
    assert_eq!(addr_field(&record, "tcp"), server.advertised_addr());
    let http = addr_field(&record, "http");
    assert_eq!(http.ip().to_string(), "127.0.0.3");
    assert_eq!(Some(http.port()), server.http_addr().map(|a| a.port()));

    // A peer learns the advertised address from etcd and reaches it there.
    let client = Node::builder("client")
        .shards(1)
        .small()
        .cluster("adv")
        .etcd([etcd.endpoint()])
        .start()
        .unwrap();
    client.wait_for_provider(CH, SETTLE).unwrap();
    assert_eq!(
        client.peers().get(server.id()).map(|p| p.addr),
        Some(server.advertised_addr())
    );
    assert_eq!(
        client.request(CH, b"ping", Duration::from_secs(2)).unwrap(),
        b"pong"
    );
}

#[test]
fn without_an_advertise_address_an_unspecified_bind_is_never_registered() {
    let etcd = Etcd::start();
    let node = Node::builder("any")
        .shards(1)
        .small()
        .cluster("noadv")
        .etcd([etcd.endpoint()])
        .tcp("0.0.0.0:0".parse().unwrap())
        .start()
        .unwrap();
    let record = record_of(&etcd, "noadv", &node);
    let tcp = addr_field(&record, "tcp");
    assert!(!tcp.ip().is_unspecified(), "{record}");
    assert_eq!(tcp, node.advertised_addr());
    assert_eq!(tcp.port(), node.local_addr().port());
    // It is one of this host's own addresses (nothing dials it here).
    let host = domi_core::advertise::host_addrs();
    assert!(
        host.iter().any(|h| h.ip == tcp.ip()),
        "{tcp} not in {host:?}"
    );
}

#[test]
fn an_unspecified_advertise_address_is_a_config_error() {
    let r = Node::builder("bad")
        .shards(1)
        .small()
        .advertise("0.0.0.0:7000".parse().unwrap())
        .start();
    assert!(
        matches!(
            r,
            Err(StartError::Core(domi_core::StartError::Config(
                ConfigError::Advertise(_)
            )))
        ),
        "{r:?}"
    );
}

#[test]
fn the_server_example_bound_to_every_interface_advertises_what_it_is_told() {
    let etcd = Etcd::start();
    let ep = etcd.endpoint();
    let server = common::procs::Server::start_cmd(
        "adv-example",
        common::procs::example("server"),
        &[
            "--tcp",
            "0.0.0.0:0",
            "--advertise",
            "127.0.0.2:0",
            "--etcd",
            &ep,
            "--cluster",
            "advx",
        ],
    );
    let key = format!("/domi/advx/nodes/{}", server.id);
    let mut value = None;
    wait_until("the example's record", SETTLE, || {
        value = etcd.get(&key);
        value.is_some()
    });
    let record: serde_json::Value = serde_json::from_str(&value.unwrap()).unwrap();
    let tcp = addr_field(&record, "tcp");
    assert_eq!(tcp, SocketAddr::from(([127, 0, 0, 2], server.addr.port())));
    let client = Node::builder("client")
        .shards(1)
        .small()
        .cluster("advx")
        .etcd([ep])
        .start()
        .unwrap();
    client.wait_for_provider(CH, SETTLE).unwrap();
    assert_eq!(
        client.request(CH, b"ping", Duration::from_secs(2)).unwrap(),
        b"pong"
    );
}
