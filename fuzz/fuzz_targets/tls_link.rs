//! Fuzzes one connection's TLS record engine, `domi_core::tls::link::TlsLink`:
//! fresh links fed arbitrary ciphertext, and a genuine client/server pair
//! whose records the fuzzer seals, writes in parts, delivers in chunks and
//! corrupts in flight. The CA and the two node certificates are made once
//! (rcgen), as `core/src/tls/test_pki.rs` does for the unit tests.
//!
//! Input: byte 0 picks the mode (its low two bits).
//!
//! - `0`, `1`: a fresh accepting (`0`) or dialling (`1`) link fed arbitrary
//!   ciphertext. The rest is a list of steps: a length byte `n`, a repeat
//!   byte `r`, a plaintext-buffer byte `p` (`0`: 20 000 bytes, else `p`
//!   bytes), then `n` bytes of ciphertext fed `r + 1` times (so a handshake
//!   message past rustls's 64 KiB limit fits in a small input). Whatever the
//!   link answers is taken by the socket at once.
//! - `2`, `3`: a client and a server link. With `2` the handshake is run to
//!   its end first (records pumped both ways, as the unit tests do); with
//!   `3` the steps below run it. A flow is one direction (client to server,
//!   server to client): the sender's write queue (bytes made from their
//!   position, so a byte out of place shows), the ciphertext that left it,
//!   how much of that the receiver got. Steps are an op byte (bits 0-2: the
//!   op, bit 4: the flow) and its operands:
//!   - `0`: append `L` (2 bytes, little-endian) bytes to the write queue;
//!   - `1`: seal up to `k + 1` records (1 byte) of the queue's unsent bytes;
//!   - `2`: the socket takes `n` (2 bytes, `0`: all) pending bytes, and the
//!     queue counts what `wrote(n)` returns as written;
//!   - `3`: deliver `c` (2 bytes, `0`: all) bytes in flight to the receiver,
//!     pulled with a plaintext buffer `p` (1 byte, as above);
//!   - `4`: xor a byte in flight (2 bytes: which, 1 byte: the mask);
//!   - `5`..`7`: seal, write and deliver everything (1 byte: `p`).
//!
//!   At the end of the input everything is pumped through: the corrupted
//!   records of a flow until its receiver has them whole, or, with no
//!   corruption, the whole queue both ways. A pair of mode `2` that ends
//!   clean (nothing flipped, everything read) serves the next input of mode
//!   `2`, its handshake done: handshakes would take most of the time.
//!
//! Nothing may panic, and nothing more is fed to a link once `pull` returned
//! an error (or `Closed`). `pull` uses all the ciphertext it was given when it
//! asks for more, and never fills more than the buffer. A fresh link fed
//! forged bytes never leaves its handshake nor yields plaintext. In a pair,
//! nothing is sealed during the handshake; the receiver never yields
//! plaintext that was not sealed, nor out of order, nor more than the sender
//! counted written; without corruption it reads exactly what was counted
//! written once everything that left arrived, and no error happens. A
//! corrupted application-data record is refused (`TlsClose::Refused` after
//! the handshake) once it arrived whole. Only a record header's content type
//! and legacy version may be flipped without an error (nor a change to the
//! plaintext): during the handshake rustls (0.23) decrypts a record of any
//! type but a change of cipher spec or a short alert, its TLS 1.3 additional
//! data built from the expected type and version, not the ones received.
//! After it the link protects records itself (`domi_core::tls::record`),
//! with the header received as additional data, so any flip is refused.
//!
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run tls_link -- -max_total_time=60`
//! from `fuzz/` (or `fuzz/run.sh` for all targets).
#![no_main]

use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr};
use std::ops::{Deref, DerefMut};
use std::sync::{Mutex, OnceLock};

use domi_core::tls::link::{Pulled, TlsLink};
use domi_core::tls::{TlsClose, TlsConfig};
use libfuzzer_sys::fuzz_target;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// The most plaintext in one TLS record.
const RECORD: usize = 16 * 1024;
/// The plaintext buffer a `p` byte of `0` stands for (more than a record).
const BIG_PLAIN: usize = 20_000;
/// The most forged ciphertext fed to a fresh link per input.
const MAX_RAW: usize = 192 * 1024;
/// The most bytes appended to the two write queues per input (past the
/// link's 256 KiB of sealing ahead).
const MAX_DATA: usize = 384 * 1024;
/// How many pulls per input use the plaintext buffer size the fuzzer chose.
const SMALL_PULLS: usize = 256;
/// The pattern the write queues' bytes come from: half for each flow,
/// more than a flow ever queues.
const PATTERN: usize = 2 << 20;
/// TLS's application-data content type, the outer type of every encrypted
/// TLS 1.3 record.
const APPLICATION_DATA: u8 = 23;

/// A server's and a client's TLS configuration, both certificates (for
/// 127.0.0.1) signed by one CA.
struct Pki {
    server: TlsConfig,
    client: TlsConfig,
}

fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "domi fuzz CA");
        let ca_key = KeyPair::generate().expect("CA key");
        let ca = params.self_signed(&ca_key).expect("CA certificate");
        let node = || {
            let key = KeyPair::generate().expect("node key");
            let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
                .expect("node params")
                .signed_by(&key, &ca, &ca_key)
                .expect("node certificate");
            TlsConfig::from_pem(
                cert.pem().as_bytes(),
                key.serialize_pem().as_bytes(),
                ca.pem().as_bytes(),
            )
            .expect("a TLS config")
        };
        Pki {
            server: node(),
            client: node(),
        }
    })
}

/// Pseudo-random bytes (splitmix64): the queues' contents, so a byte read
/// out of place shows.
fn pattern() -> &'static [u8] {
    static PATTERN_BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    PATTERN_BYTES.get_or_init(|| {
        (0..PATTERN as u64)
            .map(|i| {
                let mut z = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                (z ^ (z >> 31)) as u8
            })
            .collect()
    })
}

thread_local! {
    static POOL: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// A buffer that goes back to a pool when dropped, for the next input:
/// fresh big buffers cost page faults on every input.
struct Pooled(Vec<u8>);

impl Pooled {
    fn new() -> Pooled {
        let mut v = POOL.with_borrow_mut(Vec::pop).unwrap_or_default();
        v.clear();
        Pooled(v)
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let v = std::mem::take(&mut self.0);
        POOL.with_borrow_mut(|pool| pool.push(v));
    }
}

impl Deref for Pooled {
    type Target = Vec<u8>;
    fn deref(&self) -> &Vec<u8> {
        &self.0
    }
}

impl DerefMut for Pooled {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        &mut self.0
    }
}

/// The fuzzer's input, read front to back.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }

    /// Up to `n` bytes: what is left if fewer.
    fn up_to(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        head
    }

    fn u8(&mut self) -> Option<u8> {
        self.bytes(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<usize> {
        self.bytes(2)
            .map(|b| usize::from(u16::from_le_bytes([b[0], b[1]])))
    }
}

/// The plaintext buffer's size a `p` byte stands for.
fn plain_len(p: u8) -> usize {
    if p == 0 {
        BIG_PLAIN
    } else {
        usize::from(p)
    }
}

/// Modes `0` and `1`: forged ciphertext into a fresh link.
fn forged(mut link: TlsLink, mut input: Input<'_>) {
    let mut plain = vec![0u8; BIG_PLAIN];
    let mut fed = 0;
    // A client's ClientHello leaves; nothing sealed is in it.
    assert_eq!(link.wrote(link.records().len()), 0);
    while let Some(&[n, r, p]) = input.bytes(3) {
        let chunk = input.up_to(usize::from(n));
        let plain = &mut plain[..plain_len(p)];
        for _ in 0..=r {
            if fed >= MAX_RAW {
                return;
            }
            fed += chunk.len();
            let mut cipher = chunk;
            loop {
                match link.pull(&mut cipher, plain) {
                    Ok(Pulled::Plain(n)) => panic!("{n} plaintext bytes from forged ciphertext"),
                    Ok(Pulled::NeedMore) => {
                        assert!(cipher.is_empty(), "NeedMore with ciphertext left");
                        break;
                    }
                    // The connection ends: nothing more is fed.
                    Ok(Pulled::Closed) | Err(_) => return,
                }
            }
            assert!(
                link.is_handshaking(),
                "a handshake completed with forged bytes"
            );
            assert!(!link.seal(b"early"), "sealed during the handshake");
            assert!(!link.holds_sealed());
            assert_eq!(link.wrote(link.records().len()), 0);
        }
    }
}

/// One direction of the pair.
struct Flow {
    /// Where in the pattern this flow's bytes start (the two flows' bytes
    /// differ).
    offset: usize,
    /// How many bytes were appended to the sender's write queue (see
    /// [`Flow::data`]).
    queued: usize,
    /// How much of the queue the sender reported wholly written.
    counted: usize,
    /// The ciphertext that left the sender, as it left (uncorrupted).
    wire: Pooled,
    /// How much of `wire` the receiver was given.
    delivered: usize,
    /// Bytes of `wire` xored in flight: position, mask (non-zero, one per
    /// position).
    flips: Vec<(usize, u8)>,
    /// How much plaintext the receiver yielded (always `data()[..got]`).
    got: usize,
}

impl Flow {
    fn new(offset: usize) -> Flow {
        Flow {
            offset,
            queued: 0,
            counted: 0,
            wire: Pooled::new(),
            delivered: 0,
            flips: Vec::new(),
            got: 0,
        }
    }

    /// The sender's write queue: everything appended, written or not.
    fn data(&self) -> &'static [u8] {
        &pattern()[self.offset..self.offset + self.queued]
    }

    fn append(&mut self, len: usize) {
        self.queued += len.min(PATTERN / 2 - self.queued);
    }

    /// Whether a flip is in a record header's content type or legacy
    /// version, which rustls does not authenticate (the records parsed from
    /// the uncorrupted `wire`).
    fn in_type_or_version(&self, pos: usize) -> bool {
        let mut start = 0;
        while start < self.wire.len() {
            if pos < start + 5 {
                return pos < start + 3;
            }
            let Some(len) = self.wire.get(start + 3..start + 5) else {
                return false;
            };
            start += 5 + usize::from(u16::from_be_bytes([len[0], len[1]]));
        }
        false
    }

    /// Whether some flip is not in a content type or legacy version: the
    /// stream is corrupted.
    fn corrupted(&self) -> bool {
        self.flips
            .iter()
            .any(|&(pos, _)| !self.in_type_or_version(pos))
    }

    /// Once the receiver was given this much, it must have refused the
    /// stream: the end of the first record with a corrupted byte past its
    /// content type and legacy version (the longer of its true length and
    /// the corrupted one), if that record is encrypted (application data)
    /// and its header left whole. `None` if no such record, or if the first
    /// is a plaintext handshake record (which the other side may be the one
    /// to refuse, later).
    fn deadline(&self) -> Option<usize> {
        let mut start = 0;
        while start + 5 <= self.wire.len() {
            let header = &self.wire[start..start + 5];
            let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
            let end = start + 5 + len;
            let hit = |pos: usize| (start + 3..end).contains(&pos);
            if self.flips.iter().any(|&(pos, _)| hit(pos)) {
                if header[0] != APPLICATION_DATA {
                    return None;
                }
                let mut bad = [header[3], header[4]];
                for &(pos, mask) in &self.flips {
                    if pos == start + 3 || pos == start + 4 {
                        bad[pos - start - 3] ^= mask;
                    }
                }
                return Some(start + 5 + len.max(usize::from(u16::from_be_bytes(bad))));
            }
            start = end;
        }
        None
    }
}

/// Why a pair stopped: a link refused the stream or saw it closed.
struct Stopped;

/// Mode `2` and `3`: a client and a server link and the two flows.
struct Pair {
    /// The client, the server.
    links: [TlsLink; 2],
    /// Client to server, server to client.
    flows: [Flow; 2],
    /// The receivers' plaintext buffer.
    plain: Vec<u8>,
    /// How many more pulls may use the fuzzer's plaintext buffer size (the
    /// rest use a big one, so a byte-sized buffer does not make an input
    /// slow).
    small_pulls: usize,
    /// Bytes appended to both queues.
    appended: usize,
}

/// A pair of mode `2` that ended an input clean (see [`Pair::clean`]), kept
/// for the next input of mode `2`: its handshake is most of a pair's cost
/// (a millisecond or so). Only its keys (random anyway) and record sequence
/// numbers tell it from a fresh pair after the handshake.
static SPARE: Mutex<Option<[TlsLink; 2]>> = Mutex::new(None);

impl Pair {
    fn new(links: [TlsLink; 2]) -> Pair {
        Pair {
            links,
            flows: [Flow::new(0), Flow::new(PATTERN / 2)],
            plain: vec![0u8; BIG_PLAIN],
            small_pulls: SMALL_PULLS,
            appended: 0,
        }
    }

    /// Links before their handshake.
    fn fresh() -> Pair {
        let pki = pki();
        let client = TlsLink::client(&pki.client, LOCAL).expect("client link");
        let server = TlsLink::server(&pki.server).expect("server link");
        Pair::new([client, server])
    }

    /// Whether nothing was flipped, both links left the handshake, nothing
    /// is in flight and every queued byte was read, both ways: the links
    /// are as after a handshake but for keys and sequence numbers.
    fn clean(&self) -> bool {
        !self.tainted()
            && self
                .links
                .iter()
                .all(|l| !l.is_handshaking() && !l.wants_write())
            && self
                .flows
                .iter()
                .all(|f| f.delivered == f.wire.len() && f.got == f.queued && f.counted == f.queued)
    }

    /// Flow `f`'s sender and receiver, and the flow.
    fn ends(&mut self, f: usize) -> (&mut TlsLink, &mut TlsLink, &mut Flow) {
        let [client, server] = &mut self.links;
        let flow = &mut self.flows[f];
        if f == 0 {
            (client, server, flow)
        } else {
            (server, client, flow)
        }
    }

    /// Whether some byte was flipped in flight (either way): a refusal is
    /// then allowed.
    fn tainted(&self) -> bool {
        self.flows.iter().any(|f| !f.flips.is_empty())
    }

    /// Whether the stream was corrupted (either way).
    fn corrupted(&self) -> bool {
        self.flows.iter().any(Flow::corrupted)
    }

    fn append(&mut self, f: usize, len: usize) {
        let len = len.min(MAX_DATA - self.appended);
        self.appended += len;
        self.flows[f].append(len);
    }

    /// Seals up to `max` records; returns how many.
    fn seal(&mut self, f: usize, max: usize) -> usize {
        let (sender, _, flow) = self.ends(f);
        let mut sealed = 0;
        while sealed < max {
            let handshaking = sender.is_handshaking();
            if !sender.seal(&flow.data()[flow.counted..]) {
                break;
            }
            assert!(!handshaking, "sealed during the handshake");
            assert!(sender.holds_sealed(), "sealed, yet holds nothing sealed");
            sealed += 1;
        }
        sealed
    }

    /// The socket takes `n` pending bytes (`0`: all).
    fn write(&mut self, f: usize, n: usize) {
        let (sender, _, flow) = self.ends(f);
        let pending = sender.records();
        let before = pending.len();
        let take = if n == 0 { before } else { n.min(before) };
        flow.wire.extend_from_slice(&pending[..take]);
        flow.counted += sender.wrote(take);
        assert_eq!(sender.records().len(), before - take, "pending after wrote");
        if !sender.wants_write() {
            assert!(
                !sender.holds_sealed(),
                "all written, yet holds sealed bytes"
            );
        }
        assert!(flow.counted <= flow.queued, "counted more than queued");
    }

    /// Delivers `c` bytes in flight (`0`: all), with a plaintext buffer of
    /// `plain` bytes.
    fn deliver(&mut self, f: usize, c: usize, plain: usize) -> Result<(), Stopped> {
        let tainted = self.tainted();
        let corrupted = self.corrupted();
        let [client, server] = &mut self.links;
        let receiver = if f == 0 { server } else { client };
        let flow = &mut self.flows[f];
        let (from, left) = (flow.delivered, flow.wire.len() - flow.delivered);
        let to = from + if c == 0 { left } else { c.min(left) };
        let mut bytes = Pooled::new();
        bytes.extend_from_slice(&flow.wire[from..to]);
        for &(pos, mask) in &flow.flips {
            if (from..to).contains(&pos) {
                bytes[pos - from] ^= mask;
            }
        }
        flow.delivered = to;
        let mut cipher = &bytes[..];
        loop {
            let size = match self.small_pulls.checked_sub(1) {
                Some(left) => {
                    self.small_pulls = left;
                    plain
                }
                None => BIG_PLAIN,
            };
            let buf = &mut self.plain[..size];
            let handshaking = receiver.is_handshaking();
            match receiver.pull(&mut cipher, buf) {
                Ok(Pulled::Plain(n)) => {
                    assert!(
                        n >= 1 && n <= buf.len(),
                        "Plain({n}) of a {} buffer",
                        buf.len()
                    );
                    assert!(
                        flow.got + n <= flow.counted,
                        "read {} bytes, {} counted written",
                        flow.got + n,
                        flow.counted
                    );
                    assert!(
                        buf[..n] == flow.data()[flow.got..flow.got + n],
                        "plaintext read at {} is not what was sealed",
                        flow.got
                    );
                    flow.got += n;
                }
                Ok(Pulled::NeedMore) => {
                    assert!(cipher.is_empty(), "NeedMore with ciphertext left");
                    break;
                }
                Ok(Pulled::Closed) => {
                    assert!(tainted, "Closed with no close_notify sent");
                    return Err(Stopped);
                }
                Err(e) => {
                    assert!(tainted, "refused an intact stream: {e}");
                    // Only a first record of no TLS type is named plaintext.
                    assert!(
                        handshaking || matches!(e, TlsClose::Refused { .. }),
                        "after the handshake: {e:?}"
                    );
                    return Err(Stopped);
                }
            }
        }
        if !corrupted && flow.delivered == flow.wire.len() {
            assert_eq!(
                flow.got, flow.counted,
                "everything that left arrived, but the peer read other than what was counted written"
            );
        }
        if let Some(deadline) = flow.deadline() {
            assert!(
                flow.delivered < deadline,
                "a corrupted record arrived whole (by {deadline}, {} delivered) and was not refused",
                flow.delivered
            );
        }
        Ok(())
    }

    /// Flips a byte in flight.
    fn corrupt(&mut self, f: usize, which: usize, mask: u8) {
        let flow = &mut self.flows[f];
        let left = flow.wire.len() - flow.delivered;
        if left == 0 {
            return;
        }
        let pos = flow.delivered + which % left;
        let mask = if mask == 0 { 0x80 } else { mask };
        // Flipping a byte twice may undo it: one flip per byte.
        match flow.flips.iter().position(|&(p, _)| p == pos) {
            Some(i) if flow.flips[i].1 == mask => {
                flow.flips.swap_remove(i);
            }
            Some(i) => flow.flips[i].1 ^= mask,
            None => flow.flips.push((pos, mask)),
        }
    }

    /// Seals, writes and delivers everything of flow `f`.
    fn pump(&mut self, f: usize, plain: usize) -> Result<(), Stopped> {
        loop {
            self.seal(f, usize::MAX);
            if !self.links[f].wants_write() {
                break;
            }
            self.write(f, 0);
        }
        self.deliver(f, 0, plain)
    }

    /// Pumps both ways until both links left the handshake.
    fn handshake(&mut self) -> Result<(), Stopped> {
        for _ in 0..10 {
            self.pump(0, BIG_PLAIN)?;
            self.pump(1, BIG_PLAIN)?;
            if self.links.iter().all(|l| !l.is_handshaking()) && !self.links[0].wants_write() {
                return Ok(());
            }
        }
        assert!(self.tainted(), "the handshake did not finish");
        Err(Stopped)
    }

    fn steps(&mut self, mut input: Input<'_>) -> Result<(), Stopped> {
        while let Some(op) = input.u8() {
            let f = usize::from(op >> 4 & 1);
            match op & 7 {
                0 => {
                    let Some(len) = input.u16() else { break };
                    self.append(f, len);
                }
                1 => {
                    let Some(k) = input.u8() else { break };
                    self.seal(f, usize::from(k) + 1);
                }
                2 => {
                    let Some(n) = input.u16() else { break };
                    self.write(f, n);
                }
                3 => {
                    let (Some(c), Some(p)) = (input.u16(), input.u8()) else {
                        break;
                    };
                    self.deliver(f, c, plain_len(p))?;
                }
                4 => {
                    let (Some(which), Some(mask)) = (input.u16(), input.u8()) else {
                        break;
                    };
                    self.corrupt(f, which, mask);
                }
                _ => {
                    let Some(p) = input.u8() else { break };
                    self.pump(f, plain_len(p))?;
                }
            }
        }
        Ok(())
    }

    /// The end of the input: a corrupted flow is pumped until its
    /// corrupted record arrived whole (and was refused); with no
    /// corruption, all queued bytes go through both ways.
    fn finish(&mut self) -> Result<(), Stopped> {
        if self.corrupted() {
            for f in 0..2 {
                for _ in 0..2 {
                    let Some(deadline) = self.flows[f].deadline() else {
                        break;
                    };
                    let (sender, _, flow) = self.ends(f);
                    if sender.is_handshaking() {
                        // Nothing more can be sealed: the record may stay short.
                        self.deliver(f, 0, BIG_PLAIN)?;
                        break;
                    }
                    let need = deadline.saturating_sub(flow.wire.len()) + RECORD;
                    flow.append(need);
                    self.pump(f, BIG_PLAIN)?;
                }
            }
            return Ok(());
        }
        self.handshake()?;
        self.pump(0, BIG_PLAIN)?;
        self.pump(1, BIG_PLAIN)?;
        for flow in &self.flows {
            assert_eq!(flow.got, flow.queued, "not all queued bytes arrived");
        }
        Ok(())
    }
}

fn pair(auto_handshake: bool, input: Input<'_>) -> Result<(), Stopped> {
    let spare = match auto_handshake {
        true => SPARE.lock().expect("spare pair").take(),
        false => None,
    };
    let mut pair = match spare {
        Some(links) => Pair::new(links),
        None => {
            let mut pair = Pair::fresh();
            if auto_handshake {
                pair.handshake()?;
            }
            pair
        }
    };
    pair.steps(input)?;
    pair.finish()?;
    if auto_handshake && pair.clean() {
        *SPARE.lock().expect("spare pair") = Some(pair.links);
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let input = Input(rest);
    match mode & 3 {
        0 => forged(TlsLink::server(&pki().server).expect("server link"), input),
        1 => forged(
            TlsLink::client(&pki().client, LOCAL).expect("client link"),
            input,
        ),
        m => {
            let _ = pair(m == 2, input);
        }
    }
});
