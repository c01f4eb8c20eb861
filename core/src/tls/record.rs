//! TLS 1.3 record protection (RFC 8446 §5 and §7), done by the bus itself
//! once rustls finished the handshake: rustls's record layer copies every
//! record three times on receipt and allocates one per record sent; here a
//! record is opened where its ciphertext was copied (the receive buffer) and
//! sealed where its plaintext was copied (the outgoing buffer). Pure: keys in,
//! bytes in, bytes out.
//!
//! [`Keys`] is one direction's key schedule: the traffic secret rustls
//! derived (handed over through its key log), the AEAD key and IV derived
//! from it, and the record sequence number. A sender moves to the next
//! generation of keys with a `KeyUpdate` message ([`Keys::update`]) before
//! its sequence number reaches [`KEY_UPDATE_AFTER`], far inside AES-GCM's
//! limit of 2^24.5 records per key; a receiver follows the peer's.

use ring::{aead, hkdf};

/// The most plaintext in one record.
pub const MAX_PLAIN: usize = 16 * 1024;
/// A record's header: outer content type, legacy version, length.
pub const HEADER: usize = 5;
/// The most a protected record's body may hold (RFC 8446 §5.2).
pub const MAX_BODY: usize = MAX_PLAIN + 256;
/// Records a sender protects under one key before updating it.
pub const KEY_UPDATE_AFTER: u64 = 1 << 22;

/// Content types (RFC 8446 §5.1).
pub mod content {
    /// Change cipher spec (handshake only, for middleboxes).
    pub const CCS: u8 = 20;
    /// Alert.
    pub const ALERT: u8 = 21;
    /// Handshake message.
    pub const HANDSHAKE: u8 = 22;
    /// Application data: the outer type of every protected record.
    pub const APPLICATION_DATA: u8 = 23;
}

/// Handshake message types seen after the handshake.
const NEW_SESSION_TICKET: u8 = 4;
const KEY_UPDATE: u8 = 24;

/// An AEAD tag's length (all three TLS 1.3 suites).
const TAG: usize = 16;

/// Why a record could not be opened, or what it held instead of data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The header is not that of a protected record, or its length is out
    /// of bounds.
    #[error("malformed record header (type {content_type}, length {len})")]
    Header {
        /// The outer content type.
        content_type: u8,
        /// The declared length.
        len: usize,
    },
    /// Authentication failed: corrupted, forged, or under another key.
    #[error("a record failed authentication")]
    Decrypt,
    /// The plaintext holds no content type (all zero).
    #[error("a record holds no content type")]
    NoContentType,
    /// The plaintext is longer than a record may carry.
    #[error("a record carries {len} bytes, more than TLS allows")]
    Overflow {
        /// The plaintext's length.
        len: usize,
    },
    /// A content type or handshake message not allowed after the handshake.
    #[error("unexpected {what} after the handshake")]
    Unexpected {
        /// What came.
        what: &'static str,
    },
    /// A `KeyUpdate` that is malformed or not alone at its record's end.
    #[error("malformed KeyUpdate")]
    KeyUpdate,
}

/// What an opened record held.
#[derive(Debug, PartialEq, Eq)]
pub enum Opened {
    /// Application data: this many bytes at the start of the body.
    Data(usize),
    /// The peer closes (`close_notify`).
    Closed,
    /// A fatal alert with this description.
    Alert(u8),
    /// The peer moved to its next keys (already followed); it asks for ours
    /// to move too when `requested`.
    KeyUpdated {
        /// The peer asked us to update our sending keys.
        requested: bool,
    },
    /// Nothing for the bus (a session ticket).
    Nothing,
}

/// A TLS 1.3 cipher suite's algorithms.
#[derive(Clone, Copy)]
pub struct Suite {
    aead: &'static aead::Algorithm,
    hkdf: hkdf::Algorithm,
}

impl Suite {
    /// The suite of rustls's name for it (`None` for a TLS 1.2 suite).
    pub fn of(suite: rustls::CipherSuite) -> Option<Suite> {
        use rustls::CipherSuite::*;
        Some(match suite {
            TLS13_AES_128_GCM_SHA256 => Suite {
                aead: &aead::AES_128_GCM,
                hkdf: hkdf::HKDF_SHA256,
            },
            TLS13_AES_256_GCM_SHA384 => Suite {
                aead: &aead::AES_256_GCM,
                hkdf: hkdf::HKDF_SHA384,
            },
            TLS13_CHACHA20_POLY1305_SHA256 => Suite {
                aead: &aead::CHACHA20_POLY1305,
                hkdf: hkdf::HKDF_SHA256,
            },
            _ => return None,
        })
    }
}

/// An output length for ring's HKDF.
struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// HKDF-Expand-Label (RFC 8446 §7.1) with an empty context, into `out`.
fn expand_label(alg: hkdf::Algorithm, secret: &[u8], label: &[u8], out: &mut [u8]) {
    let prk = hkdf::Prk::new_less_safe(alg, secret);
    let len = (out.len() as u16).to_be_bytes();
    let label_len = [(b"tls13 ".len() + label.len()) as u8];
    let info: [&[u8]; 5] = [&len, &label_len, b"tls13 ", label, &[0]];
    // Lengths here are a hash's, a key's or an IV's: far below HKDF's limit.
    prk.expand(&info, Len(out.len()))
        .and_then(|okm| okm.fill(out))
        .expect("HKDF output within 255 hashes");
}

/// One direction's keys (see the module docs).
pub struct Keys {
    suite: Suite,
    secret: Vec<u8>,
    key: aead::LessSafeKey,
    iv: [u8; aead::NONCE_LEN],
    seq: u64,
}

impl Keys {
    /// The keys of `secret`, a traffic secret of `suite`, from sequence
    /// number 0.
    pub fn new(suite: Suite, secret: &[u8]) -> Keys {
        let mut key = [0u8; 32];
        let key = &mut key[..suite.aead.key_len()];
        expand_label(suite.hkdf, secret, b"key", key);
        let mut iv = [0u8; aead::NONCE_LEN];
        expand_label(suite.hkdf, secret, b"iv", &mut iv);
        let key = aead::UnboundKey::new(suite.aead, key).expect("a key of the suite's length");
        Keys {
            suite,
            secret: secret.to_vec(),
            key: aead::LessSafeKey::new(key),
            iv,
            seq: 0,
        }
    }

    /// The same keys from sequence number `seq` (records protected under
    /// them before the link took over).
    pub fn starting_at(mut self, seq: u64) -> Keys {
        self.seq = seq;
        self
    }

    /// Records protected (or opened) under these keys so far.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The IV (to check the derivation against rustls's own).
    pub fn iv(&self) -> &[u8] {
        &self.iv
    }

    /// Pretends `seq` records were protected (to reach the update limit in
    /// tests).
    #[cfg(test)]
    pub fn skip_to(&mut self, seq: u64) {
        self.seq = seq;
    }

    /// Moves to the next generation: `traffic upd` (RFC 8446 §7.2).
    pub fn update(&mut self) {
        let mut next = vec![0u8; self.secret.len()];
        expand_label(self.suite.hkdf, &self.secret, b"traffic upd", &mut next);
        *self = Keys::new(self.suite, &next);
    }

    /// The next record's nonce: the IV xor the sequence number.
    fn nonce(&mut self) -> aead::Nonce {
        let mut n = self.iv;
        for (b, s) in n[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *b ^= s;
        }
        self.seq += 1;
        aead::Nonce::assume_unique_for_key(n)
    }

    /// Appends a record carrying `plain` (at most [`MAX_PLAIN`] bytes) as
    /// `content_type` to `out`.
    pub fn seal(&mut self, content_type: u8, plain: &[u8], out: &mut Vec<u8>) {
        debug_assert!(plain.len() <= MAX_PLAIN);
        let len = plain.len() + 1 + TAG;
        let header = [content::APPLICATION_DATA, 3, 3, (len >> 8) as u8, len as u8];
        out.reserve(HEADER + len);
        out.extend_from_slice(&header);
        let body = out.len();
        out.extend_from_slice(plain);
        out.push(content_type);
        let nonce = self.nonce();
        let tag = self
            .key
            .seal_in_place_separate_tag(nonce, aead::Aad::from(header), &mut out[body..])
            .expect("a record far below the AEAD's limit");
        out.extend_from_slice(tag.as_ref());
    }

    /// Appends a `KeyUpdate` (not asking the peer to update) under the
    /// current keys, then moves to the next ones: the peer opens what
    /// follows with its next keys.
    pub fn seal_key_update(&mut self, out: &mut Vec<u8>) {
        self.seal(content::HANDSHAKE, &[KEY_UPDATE, 0, 0, 1, 0], out);
        self.update();
    }

    /// Opens the record whose header is `header` and whose body is `body`
    /// (in place): what it held; for data, the plaintext is at the start of
    /// `body`. A `KeyUpdate` moves these keys to the next generation.
    pub fn open(&mut self, header: [u8; HEADER], body: &mut [u8]) -> Result<Opened, RecordError> {
        let nonce = self.nonce();
        let plain = self
            .key
            .open_in_place(nonce, aead::Aad::from(header), body)
            .map_err(|_| RecordError::Decrypt)?;
        // The content type is the last non-zero byte; zeros after it pad.
        let end = plain
            .iter()
            .rposition(|&b| b != 0)
            .ok_or(RecordError::NoContentType)?;
        if end > MAX_PLAIN {
            return Err(RecordError::Overflow { len: end });
        }
        let (content, kind) = (&plain[..end], plain[end]);
        match kind {
            content::APPLICATION_DATA => Ok(Opened::Data(end)),
            content::ALERT => match content {
                [_, 0] => Ok(Opened::Closed),
                [_, description] => Ok(Opened::Alert(*description)),
                _ => Err(RecordError::Unexpected {
                    what: "malformed alert",
                }),
            },
            content::HANDSHAKE => match content {
                [KEY_UPDATE, 0, 0, 1, request @ (0 | 1)] => {
                    self.update();
                    Ok(Opened::KeyUpdated {
                        requested: *request == 1,
                    })
                }
                [KEY_UPDATE, ..] => Err(RecordError::KeyUpdate),
                [NEW_SESSION_TICKET, ..] => Ok(Opened::Nothing),
                _ => Err(RecordError::Unexpected {
                    what: "handshake message",
                }),
            },
            _ => Err(RecordError::Unexpected {
                what: "content type",
            }),
        }
    }
}

/// The body length a protected record's `header` declares, if it is one.
pub fn body_len(header: [u8; HEADER]) -> Result<usize, RecordError> {
    let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
    if header[0] != content::APPLICATION_DATA
        || header[1] != 3
        || !(TAG + 1..=MAX_BODY).contains(&len)
    {
        return Err(RecordError::Header {
            content_type: header[0],
            len,
        });
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn aes128() -> Suite {
        Suite::of(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256).unwrap()
    }

    #[test]
    fn keys_are_derived_as_tls_1_3_derives_them() {
        // A client application traffic secret with its key and IV (SHA-256,
        // 16-byte key), from the test vectors rustls checks its key
        // schedule against (generated with OpenSSL).
        let secret = hex("c14a6d7976d8102b5a0c9951493fee87dcaff82c24cab214e8be71a8206dbda5");
        let mut key = [0u8; 16];
        expand_label(hkdf::HKDF_SHA256, &secret, b"key", &mut key);
        assert_eq!(key.to_vec(), hex("cc9f5f980b5f10306cbad7be98d7572e"));
        let mut iv = [0u8; 12];
        expand_label(hkdf::HKDF_SHA256, &secret, b"iv", &mut iv);
        assert_eq!(iv.to_vec(), hex("b80929e8d02c70f61162ed6b"));
    }

    fn pair() -> (Keys, Keys) {
        let secret = [7u8; 32];
        (Keys::new(aes128(), &secret), Keys::new(aes128(), &secret))
    }

    fn split(record: &mut [u8]) -> ([u8; HEADER], &mut [u8]) {
        let (h, body) = record.split_at_mut(HEADER);
        let header: [u8; HEADER] = h.try_into().unwrap();
        assert_eq!(body_len(header).unwrap(), body.len());
        (header, body)
    }

    #[test]
    fn records_open_in_order_and_not_out_of_it() {
        let (mut tx, mut rx) = pair();
        let mut out = Vec::new();
        tx.seal(content::APPLICATION_DATA, b"first", &mut out);
        let first = out.len();
        tx.seal(content::APPLICATION_DATA, b"second", &mut out);
        let (a, b) = out.split_at_mut(first);
        // The second record under the first one's sequence number fails.
        let mut wrong = b.to_vec();
        let (h, body) = split(&mut wrong);
        assert_eq!(rx.open(h, body), Err(RecordError::Decrypt));
        let (mut tx, mut rx) = pair();
        let mut again = Vec::new();
        tx.seal(content::APPLICATION_DATA, b"first", &mut again);
        let (h, body) = split(a);
        assert_eq!(rx.open(h, body), Ok(Opened::Data(5)));
        assert_eq!(&body[..5], b"first");
        let (h, body) = split(b);
        assert_eq!(rx.open(h, body), Ok(Opened::Data(6)));
        assert_eq!(&body[..6], b"second");
        assert_eq!(again.len(), first);
    }

    #[test]
    fn a_flipped_bit_anywhere_fails_authentication() {
        let mut out = Vec::new();
        pair()
            .0
            .seal(content::APPLICATION_DATA, b"payload", &mut out);
        for i in 0..out.len() {
            let mut bad = out.clone();
            bad[i] ^= 1;
            let (_, mut rx) = pair();
            let h: [u8; HEADER] = bad[..HEADER].try_into().unwrap();
            let r = match body_len(h) {
                Ok(_) => rx.open(h, &mut bad[HEADER..]),
                Err(e) => Err(e),
            };
            assert!(r.is_err(), "byte {i}");
        }
    }

    #[test]
    fn a_key_update_moves_both_sides_to_the_next_keys() {
        let (mut tx, mut rx) = pair();
        let mut out = Vec::new();
        tx.seal_key_update(&mut out);
        let update = out.len();
        tx.seal(content::APPLICATION_DATA, b"after", &mut out);
        assert_eq!(tx.seq(), 1, "the sequence starts again");
        let (a, b) = out.split_at_mut(update);
        let (h, body) = split(a);
        assert_eq!(
            rx.open(h, body),
            Ok(Opened::KeyUpdated { requested: false })
        );
        let (h, body) = split(b);
        assert_eq!(rx.open(h, body), Ok(Opened::Data(5)));
        // A receiver that skipped the update (same sequence number, old
        // keys) cannot open what follows it.
        let (_, mut stale) = pair();
        stale.seq = 1;
        let mut next = out[update..].to_vec();
        let (h, body) = split(&mut next);
        assert_eq!(stale.open(h, body), Err(RecordError::Decrypt));
    }

    #[test]
    fn alerts_tickets_and_padding_are_told_apart() {
        let (mut tx, mut rx) = pair();
        let cases: [(u8, &[u8], Result<Opened, RecordError>); 6] = [
            (content::ALERT, &[1, 0], Ok(Opened::Closed)),
            (content::ALERT, &[2, 42], Ok(Opened::Alert(42))),
            (
                content::HANDSHAKE,
                &[NEW_SESSION_TICKET, 0, 0, 0],
                Ok(Opened::Nothing),
            ),
            (
                content::HANDSHAKE,
                &[KEY_UPDATE, 0, 0, 1, 2],
                Err(RecordError::KeyUpdate),
            ),
            (
                content::CCS,
                &[1],
                Err(RecordError::Unexpected {
                    what: "content type",
                }),
            ),
            (
                content::HANDSHAKE,
                &[1, 0, 0, 0],
                Err(RecordError::Unexpected {
                    what: "handshake message",
                }),
            ),
        ];
        for (kind, content, want) in cases {
            let mut out = Vec::new();
            tx.seal(kind, content, &mut out);
            let (h, body) = split(&mut out);
            assert_eq!(rx.open(h, body), want, "{kind} {content:?}");
        }
        // Zero padding after the content type is stripped: sealed with a
        // zero "type", the plaintext ends "ab", data, three zeros.
        let mut out = Vec::new();
        tx.seal(0, &[b'a', b'b', content::APPLICATION_DATA, 0, 0], &mut out);
        let (h, body) = split(&mut out);
        assert_eq!(rx.open(h, body), Ok(Opened::Data(2)));
        assert_eq!(&body[..2], b"ab");
    }

    #[test]
    fn headers_out_of_bounds_are_refused() {
        assert!(body_len([23, 3, 3, 0, 17]).is_ok());
        assert!(body_len([23, 3, 3, 0, 16]).is_err(), "shorter than a tag");
        let max = (MAX_BODY as u16).to_be_bytes();
        assert!(body_len([23, 3, 3, max[0], max[1]]).is_ok());
        let over = (MAX_BODY as u16 + 1).to_be_bytes();
        assert!(body_len([23, 3, 3, over[0], over[1]]).is_err());
        assert!(body_len([22, 3, 3, 0, 40]).is_err(), "not protected");
    }
}
