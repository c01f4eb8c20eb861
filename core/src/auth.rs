//! Optional bus authentication: a challenge–response over the handshake with
//! an HMAC-SHA256 of a shared cluster secret. The secret never crosses the
//! wire; both sides prove they know it, each over a nonce chosen by the other.
//!
//! ```text
//! connecting side                         accepting side
//! HELLO  info ‖ nonce_c (16)      ──▶
//!                                 ◀──     HELLO_ACK info ‖ nonce_s (16) ‖ proof_s (32)
//! verify proof_s
//! AUTH   proof_c (32)             ──▶     verify proof_c, then the connection opens
//! ```
//!
//! `proof_s = HMAC(secret, "domi/s" ‖ cluster ‖ nonce_c ‖ nonce_s)`,
//! `proof_c = HMAC(secret, "domi/c" ‖ cluster ‖ nonce_c ‖ nonce_s)`.
//! The connecting side holds its frames until it has verified the server;
//! the accepting side handles nothing before the client's proof.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Nonce length.
pub const NONCE_LEN: usize = 16;
/// Proof length.
pub const PROOF_LEN: usize = 32;

/// A nonce.
pub type Nonce = [u8; NONCE_LEN];

/// Why authentication failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The peer sent no authentication data though a secret is configured.
    #[error("the peer did not authenticate (no cluster secret?)")]
    Missing,
    /// The peer sent authentication data though none is configured here.
    #[error("the peer authenticates but this node has no cluster secret")]
    Unexpected,
    /// The proof does not match: the peer does not know the secret.
    #[error("wrong proof: the peer does not know the cluster secret")]
    BadProof,
    /// Authentication data of the wrong length.
    #[error("malformed authentication data ({len} bytes)")]
    Malformed {
        /// Its length.
        len: usize,
    },
}

/// A fresh nonce from the operating system's generator.
pub fn nonce() -> Nonce {
    let mut n = [0u8; NONCE_LEN];
    if getrandom::getrandom(&mut n).is_err() {
        // No OS randomness: fall back to a non-repeating value (time ‖ counter);
        // proofs stay unforgeable without the secret either way.
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        n[..8].copy_from_slice(&t.to_le_bytes());
        n[8..].copy_from_slice(
            &COUNTER
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                .to_le_bytes(),
        );
    }
    n
}

fn mac(
    secret: &[u8],
    role: &[u8],
    cluster: &str,
    nonce_c: &Nonce,
    nonce_s: &Nonce,
) -> Hmac<Sha256> {
    let mut m = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    m.update(role);
    m.update(&(cluster.len() as u32).to_le_bytes());
    m.update(cluster.as_bytes());
    m.update(nonce_c);
    m.update(nonce_s);
    m
}

/// The accepting side's proof.
pub fn server_proof(
    secret: &[u8],
    cluster: &str,
    nonce_c: &Nonce,
    nonce_s: &Nonce,
) -> [u8; PROOF_LEN] {
    mac(secret, b"domi/s", cluster, nonce_c, nonce_s)
        .finalize()
        .into_bytes()
        .into()
}

/// The connecting side's proof.
pub fn client_proof(
    secret: &[u8],
    cluster: &str,
    nonce_c: &Nonce,
    nonce_s: &Nonce,
) -> [u8; PROOF_LEN] {
    mac(secret, b"domi/c", cluster, nonce_c, nonce_s)
        .finalize()
        .into_bytes()
        .into()
}

/// Checks a server proof in constant time.
pub fn check_server(
    secret: &[u8],
    cluster: &str,
    nonce_c: &Nonce,
    nonce_s: &Nonce,
    proof: &[u8],
) -> Result<(), AuthError> {
    check(b"domi/s", secret, cluster, nonce_c, nonce_s, proof)
}

/// Checks a client proof in constant time.
pub fn check_client(
    secret: &[u8],
    cluster: &str,
    nonce_c: &Nonce,
    nonce_s: &Nonce,
    proof: &[u8],
) -> Result<(), AuthError> {
    check(b"domi/c", secret, cluster, nonce_c, nonce_s, proof)
}

fn check(
    role: &[u8],
    secret: &[u8],
    cluster: &str,
    nonce_c: &Nonce,
    nonce_s: &Nonce,
    proof: &[u8],
) -> Result<(), AuthError> {
    mac(secret, role, cluster, nonce_c, nonce_s)
        .verify_slice(proof)
        .map_err(|_| AuthError::BadProof)
}

/// The client nonce carried after a HELLO's node info, if any.
pub fn hello_nonce(secret: Option<&[u8]>, extra: &[u8]) -> Result<Option<Nonce>, AuthError> {
    match (secret, extra.len()) {
        (None, 0) => Ok(None),
        (None, _) => Err(AuthError::Unexpected),
        (Some(_), 0) => Err(AuthError::Missing),
        (Some(_), NONCE_LEN) => Ok(Some(extra.try_into().expect("16 bytes"))),
        (Some(_), len) => Err(AuthError::Malformed { len }),
    }
}

/// The server nonce and proof carried after a HELLO_ACK's node info, if any.
pub fn ack_auth<'a>(
    secret: Option<&[u8]>,
    extra: &'a [u8],
) -> Result<Option<(Nonce, &'a [u8])>, AuthError> {
    match (secret, extra.len()) {
        (None, 0) => Ok(None),
        (None, _) => Err(AuthError::Unexpected),
        (Some(_), 0) => Err(AuthError::Missing),
        (Some(_), n) if n == NONCE_LEN + PROOF_LEN => Ok(Some((
            extra[..NONCE_LEN].try_into().expect("16 bytes"),
            &extra[NONCE_LEN..],
        ))),
        (Some(_), len) => Err(AuthError::Malformed { len }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proofs_verify_only_with_the_same_secret_roles_and_nonces() {
        let (c, s) = ([1u8; 16], [2u8; 16]);
        let ps = server_proof(b"secret", "prod", &c, &s);
        let pc = client_proof(b"secret", "prod", &c, &s);
        assert_ne!(ps, pc, "roles differ");
        assert_eq!(check_server(b"secret", "prod", &c, &s, &ps), Ok(()));
        assert_eq!(check_client(b"secret", "prod", &c, &s, &pc), Ok(()));
        assert_eq!(
            check_server(b"other", "prod", &c, &s, &ps),
            Err(AuthError::BadProof)
        );
        assert_eq!(
            check_server(b"secret", "dev", &c, &s, &ps),
            Err(AuthError::BadProof)
        );
        assert_eq!(
            check_server(b"secret", "prod", &s, &c, &ps),
            Err(AuthError::BadProof)
        );
        assert_eq!(
            check_client(b"secret", "prod", &c, &s, &ps),
            Err(AuthError::BadProof),
            "a server proof is no client proof"
        );
        assert_eq!(
            check_client(b"secret", "prod", &c, &s, &pc[..31]),
            Err(AuthError::BadProof)
        );
    }

    #[test]
    fn auth_blocks_match_the_configuration() {
        let k: Option<&[u8]> = Some(b"k");
        assert_eq!(hello_nonce(None, &[]), Ok(None));
        assert_eq!(hello_nonce(None, &[0; 16]), Err(AuthError::Unexpected));
        assert_eq!(hello_nonce(k, &[]), Err(AuthError::Missing));
        assert_eq!(hello_nonce(k, &[7; 16]), Ok(Some([7; 16])));
        assert_eq!(
            hello_nonce(k, &[7; 3]),
            Err(AuthError::Malformed { len: 3 })
        );
        assert_eq!(ack_auth(k, &[]), Err(AuthError::Missing));
        let block = [1u8; 48];
        let (nonce, proof) = ack_auth(k, &block).unwrap().unwrap();
        assert_eq!((nonce, proof.len()), ([1; 16], 32));
        assert_eq!(ack_auth(None, &[1; 48]).unwrap_err(), AuthError::Unexpected);
    }
}
