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

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::IpAddr;

use rustls::Connection;

use super::{TlsClose, TlsConfig};

/// The most plaintext in one TLS record.
const RECORD: usize = 16 * 1024;

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

/// A connection's TLS state and its outgoing records.
pub struct TlsLink {
    conn: Connection,
    /// Records waiting for the socket; `out[out_sent..]` is not written yet.
    out: Vec<u8>,
    out_sent: usize,
    /// For each sealed record still in `out`: where it ends in `out`, and how
    /// many plaintext bytes it carries.
    marks: VecDeque<(usize, usize)>,
    /// Plaintext sealed but not yet wholly written.
    sealed: usize,
}

impl TlsLink {
    /// The dialling side of a connection to the peer at `ip`.
    pub fn client(config: &TlsConfig, ip: IpAddr) -> Result<TlsLink, TlsClose> {
        let conn = rustls::ClientConnection::new(config.client.clone(), config.name_for(ip))
            .map_err(|source| TlsClose::Refused { source })?;
        Ok(Self::new(conn.into()))
    }

    /// The accepting side.
    pub fn server(config: &TlsConfig) -> Result<TlsLink, TlsClose> {
        let conn = rustls::ServerConnection::new(config.server.clone())
            .map_err(|source| TlsClose::Refused { source })?;
        Ok(Self::new(conn.into()))
    }

    fn new(conn: Connection) -> TlsLink {
        let mut link = TlsLink {
            conn,
            out: Vec::new(),
            out_sent: 0,
            marks: VecDeque::new(),
            sealed: 0,
        };
        link.collect(); // a client's ClientHello
        link
    }

    /// Whether the TLS handshake is still running (no plaintext moves yet).
    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Decrypts what it can of `cipher` (advancing it past what was used)
    /// into `plain`. Call again while it returns [`Pulled::Plain`]; records
    /// the peer must get (handshake answers, alerts) wait in
    /// [`TlsLink::records`]. Every round consumes ciphertext or ends: a peer
    /// whose message outgrows rustls's buffers is an error, never a spin.
    pub fn pull(&mut self, cipher: &mut &[u8], plain: &mut [u8]) -> Result<Pulled, TlsClose> {
        // Decrypts as many records as `plain` holds (not one per call): the
        // caller parses once per batch, as it does per socket read without TLS.
        let mut got = 0;
        loop {
            match self.conn.reader().read(&mut plain[got..]) {
                // `close_notify`: what came before it first.
                Ok(0) if got < plain.len() => {
                    return Ok(if got > 0 {
                        Pulled::Plain(got)
                    } else {
                        Pulled::Closed
                    })
                }
                Ok(n) => {
                    got += n;
                    if got == plain.len() {
                        return Ok(Pulled::Plain(got));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // (Only after a TCP end was fed, which never happens here.)
                Err(e) => {
                    return Err(TlsClose::Stuck {
                        detail: e.to_string(),
                    })
                }
            }
            if cipher.is_empty() {
                return Ok(if got > 0 {
                    Pulled::Plain(got)
                } else {
                    Pulled::NeedMore
                });
            }
            // The plaintext was just drained, so what fails here is rustls's
            // buffer for a message still incomplete: larger than TLS allows.
            match self.conn.read_tls(cipher) {
                Ok(0) => return Ok(Pulled::Closed), // after `close_notify`
                Ok(_) => {}
                Err(e) => {
                    return Err(TlsClose::Stuck {
                        detail: e.to_string(),
                    })
                }
            }
            let fresh = self.conn.is_handshaking();
            if let Err(e) = self.conn.process_new_packets() {
                self.collect();
                return Err(classify(e, fresh));
            }
            self.collect();
        }
    }

    /// Seals (encrypts) the next record of `unsent`, the write queue's bytes
    /// not yet reported written: what follows the plaintext already sealed.
    /// Returns whether a record was sealed (never during the handshake, nor
    /// with enough sealed ahead of the socket).
    pub fn seal(&mut self, unsent: &[u8]) -> bool {
        let fresh = &unsent[self.sealed.min(unsent.len())..];
        if fresh.is_empty() || self.is_handshaking() || self.records().len() >= SEAL_AHEAD {
            return false;
        }
        self.collect(); // records of rustls's own go before this one
        let take = fresh.len().min(RECORD);
        let n = self.conn.writer().write(&fresh[..take]).unwrap_or(0);
        if n == 0 {
            return false;
        }
        self.collect();
        self.sealed += n;
        self.marks.push_back((self.out.len(), n));
        true
    }

    /// Moves the records rustls produced (handshake, alerts) to `out`.
    fn collect(&mut self) {
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut self.out) {
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
