//! The seed's protobuf "string service" (Go kit's `stringsvc`) on domi, with
//! typed messages: `Uppercase(s) -> (string, error)`, an error for empty
//! input, and `Count(s) -> int`, each on its own channel, its messages
//! protobuf (prost, derived by hand: no `protoc` needed).
//!
//! Run, a server and a client node in one process:
//! `cargo run --example stringsvc -- "hello, world" ""`
//!
//! Or as two processes:
//! `cargo run --example stringsvc -- --serve 127.0.0.1:7100` (until Ctrl-C), then
//! `cargo run --example stringsvc -- --peer 127.0.0.1:7100 "hello, world" ""`.
//!
//! Your own code enables the codec with `domi = { …, features = ["prost"] }`
//! (the examples and tests of this repository have it on already).
//!
//! For each word the client prints `uppercase(…) = …` (or the service's
//! error) and `count(…) = …`, one line each.

#![allow(clippy::print_stdout)] // an example program: its output is the point.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use domi::typed::{Context, Prost};
use domi::{AppError, BusError, Channel, Handler, Node, TypedError};

/// `rpc Uppercase (UppercaseRequest) returns (UppercaseReply)`.
const UPPERCASE: Channel = Channel(60);
/// `rpc Count (CountRequest) returns (CountReply)`.
const COUNT: Channel = Channel(61);
/// The application error code of `ErrEmpty`.
const ERR_EMPTY: u16 = 1;
const TIMEOUT: Duration = Duration::from_secs(2);

// The messages of the seed's `.proto`, as prost derives them. The reply's
// `err` string field is not needed: the error travels as the bus's
// application error (`AppError` in the handler, `BusError::Application` at
// the caller).

/// `message UppercaseRequest { string s = 1; }`
#[derive(Clone, PartialEq, prost::Message)]
struct UppercaseRequest {
    #[prost(string, tag = "1")]
    s: String,
}

/// `message UppercaseReply { string v = 1; }`
#[derive(Clone, PartialEq, prost::Message)]
struct UppercaseReply {
    #[prost(string, tag = "1")]
    v: String,
}

/// `message CountRequest { string s = 1; }`
#[derive(Clone, PartialEq, prost::Message)]
struct CountRequest {
    #[prost(string, tag = "1")]
    s: String,
}

/// `message CountReply { int64 v = 1; }`
#[derive(Clone, PartialEq, prost::Message)]
struct CountReply {
    #[prost(int64, tag = "1")]
    v: i64,
}

/// The service itself: plain functions, no bus in sight.
fn uppercase(s: &str) -> Result<String, AppError> {
    if s.is_empty() {
        return Err(AppError::new(ERR_EMPTY, "empty string"));
    }
    Ok(s.to_uppercase())
}

fn count(s: &str) -> i64 {
    s.chars().count() as i64
}

#[derive(Parser)]
#[command(about = "Go kit's stringsvc over domi, with protobuf messages")]
struct Args {
    /// Only serve, on this bus address, until Ctrl-C.
    #[arg(long, conflicts_with = "peer")]
    serve: Option<SocketAddr>,
    /// Only ask: the server's bus address.
    #[arg(long)]
    peer: Option<SocketAddr>,
    /// The strings to send.
    #[arg(default_values_t = ["hello, world".to_string(), String::new()])]
    words: Vec<String>,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    if let Some(addr) = args.serve {
        let server = serve(addr)?;
        println!("listening {}", server.local_addr());
        server.stop_on_signals()?;
        std::process::exit(server.wait().code());
    }
    // With no server given, start one here.
    let (_server, peer) = match args.peer {
        Some(peer) => (None, peer),
        None => {
            let server = serve("127.0.0.1:0".parse()?)?;
            let addr = server.local_addr();
            (Some(server), addr)
        }
    };
    let client = Node::builder("stringsvc-client")
        .shards(1)
        .small()
        .peer(peer)
        .start()
        .context("starting the client node")?;
    client.wait_for_provider(UPPERCASE, Duration::from_secs(10))?;
    client.wait_for_provider(COUNT, Duration::from_secs(10))?;
    for s in args.words {
        let req = UppercaseRequest { s: s.clone() };
        match client.request_typed_with::<_, _, UppercaseReply>(Prost, UPPERCASE, &req, TIMEOUT) {
            Ok(reply) => println!("uppercase({s:?}) = {:?}", reply.v),
            Err(TypedError::Bus(BusError::Application { code, message, .. })) => {
                println!("uppercase({s:?}) failed: {message} (code {code})")
            }
            Err(e) => return Err(e).context("uppercase"),
        }
        let req = CountRequest { s: s.clone() };
        let reply: CountReply = client
            .request_typed_with(Prost, COUNT, &req, TIMEOUT)
            .context("count")?;
        println!("count({s:?}) = {}", reply.v);
    }
    Ok(())
}

/// A node serving both methods, inline (they never wait on anything).
fn serve(addr: SocketAddr) -> anyhow::Result<domi::Node> {
    let upper = Handler::typed_sync_with(Prost, |req: UppercaseRequest, _: Context| {
        uppercase(&req.s).map(|v| UppercaseReply { v })
    });
    let count = Handler::typed_sync_with(Prost, |req: CountRequest, _: Context| {
        Ok(CountReply { v: count(&req.s) })
    });
    Node::builder("stringsvc")
        .tcp(addr)
        .shards(1)
        .small()
        .subscribe(UPPERCASE, upper)
        .subscribe(COUNT, count)
        .start()
        .context("starting the server node")
}
