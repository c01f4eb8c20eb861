//! One connection's TLS record engine, sans-I/O: ciphertext in, plaintext
//! out on the receiving side; plaintext in, records out on the sending side,
//! with the accounting the write queue needs.
//!
//! The write queue ([`crate::write_queue::WriteQueue`]) reports a frame as
//! sent once the kernel took all its bytes; a frame that did not leave whole
//! may go to another provider. With TLS the peer can only read a frame once
//! every record carrying its bytes arrived whole, so the link seals at most
//! one record per [`TlsLink::seal`] step and tells, as ciphertext leaves
//! ([`TlsLink::wrote`]), how many plaintext bytes are now wholly on the wire:
//! exactly what the queue may count as written.
//!
//! rustls runs the handshake, fed one whole record at a time, so that it
//! never takes a record past the handshake's last. From there the link
//! protects records itself ([`super::record`]) with the traffic secrets
//! rustls derived (handed over by its key log): a record is opened where its
//! ciphertext was copied (the caller's plaintext buffer), and sealed where
//! its plaintext was copied (the outgoing buffer).

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use rustls::{Connection, KeyLog};

use super::record::{self, content, Keys, Opened, RecordError, Suite, HEADER};
use super::{TlsClose, TlsConfig};

/// The most plaintext in one TLS record.
const RECORD: usize = record::MAX_PLAIN;

/// How much plaintext the writer seals ahead of the socket.
const SEAL_AHEAD: usize = 256 * 1024;

/// What [`TlsLink::pull`] produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Pulled {
    /// This many plaintext bytes were put into the buffer.
    Plain(usize),
    /// All ciphertext given was used; read more from the socket.
    NeedMore,
    /// The peer closed the TLS session (`close_notify`).
    Closed,
}

/// The application traffic secrets rustls derives during one handshake,
/// caught through its key log (a log of this connection's own).
#[derive(Debug, Default)]
struct Secrets {
    client: Mutex<Option<Vec<u8>>>,
    server: Mutex<Option<Vec<u8>>>,
}

const CLIENT_SECRET: &str = "CLIENT_TRAFFIC_SECRET_0";
const SERVER_SECRET: &str = "SERVER_TRAFFIC_SECRET_0";

impl KeyLog for Secrets {
    fn log(&self, label: &str, _client_random: &[u8], secret: &[u8]) {
        let slot = match label {
            CLIENT_SECRET => &self.client,
            SERVER_SECRET => &self.server,
            _ => return,
        };
        *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(secret.to_vec());
    }

    fn will_log(&self, label: &str) -> bool {
        label == CLIENT_SECRET || label == SERVER_SECRET
    }
}

impl Secrets {
    fn take(slot: &Mutex<Option<Vec<u8>>>) -> Option<Vec<u8>> {
        slot.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// Where the connection is.
// The data stage holds both directions' key schedules inline: the stage is
// set twice per connection and read per record, never moved around.
#[allow(clippy::large_enum_variant)]
enum Stage {
    /// rustls runs the handshake.
    Handshake {
        conn: Box<Connection>,
        secrets: Arc<Secrets>,
    },
    /// Records are protected by the link.
    Data {
        tx: Keys,
        rx: Keys,
        /// The peer asked for a key update: one goes before the next record.
        owe_update: bool,
        /// The suite negotiated.
        suite: rustls::CipherSuite,
    },
    /// The peer sent `close_notify` (or taking over from rustls failed).
    Closed,
}

/// A connection's TLS state and its outgoing records.
pub struct TlsLink {
    stage: Stage,
    /// Records waiting for the socket; `out[out_sent..]` is not written yet.
    out: Vec<u8>,
    out_sent: usize,
    /// For each sealed record still in `out`: where it ends in `out`, and how
    /// many plaintext bytes it carries.
    marks: VecDeque<(usize, usize)>,
    /// Plaintext sealed but not yet wholly written.
    sealed: usize,
    /// A record cut off at the end of the ciphertext given, header first.
    partial: Vec<u8>,
    /// Plaintext opened that did not fit the caller's buffer:
    /// `held[held_at..]` goes first.
    held: Vec<u8>,
    held_at: usize,
}

/// The next whole record of `partial` then `cipher`.
enum Next<'a> {
    /// Whole in `cipher` (taken from it).
    InCipher(&'a [u8]),
    /// Whole in `partial`.
    InPartial,
    /// Incomplete: what there was is in `partial`.
    NeedMore,
}

/// Takes the next whole record (header and body) from `partial` and
/// `cipher`, the body's length checked by `body_len`; what is cut off is
/// moved to `partial`.
fn next_record<'a>(
    partial: &mut Vec<u8>,
    cipher: &mut &'a [u8],
    body_len: impl Fn([u8; HEADER]) -> Result<usize, TlsClose>,
) -> Result<Next<'a>, TlsClose> {
    fn take(partial: &mut Vec<u8>, cipher: &mut &[u8], n: usize) {
        let n = n.min(cipher.len());
        partial.extend_from_slice(&cipher[..n]);
        *cipher = &cipher[n..];
    }
    if partial.is_empty() {
        if let Some(h) = cipher.first_chunk::<HEADER>() {
            let whole = HEADER + body_len(*h)?;
            if cipher.len() >= whole {
                let (rec, rest) = cipher.split_at(whole);
                *cipher = rest;
                return Ok(Next::InCipher(rec));
            }
        }
        take(partial, cipher, cipher.len());
        return Ok(Next::NeedMore);
    }
    if partial.len() < HEADER {
        take(partial, cipher, HEADER - partial.len());
        if partial.len() < HEADER {
            return Ok(Next::NeedMore);
        }
    }
    let h = *partial.first_chunk::<HEADER>().expect("a whole header");
    let whole = HEADER + body_len(h)?;
    take(partial, cipher, whole - partial.len());
    Ok(if partial.len() == whole {
        Next::InPartial
    } else {
        Next::NeedMore
    })
}

/// Opens the whole record in `scratch` (emptied after), where it was
/// copied because it did not fit the caller's buffer or came in pieces:
/// what it held, and how much plaintext went into `room`; plaintext past
/// `room` goes to `held` (empty before: the caller's buffer was full
/// otherwise).
fn open_aside(
    rx: &mut Keys,
    scratch: &mut Vec<u8>,
    held: &mut Vec<u8>,
    room: &mut [u8],
) -> Result<(Opened, usize), TlsClose> {
    debug_assert!(held.is_empty(), "held plaintext goes out first");
    let h = *scratch.first_chunk::<HEADER>().expect("a whole record");
    let opened = rx.open(h, &mut scratch[HEADER..]);
    let mut given = 0;
    if let Ok(Opened::Data(n)) = opened {
        let plain = &scratch[HEADER..HEADER + n];
        given = n.min(room.len());
        room[..given].copy_from_slice(&plain[..given]);
        held.extend_from_slice(&plain[given..]);
    }
    scratch.clear();
    Ok((opened.map_err(refused)?, given))
}

fn refused(e: RecordError) -> TlsClose {
    use rustls::{Error, InvalidMessage};
    TlsClose::Refused {
        source: match e {
            RecordError::Decrypt => Error::DecryptError,
            RecordError::Header { .. } => Error::InvalidMessage(InvalidMessage::InvalidContentType),
            RecordError::NoContentType => Error::InvalidMessage(InvalidMessage::InvalidContentType),
            RecordError::Overflow { .. } => Error::InvalidMessage(InvalidMessage::MessageTooLarge),
            RecordError::KeyUpdate => Error::InvalidMessage(InvalidMessage::InvalidKeyUpdate),
            RecordError::Unexpected { what } => {
                Error::InvalidMessage(InvalidMessage::UnexpectedMessage(what))
            }
        },
    }
}

impl TlsLink {
    /// The dialling side of a connection to the peer at `ip`.
    pub fn client(config: &TlsConfig, ip: IpAddr) -> Result<TlsLink, TlsClose> {
        let secrets = Arc::new(Secrets::default());
        let mut c = (*config.client).clone();
        c.key_log = secrets.clone();
        let conn = rustls::ClientConnection::new(Arc::new(c), config.name_for(ip))
            .map_err(|source| TlsClose::Refused { source })?;
        Ok(Self::new(conn.into(), secrets))
    }

    /// The accepting side.
    pub fn server(config: &TlsConfig) -> Result<TlsLink, TlsClose> {
        let secrets = Arc::new(Secrets::default());
        let mut c = (*config.server).clone();
        c.key_log = secrets.clone();
        let conn = rustls::ServerConnection::new(Arc::new(c))
            .map_err(|source| TlsClose::Refused { source })?;
        Ok(Self::new(conn.into(), secrets))
    }

    fn new(conn: Connection, secrets: Arc<Secrets>) -> TlsLink {
        let mut link = TlsLink {
            stage: Stage::Handshake {
                conn: Box::new(conn),
                secrets,
            },
            out: Vec::new(),
            out_sent: 0,
            marks: VecDeque::new(),
            sealed: 0,
            partial: Vec::new(),
            held: Vec::new(),
            held_at: 0,
        };
        link.collect(); // a client's ClientHello
        link
    }

    /// Whether the TLS handshake is still running (no plaintext moves yet).
    pub fn is_handshaking(&self) -> bool {
        matches!(self.stage, Stage::Handshake { .. })
    }

    /// The cipher suite, once the handshake finished.
    pub fn suite(&self) -> Option<rustls::CipherSuite> {
        match &self.stage {
            Stage::Data { suite, .. } => Some(*suite),
            _ => None,
        }
    }

    /// Decrypts what it can of `cipher` (advancing it past what was used)
    /// into `plain`. Call again while it returns [`Pulled::Plain`]; records
    /// the peer must get (handshake answers, alerts) wait in
    /// [`TlsLink::records`]. Every round consumes ciphertext or ends: a peer
    /// whose message outgrows rustls's buffers is an error, never a spin.
    /// `plain` must not be empty.
    pub fn pull(&mut self, cipher: &mut &[u8], plain: &mut [u8]) -> Result<Pulled, TlsClose> {
        while self.is_handshaking() {
            if self.handshake_step(cipher)? {
                return Ok(Pulled::NeedMore);
            }
        }
        self.pull_data(cipher, plain)
    }

    /// Feeds rustls the next whole handshake record: whether more
    /// ciphertext is needed first.
    fn handshake_step(&mut self, cipher: &mut &[u8]) -> Result<bool, TlsClose> {
        let Stage::Handshake { conn, .. } = &mut self.stage else {
            return Ok(false);
        };
        // A header that is no TLS 1.3 handshake record's (a node without
        // TLS, noise): all of it goes to rustls, whose error names it.
        let plausible = |h: [u8; HEADER]| {
            let len = usize::from(u16::from_be_bytes([h[3], h[4]]));
            if (content::CCS..=content::APPLICATION_DATA).contains(&h[0])
                && h[1] == 3
                && len <= record::MAX_PLAIN + 2048
            {
                Ok(len)
            } else {
                Err(TlsClose::Stuck {
                    detail: String::new(),
                })
            }
        };
        let fresh = conn.is_handshaking();
        let (rec, implausible) = match next_record(&mut self.partial, cipher, plausible) {
            Ok(Next::NeedMore) => return Ok(true),
            Ok(Next::InCipher(rec)) => (rec.to_vec(), false),
            Ok(Next::InPartial) => (std::mem::take(&mut self.partial), false),
            Err(_) => {
                let mut all = std::mem::take(&mut self.partial);
                all.extend_from_slice(cipher);
                *cipher = &[];
                (all, true)
            }
        };
        let mut r = &rec[..];
        while !r.is_empty() {
            match conn.read_tls(&mut r) {
                Ok(0) => return Err(TlsClose::HandshakeEof),
                Ok(_) => {}
                Err(e) => {
                    return Err(TlsClose::Stuck {
                        detail: e.to_string(),
                    })
                }
            }
            if let Err(e) = conn.process_new_packets() {
                self.collect();
                return Err(classify(e, fresh));
            }
        }
        self.collect();
        if implausible {
            // rustls took what the link would not: it may have taken records
            // past the handshake's last, so the link cannot go on.
            return Err(TlsClose::Stuck {
                detail: "a record header the link does not take during the handshake".into(),
            });
        }
        let Stage::Handshake { conn, secrets } = std::mem::replace(&mut self.stage, Stage::Closed)
        else {
            return Ok(false);
        };
        if conn.is_handshaking() {
            self.stage = Stage::Handshake { conn, secrets };
            return Ok(false);
        }
        self.stage = Self::data_stage(*conn, &secrets)?;
        Ok(false)
    }

    /// The stage after a finished handshake: the keys of the negotiated
    /// suite from the secrets rustls logged, from the sequence numbers rustls
    /// reached (0 unless it protected a record past the handshake itself, as
    /// a session ticket would be; tickets are off). rustls's own extraction
    /// refuses if it still holds data, and its IVs must be the ones derived
    /// here.
    fn data_stage(conn: Connection, secrets: &Secrets) -> Result<Stage, TlsClose> {
        let stuck = |detail: String| TlsClose::Stuck { detail };
        let name = conn
            .negotiated_cipher_suite()
            .map(|s| s.suite())
            .ok_or_else(|| stuck("no suite was negotiated".into()))?;
        let suite =
            Suite::of(name).ok_or_else(|| stuck("a TLS 1.3 suite was not negotiated".into()))?;
        let (client, server) = (
            Secrets::take(&secrets.client),
            Secrets::take(&secrets.server),
        );
        let (Some(client), Some(server)) = (client, server) else {
            return Err(stuck("rustls logged no traffic secrets".into()));
        };
        let (client, server) = (Keys::new(suite, &client), Keys::new(suite, &server));
        let (tx, rx) = match conn {
            Connection::Client(_) => (client, server),
            Connection::Server(_) => (server, client),
        };
        let extracted = conn
            .dangerous_extract_secrets()
            .map_err(|e| stuck(format!("taking over from rustls: {e}")))?;
        let same_iv = |keys: &Keys, theirs: &rustls::ConnectionTrafficSecrets| {
            use rustls::ConnectionTrafficSecrets as S;
            match theirs {
                S::Aes128Gcm { iv, .. }
                | S::Aes256Gcm { iv, .. }
                | S::Chacha20Poly1305 { iv, .. } => iv.as_ref() == keys.iv(),
                _ => false,
            }
        };
        if !same_iv(&tx, &extracted.tx.1) || !same_iv(&rx, &extracted.rx.1) {
            return Err(stuck("the keys derived differ from rustls's".into()));
        }
        Ok(Stage::Data {
            tx: tx.starting_at(extracted.tx.0),
            rx: rx.starting_at(extracted.rx.0),
            owe_update: false,
            suite: name,
        })
    }

    /// Opens the records of `partial` and `cipher` into `plain` (see
    /// [`TlsLink::pull`]).
    fn pull_data(&mut self, cipher: &mut &[u8], plain: &mut [u8]) -> Result<Pulled, TlsClose> {
        debug_assert!(!plain.is_empty(), "pull needs room for plaintext");
        let mut got = self.give_held(plain);
        loop {
            if got == plain.len() && got > 0 {
                return Ok(Pulled::Plain(got));
            }
            let Stage::Data { rx, owe_update, .. } = &mut self.stage else {
                return Ok(if got > 0 {
                    Pulled::Plain(got)
                } else {
                    Pulled::Closed
                });
            };
            let next = next_record(&mut self.partial, cipher, |h| {
                record::body_len(h).map_err(refused)
            })?;
            let room = &mut plain[got..];
            let (opened, given) = match next {
                Next::NeedMore => {
                    return Ok(if got > 0 {
                        Pulled::Plain(got)
                    } else {
                        Pulled::NeedMore
                    })
                }
                // Opened where the caller parses it.
                Next::InCipher(rec) if room.len() >= rec.len() - HEADER => {
                    let (h, body) = rec.split_at(HEADER);
                    let h: [u8; HEADER] = h.try_into().expect("a header");
                    let dst = &mut room[..body.len()];
                    dst.copy_from_slice(body);
                    let opened = rx.open(h, dst).map_err(refused)?;
                    let given = if let Opened::Data(n) = opened { n } else { 0 };
                    (opened, given)
                }
                Next::InCipher(rec) => {
                    self.partial.extend_from_slice(rec);
                    open_aside(rx, &mut self.partial, &mut self.held, room)?
                }
                Next::InPartial => open_aside(rx, &mut self.partial, &mut self.held, room)?,
            };
            got += given;
            match opened {
                Opened::Data(_) | Opened::Nothing => {}
                Opened::KeyUpdated { requested } => *owe_update |= requested,
                Opened::Closed => {
                    self.stage = Stage::Closed;
                }
                Opened::Alert(description) => {
                    return Err(TlsClose::Refused {
                        source: rustls::Error::AlertReceived(description.into()),
                    })
                }
            }
        }
    }

    /// Copies held plaintext into `plain`: how much.
    fn give_held(&mut self, plain: &mut [u8]) -> usize {
        let left = &self.held[self.held_at..];
        let n = left.len().min(plain.len());
        plain[..n].copy_from_slice(&left[..n]);
        self.held_at += n;
        if self.held_at == self.held.len() {
            self.held.clear();
            self.held_at = 0;
        }
        n
    }

    /// Seals (encrypts) the next record of `unsent`, the write queue's bytes
    /// not yet reported written: what follows the plaintext already sealed.
    /// Returns whether a record was sealed (never during the handshake, nor
    /// with enough sealed ahead of the socket).
    pub fn seal(&mut self, unsent: &[u8]) -> bool {
        let fresh = &unsent[self.sealed.min(unsent.len())..];
        if fresh.is_empty() || self.records().len() >= SEAL_AHEAD {
            return false;
        }
        let Stage::Data { tx, owe_update, .. } = &mut self.stage else {
            return false;
        };
        if *owe_update || tx.seq() >= record::KEY_UPDATE_AFTER {
            tx.seal_key_update(&mut self.out);
            *owe_update = false;
        }
        let take = fresh.len().min(RECORD);
        tx.seal(content::APPLICATION_DATA, &fresh[..take], &mut self.out);
        self.sealed += take;
        self.marks.push_back((self.out.len(), take));
        true
    }

    /// Queues a `close_notify` alert: the peer reads no more after what was
    /// sealed before it.
    pub fn close_notify(&mut self) {
        match &mut self.stage {
            Stage::Handshake { conn, .. } => {
                conn.send_close_notify();
                self.collect();
            }
            Stage::Data { tx, .. } => tx.seal(content::ALERT, &[1, 0], &mut self.out),
            Stage::Closed => {}
        }
    }

    /// Moves the records rustls produced (handshake, alerts) to `out`.
    fn collect(&mut self) {
        let Stage::Handshake { conn, .. } = &mut self.stage else {
            return;
        };
        while conn.wants_write() {
            match conn.write_tls(&mut self.out) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }

    /// Records (ciphertext) waiting for the socket.
    pub fn records(&self) -> &[u8] {
        &self.out[self.out_sent..]
    }

    /// Whether records wait for the socket.
    pub fn wants_write(&self) -> bool {
        !self.records().is_empty()
    }

    /// Whether any plaintext was sealed and not yet wholly written: the
    /// records waiting are then not only the link's own (handshake, alerts).
    pub fn holds_sealed(&self) -> bool {
        self.sealed > 0
    }

    /// The socket took `n` more bytes of [`TlsLink::records`]: returns how
    /// many plaintext bytes are now wholly written (every record carrying
    /// them left).
    pub fn wrote(&mut self, n: usize) -> usize {
        self.out_sent = (self.out_sent + n).min(self.out.len());
        let mut plain = 0;
        while let Some(&(end, len)) = self.marks.front() {
            if end > self.out_sent {
                break;
            }
            self.marks.pop_front();
            plain += len;
        }
        self.sealed -= plain;
        if self.out_sent == self.out.len() {
            // Every mark ended at or before `out_sent`: none is left.
            self.out.clear();
            self.out_sent = 0;
        } else if self.out_sent >= SEAL_AHEAD {
            // A socket that keeps taking part of what is pending: drop the
            // written prefix so `out` stays bounded.
            self.out.drain(..self.out_sent);
            for m in &mut self.marks {
                m.0 -= self.out_sent;
            }
            self.out_sent = 0;
        }
        plain
    }
}

/// Names what a failed `process_new_packets` means for the operator.
pub(super) fn classify(e: rustls::Error, handshaking: bool) -> TlsClose {
    use rustls::{Error, InvalidMessage};
    match e {
        Error::InvalidMessage(InvalidMessage::InvalidContentType) if handshaking => {
            TlsClose::PeerWithoutTls
        }
        source => TlsClose::Refused { source },
    }
}

#[cfg(test)]
mod tests;
