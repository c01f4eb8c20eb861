//! The HTTP/1.x request head as pure functions: where a head ends, what it
//! says, and what to do about the body it declares. No sockets, no clock.
//!
//! tiny_http 0.12 reads heads without any bound (a header line may grow until
//! memory runs out), and drains unread bodies with a blocking read on drop;
//! the admin server therefore reads the head itself, bounded by [`MAX_HEAD`],
//! decides here, and uses tiny_http's types ([`Header`], [`Method`],
//! [`HTTPVersion`]) and its response writer.

use std::str::FromStr;

use tiny_http::{HTTPVersion, Header, Method};

/// Largest request head (request line and headers) accepted, in bytes.
pub const MAX_HEAD: usize = 8 * 1024;

/// Most header lines accepted in one head.
pub const MAX_HEADERS: usize = 64;

/// Largest declared body accepted (and discarded: no endpoint takes one).
pub const MAX_BODY: u64 = 64 * 1024;

/// A parsed request head.
#[derive(Clone, Debug)]
pub struct Head {
    /// The method, as tiny_http names it.
    pub method: Method,
    /// The request target as received (path and query).
    pub target: String,
    /// `HTTP/1.0` or `HTTP/1.1`.
    pub version: HTTPVersion,
    /// The header fields, in order, values trimmed.
    pub headers: Vec<Header>,
}

impl Head {
    /// The first value of header `name` (case-insensitive), if any.
    pub fn header(&self, name: &'static str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.field.equiv(name))
            .map(|h| h.value.as_str())
    }

    /// Whether the response is headers only (`HEAD`).
    pub fn head_only(&self) -> bool {
        self.method == Method::Head
    }
}

/// Why a head is refused; every variant answers with its status and closes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// Not an HTTP/1.x request head (400).
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    /// The head is over [`MAX_HEAD`] bytes or [`MAX_HEADERS`] lines (431).
    #[error("request header fields too large")]
    TooLarge,
    /// An HTTP version other than 1.0 and 1.1 (505).
    #[error("HTTP version not supported")]
    Version,
}

impl HeadError {
    /// The HTTP status code.
    pub fn status(self) -> u16 {
        match self {
            HeadError::Malformed(_) => 400,
            HeadError::TooLarge => 431,
            HeadError::Version => 505,
        }
    }
}

/// Where the head in `buf` ends: the length up to and including the blank
/// line (`\r\n\r\n`, or a bare `\n\n`), or `None` while incomplete.
pub fn head_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(at) = buf[i..].iter().position(|b| *b == b'\n') {
        let nl = i + at;
        let next = nl + 1;
        match buf.get(next) {
            Some(b'\n') => return Some(next + 1),
            Some(b'\r') if buf.get(next + 1) == Some(&b'\n') => return Some(next + 2),
            _ => i = next,
        }
    }
    None
}

/// What the reader should do with bytes received so far, `buf` holding the
/// whole head read until now: go on reading, parse `buf[..n]`, or refuse.
pub fn head_progress(buf: &[u8]) -> Result<Option<usize>, HeadError> {
    match head_end(buf) {
        Some(n) if n <= MAX_HEAD => Ok(Some(n)),
        Some(_) => Err(HeadError::TooLarge),
        None if buf.len() >= MAX_HEAD => Err(HeadError::TooLarge),
        None => Ok(None),
    }
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Parses a complete head (as delimited by [`head_end`]).
pub fn parse_head(head: &[u8]) -> Result<Head, HeadError> {
    if head.len() > MAX_HEAD {
        return Err(HeadError::TooLarge);
    }
    let text = std::str::from_utf8(head).map_err(|_| HeadError::Malformed("not ASCII"))?;
    if !text.is_ascii() {
        return Err(HeadError::Malformed("not ASCII"));
    }
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let request_line = lines.next().unwrap_or("");
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HeadError::Malformed("bad request line"));
    };
    if !is_token(method) {
        return Err(HeadError::Malformed("bad method"));
    }
    if target.is_empty() || target.bytes().any(|b| b.is_ascii_control()) {
        return Err(HeadError::Malformed("bad request target"));
    }
    let version = match version {
        "HTTP/1.1" => HTTPVersion(1, 1),
        "HTTP/1.0" => HTTPVersion(1, 0),
        v if v.starts_with("HTTP/") => return Err(HeadError::Version),
        _ => return Err(HeadError::Malformed("bad version")),
    };
    let method = Method::from_str(method).map_err(|()| HeadError::Malformed("bad method"))?;
    let mut headers = Vec::new();
    for line in lines.take_while(|l| !l.is_empty()) {
        if headers.len() == MAX_HEADERS {
            return Err(HeadError::TooLarge);
        }
        let (name, _) = line
            .split_once(':')
            .ok_or(HeadError::Malformed("header without a colon"))?;
        if !is_token(name) {
            return Err(HeadError::Malformed("bad header name"));
        }
        if line.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
            return Err(HeadError::Malformed("control character in a header"));
        }
        headers.push(Header::from_str(line).map_err(|()| HeadError::Malformed("bad header"))?);
    }
    Ok(Head {
        method,
        target: target.to_owned(),
        version,
        headers,
    })
}

/// What to do with the body a head declares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyPlan {
    /// There is none: answer at once.
    None,
    /// Read and discard `len` bytes first (sending `100 Continue` first when
    /// `send_continue`); the endpoints take no body.
    Discard {
        /// Declared length.
        len: u64,
        /// The client waits for `100 Continue` before sending.
        send_continue: bool,
    },
}

/// Why a declared body is refused; every variant answers and closes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// A `Content-Length` over [`MAX_BODY`] (413).
    #[error("payload too large: the admin endpoints take no body")]
    TooLarge,
    /// A `Transfer-Encoding` body, whose length is unknown (411).
    #[error("length required: the admin endpoints take no body")]
    LengthRequired,
    /// Unparsable or conflicting `Content-Length` headers (400).
    #[error("malformed Content-Length")]
    BadLength,
    /// An `Expect` other than `100-continue` (417).
    #[error("expectation failed")]
    Expectation,
}

impl BodyError {
    /// The HTTP status code.
    pub fn status(self) -> u16 {
        match self {
            BodyError::TooLarge => 413,
            BodyError::LengthRequired => 411,
            BodyError::BadLength => 400,
            BodyError::Expectation => 417,
        }
    }
}

/// Decides what to do with the body `head` declares.
pub fn body_plan(head: &Head) -> Result<BodyPlan, BodyError> {
    if head.header("Transfer-Encoding").is_some() {
        return Err(BodyError::LengthRequired);
    }
    let mut len: Option<u64> = None;
    for h in head
        .headers
        .iter()
        .filter(|h| h.field.equiv("Content-Length"))
    {
        let v = h.value.as_str();
        if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
            return Err(BodyError::BadLength);
        }
        // Digits only: the sole failure is overflow, which is too large.
        let n = v.parse::<u64>().unwrap_or(u64::MAX);
        if len.is_some_and(|l| l != n) {
            return Err(BodyError::BadLength);
        }
        len = Some(n);
    }
    let send_continue = match head.header("Expect") {
        None => false,
        Some(v) if v.eq_ignore_ascii_case("100-continue") => true,
        Some(_) => return Err(BodyError::Expectation),
    };
    match len.unwrap_or(0) {
        0 => Ok(BodyPlan::None),
        n if n > MAX_BODY => Err(BodyError::TooLarge),
        n => Ok(BodyPlan::Discard {
            len: n,
            send_continue,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Head {
        parse_head(text.as_bytes()).unwrap()
    }

    #[test]
    fn finds_the_end_of_a_head() {
        assert_eq!(head_end(b""), None);
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n"), None);
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n"), None);
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\n"), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nBODY"), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.1\n\nX"), Some(16));
        assert_eq!(head_end(b"\r\n\r"), None);
    }

    #[test]
    fn the_head_is_bounded() {
        assert_eq!(head_progress(b"GET / HT"), Ok(None));
        assert_eq!(head_progress(b"GET / HTTP/1.1\r\n\r\n"), Ok(Some(18)));
        let endless = vec![b'a'; MAX_HEAD];
        assert_eq!(head_progress(&endless), Err(HeadError::TooLarge));
        let mut long = b"GET / HTTP/1.1\r\nX: ".to_vec();
        long.extend(vec![b'a'; MAX_HEAD]);
        long.extend(b"\r\n\r\n");
        assert_eq!(head_progress(&long), Err(HeadError::TooLarge));
        assert_eq!(parse_head(&long).unwrap_err(), HeadError::TooLarge);
        let many: String = (0..=MAX_HEADERS).map(|i| format!("H{i}: v\r\n")).collect();
        let many = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert!(many.len() < MAX_HEAD);
        assert_eq!(
            parse_head(many.as_bytes()).unwrap_err(),
            HeadError::TooLarge
        );
        assert_eq!(HeadError::TooLarge.status(), 431);
    }

    #[test]
    fn parses_heads() {
        let h = head("POST /stop?x=1 HTTP/1.1\r\nHost: a\r\nAuthorization:  Bearer t \r\n\r\n");
        assert_eq!(h.method, Method::Post);
        assert_eq!(h.target, "/stop?x=1");
        assert_eq!(h.version, HTTPVersion(1, 1));
        assert_eq!(h.header("authorization"), Some("Bearer t"));
        assert_eq!(h.header("host"), Some("a"));
        assert_eq!(h.header("nope"), None);
        assert!(!h.head_only());
        let h = head("HEAD /health HTTP/1.0\n\n");
        assert!(h.head_only());
        assert_eq!(h.version, HTTPVersion(1, 0));
    }

    #[test]
    fn refuses_malformed_heads() {
        for bad in [
            &b"\x00\x01\x02 NOT HTTP \r\n\r\n"[..],
            b"\r\n\r\n",
            b"GET /\r\n\r\n",
            b"GET  / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1 x\r\n\r\n",
            b"G(T / HTTP/1.1\r\n\r\n",
            b"GET / FTP/1.1\r\n\r\n",
            b"GET /\x7f HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nNoColon\r\n\r\n",
            b"GET / HTTP/1.1\r\nBad Name: v\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n",
            b"GET /\xc3\xa9 HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: \xff\r\n\r\n",
        ] {
            let e = parse_head(bad).unwrap_err();
            assert_eq!(e.status(), 400, "{:?}: {e}", String::from_utf8_lossy(bad));
        }
        assert_eq!(
            parse_head(b"GET / HTTP/2.0\r\n\r\n").unwrap_err(),
            HeadError::Version
        );
        assert_eq!(HeadError::Version.status(), 505);
    }

    #[test]
    fn plans_bodies() {
        let plan = |extra: &str| body_plan(&head(&format!("POST /stop HTTP/1.1\r\n{extra}\r\n")));
        assert_eq!(plan(""), Ok(BodyPlan::None));
        assert_eq!(plan("Content-Length: 0\r\n"), Ok(BodyPlan::None));
        assert_eq!(
            plan("Content-Length: 2\r\n"),
            Ok(BodyPlan::Discard {
                len: 2,
                send_continue: false
            })
        );
        assert_eq!(
            plan("Content-Length: 2000\r\nExpect: 100-Continue\r\n"),
            Ok(BodyPlan::Discard {
                len: 2000,
                send_continue: true
            })
        );
        assert_eq!(
            plan(&format!("Content-Length: {MAX_BODY}\r\n")),
            Ok(BodyPlan::Discard {
                len: MAX_BODY,
                send_continue: false
            })
        );
        let too_large = Err(BodyError::TooLarge);
        assert_eq!(
            plan(&format!("Content-Length: {}\r\n", MAX_BODY + 1)),
            too_large
        );
        assert_eq!(plan("Content-Length: 1099511627776\r\n"), too_large);
        assert_eq!(
            plan(&format!("Content-Length: 9{}\r\n", u64::MAX)),
            too_large
        );
        assert_eq!(
            plan("Content-Length: 1099511627776\r\nExpect: 100-continue\r\n"),
            too_large
        );
        assert_eq!(
            plan("Transfer-Encoding: chunked\r\n"),
            Err(BodyError::LengthRequired)
        );
        assert_eq!(
            plan("Transfer-Encoding: chunked\r\nContent-Length: 0\r\n"),
            Err(BodyError::LengthRequired)
        );
        for bad in ["-1", "", "1 2", "0x10", "+5"] {
            assert_eq!(
                plan(&format!("Content-Length: {bad}\r\n")),
                Err(BodyError::BadLength),
                "{bad:?}"
            );
        }
        assert_eq!(
            plan("Content-Length: 1\r\nContent-Length: 2\r\n"),
            Err(BodyError::BadLength)
        );
        assert_eq!(
            plan("Content-Length: 0\r\nContent-Length: 0\r\n"),
            Ok(BodyPlan::None)
        );
        assert_eq!(plan("Expect: magic\r\n"), Err(BodyError::Expectation));
        assert_eq!(BodyError::TooLarge.status(), 413);
        assert_eq!(BodyError::LengthRequired.status(), 411);
    }
}
