//! The chat example in real browsers: headless Chromium (Debian's
//! `chromium` and `chromium-driver`, installed by `make setup`) driven
//! through WebDriver (fantoccini) against two gateways and two room nodes,
//! each an example process on one private etcd.
//!
//! Alice (gateway 1) and Bob (gateway 2) share the room "lobby", Carol
//! (gateway 2) is in "other": Alice's and Bob's messages reach each other
//! and never Carol. Then the room node owning "lobby" is killed (SIGKILL)
//! and both keep talking on the same WebSockets: the other room node takes
//! the room over. A screenshot of Alice's page goes to
//! `target/chat/chat.png`. Every wait polls the page with a deadline.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::etcd::Etcd;
use common::procs::{chat_example, drain, parse_http_answer, read, Server};
use domi::NodeId;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

/// Deadline for anything the page should show.
const SHOWN: Duration = Duration::from_secs(20);
/// Deadline for chromedriver and the cluster to be ready.
const READY: Duration = Duration::from_secs(30);

/// A program on `PATH`.
fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// A running chromedriver in a process group of its own (the browsers it
/// starts are in it too); the group is killed on drop.
struct Driver {
    child: Child,
    url: String,
    log: Arc<Mutex<String>>,
}

impl Driver {
    fn start() -> Driver {
        use std::os::unix::process::CommandExt;
        let missing = |what: &str| {
            panic!("{what} not found on PATH: run `make setup` (installs Debian's chromium and chromium-driver)")
        };
        let driver = on_path("chromedriver").unwrap_or_else(|| missing("chromedriver"));
        on_path("chromium").unwrap_or_else(|| missing("chromium"));
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("local addr").port()
        };
        let mut child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("chromedriver starts");
        let log = drain(child.stdout.take().expect("piped stdout"));
        let err = drain(child.stderr.take().expect("piped stderr"));
        let driver = Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + READY;
        loop {
            if get(addr, "/status").is_some_and(|body| body.contains("\"ready\":true")) {
                return driver;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver not ready within {READY:?}:\n{}{}",
                read(&driver.log),
                read(&err)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The whole group: chromedriver and any browser left behind.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.wait();
    }
}

/// One user: a headless Chromium session on a gateway's page.
struct User {
    name: &'static str,
    client: Client,
}

fn capabilities() -> serde_json::Map<String, Value> {
    let chromium = on_path("chromium").expect("chromium on PATH");
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=900,720"],
        },
    });
    caps.as_object().expect("an object").clone()
}

impl User {
    /// Opens the gateway's page and joins `room` as `name`.
    async fn join(driver: &Driver, web: SocketAddr, name: &'static str, room: &str) -> User {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(capabilities())
            .connect(&driver.url)
            .await
            .unwrap_or_else(|e| panic!("no browser session: {e}\n{}", read(&driver.log)));
        let user = User { name, client };
        user.client
            .goto(&format!("http://{web}/"))
            .await
            .expect("the page loads");
        user.until("the WebSocket is open", |u| async move {
            u.text("status").await == "connected"
        })
        .await;
        user.field("name", name).await;
        user.field("room", room).await;
        user.click("join").await;
        let r = room.to_owned();
        user.until(&format!("{name} is in {room}"), |u| {
            let r = r.clone();
            async move { u.data("room").await == r }
        })
        .await;
        user
    }

    async fn field(&self, id: &str, value: &str) {
        let input = self
            .client
            .find(Locator::Id(id))
            .await
            .expect("the input exists");
        input.clear().await.expect("clear");
        input.send_keys(value).await.expect("typing");
    }

    async fn click(&self, id: &str) {
        self.client
            .find(Locator::Id(id))
            .await
            .expect("the button exists")
            .click()
            .await
            .expect("click");
    }

    async fn say(&self, text: &str) {
        self.field("text", text).await;
        self.click("send").await;
    }

    async fn eval(&self, js: &str) -> Value {
        self.client
            .execute(js, vec![])
            .await
            .expect("the script runs")
    }

    /// An element's visible text.
    async fn text(&self, id: &str) -> String {
        let js = format!("return document.getElementById('{id}').innerText");
        self.eval(&js).await.as_str().unwrap_or_default().to_owned()
    }

    /// A `data-` attribute of the page's body.
    async fn data(&self, key: &str) -> String {
        let js = format!("return document.body.dataset['{key}'] || ''");
        self.eval(&js).await.as_str().unwrap_or_default().to_owned()
    }

    async fn log(&self) -> String {
        self.text("log").await
    }

    /// Polls `cond` until it holds; panics after [`SHOWN`] with the log.
    async fn until<'a, F, Fut>(&'a self, what: &str, cond: F)
    where
        F: Fn(&'a User) -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + SHOWN;
        while !cond(self).await {
            if Instant::now() >= deadline {
                panic!(
                    "{}'s page: timed out waiting for {what}; log:\n{}",
                    self.name,
                    self.log().await
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the log shows `text`.
    async fn sees(&self, text: &str) {
        let t = text.to_owned();
        self.until(&format!("{text:?} in the log"), |u| {
            let t = t.clone();
            async move { u.log().await.contains(&t) }
        })
        .await;
    }
}

/// The body of `GET path` when it answers 200. (chromedriver refuses a
/// `Host` other than a local address and keeps the connection open, so
/// the body ends at its `Content-Length`.)
fn get(addr: SocketAddr, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).ok()?;
        raw.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&raw);
        if let Some((code, headers, body)) = parse_http_answer(&text) {
            let length = headers
                .iter()
                .find(|(k, _)| k == "content-length")
                .and_then(|(_, v)| v.parse::<usize>().ok());
            if n == 0 || length.is_some_and(|l| body.len() >= l) {
                return (code == 200).then_some(body);
            }
        }
        if n == 0 {
            return None;
        }
    }
}

/// A gateway's `/status` JSON.
fn gateway_status(web: SocketAddr) -> Option<Value> {
    serde_json::from_str(&get(web, "/status")?).ok()
}

fn ids(v: &Value, key: &str) -> Vec<u16> {
    let mut ids: Vec<u16> = v[key]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i.as_u64().map(|i| i as u16))
        .collect();
    ids.sort_unstable();
    ids
}

fn screenshot_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/chat/chat.png")
}

#[test]
fn two_users_talk_across_gateways_and_survive_a_room_node_kill() {
    common::test_logs();
    let driver = Driver::start();
    let etcd = Etcd::start();
    let url = etcd.endpoint();
    let room_args = ["--room", "--etcd", &url, "--cluster", "chat-test"];
    let mut rooms = [
        Server::start_cmd("room-1", chat_example(), &room_args),
        Server::start_cmd("room-2", chat_example(), &room_args),
    ];
    let gw_args = [
        "--gateway",
        "--etcd",
        &url,
        "--cluster",
        "chat-test",
        "--http",
        "127.0.0.1:0",
    ];
    let gws = [
        Server::start_cmd("gateway-1", chat_example(), &gw_args),
        Server::start_cmd("gateway-2", chat_example(), &gw_args),
    ];
    let web: Vec<SocketAddr> = gws
        .iter()
        .map(|g| g.http.expect("a gateway prints its web address"))
        .collect();
    let mut room_ids: Vec<u16> = rooms.iter().map(|r| r.id).collect();
    room_ids.sort_unstable();
    let mut gw_ids: Vec<u16> = gws.iter().map(|g| g.id).collect();
    gw_ids.sort_unstable();
    // Both gateways see both room nodes and each other (so the room nodes,
    // watching the same etcd, see the gateways too).
    let deadline = Instant::now() + READY;
    for &w in &web {
        loop {
            let status = gateway_status(w);
            let ready = status
                .as_ref()
                .is_some_and(|s| ids(s, "room_nodes") == room_ids && ids(s, "gateways") == gw_ids);
            if ready {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "gateway at {w} not ready: {status:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    // The room node owning "lobby": rendezvous hashing over both.
    let providers: Vec<NodeId> = room_ids.iter().map(|&i| NodeId::new(i).unwrap()).collect();
    let key = domi::rendezvous::key_hash(b"lobby");
    let owner = domi::rendezvous::select(&providers, key, |_| false)
        .expect("an owner")
        .get();
    let survivor = *room_ids.iter().find(|&&i| i != owner).expect("two rooms");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let browsers = async {
        let alice = User::join(&driver, web[0], "alice", "lobby").await;
        let bob = User::join(&driver, web[1], "bob", "lobby").await;
        let carol = User::join(&driver, web[1], "carol", "other").await;
        assert_eq!(alice.data("node").await, owner.to_string());

        alice.say("hello from alice").await;
        bob.sees("hello from alice").await;
        alice.sees("hello from alice").await;
        // Carol's own later message reaches her; Alice's never did.
        carol.say("carol is alone here").await;
        carol.sees("carol is alone here").await;
        assert!(
            !carol.log().await.contains("hello from alice"),
            "another room's message reached carol:\n{}",
            carol.log().await
        );
        bob.say("hi alice, bob here").await;
        alice.sees("hi alice, bob here").await;

        // Kill the room's owner: the same sockets go on talking.
        let killed = rooms.iter_mut().find(|r| r.id == owner).expect("owner");
        killed.child.kill().expect("SIGKILL");
        killed.child.wait().expect("reaped");
        let killed_at = Instant::now();
        alice.say("still here after the failover").await;
        bob.sees("still here after the failover").await;
        eprintln!(
            "room node {owner} killed: bob saw alice's next message {} ms later (room node {survivor})",
            killed_at.elapsed().as_millis()
        );
        alice.sees("still here after the failover").await;
        alice
            .sees(&format!("now served by room node {survivor}"))
            .await;
        bob.say("bob too").await;
        alice.sees("bob too").await;
        carol.say("carol again").await;
        carol.sees("carol again").await;
        assert!(!carol.log().await.contains("bob too"));
        // At the end, after everything had time to arrive: nothing of the
        // lobby ever reached the other room.
        let other = carol.log().await;
        for line in [
            "hello from alice",
            "hi alice, bob here",
            "still here after the failover",
            "bob too",
        ] {
            assert!(!other.contains(line), "{line:?} reached carol:\n{other}");
        }
        for u in [&alice, &bob, &carol] {
            assert_eq!(u.data("opens").await, "1", "{} reconnected", u.name);
            assert_eq!(u.text("status").await, "connected", "{}", u.name);
        }
        // Each message once, even if a say was retried.
        let log = alice.log().await;
        assert_eq!(log.matches("still here after the failover").count(), 1);

        let png = alice.client.screenshot().await.expect("a screenshot");
        let path = screenshot_path();
        std::fs::create_dir_all(path.parent().unwrap()).expect("target/chat");
        std::fs::write(&path, &png).expect("the screenshot is written");
        for u in [alice, bob, carol] {
            let _ = u.client.close().await;
        }
    };
    use futures_lite::FutureExt;
    let outcome = rt.block_on(std::panic::AssertUnwindSafe(browsers).catch_unwind());
    if let Err(panic) = outcome {
        for p in rooms.iter().chain(gws.iter()) {
            eprintln!("--- node {} stderr:\n{}", p.id, read(&p.stderr));
        }
        std::panic::resume_unwind(panic);
    }
}
