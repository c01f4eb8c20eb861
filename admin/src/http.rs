//! The HTTP/1.x request head as pure functions: where a head ends, what it
//! says, and what to do about the body it declares. No sockets, no clock.
//!
//! tiny_http 0.12 reads heads without any bound (a header line may grow until
//! memory runs out), and drains unread bodies with a blocking read on drop;
//! the admin server therefore reads the head itself, bounded by [`MAX_HEAD`],
//! has [`httparse`] parse it, decides here, and uses tiny_http's types
//! ([`Header`], [`Method`], [`HTTPVersion`]) and its response writer.

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

/// What the reader should do with the bytes received so far (`buf`, from
/// the start of the connection): go on reading (`Ok(None)`), answer the head
/// that takes the first `n` bytes (`Ok(Some((n, head)))`; what follows is
/// body), or refuse.
///
/// Only the first [`MAX_HEAD`] bytes are looked at: a head not complete
/// within them is too large. Leading empty lines are skipped and bare `\n`
/// line ends accepted (RFC 9112 §2.2).
pub fn parse_head(buf: &[u8]) -> Result<Option<(usize, Head)>, HeadError> {
    let buf = &buf[..buf.len().min(MAX_HEAD)];
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut fields);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => return Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(refusal(e, buf)),
    };
    // A complete parse sets all three.
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(HeadError::Malformed("incomplete request line"));
    };
    let method = Method::from_str(method).map_err(|()| HeadError::Malformed("bad method"))?;
    let headers = req
        .headers
        .iter()
        .map(|h| Header::from_bytes(h.name, h.value.trim_ascii()))
        .collect::<Result<Vec<_>, ()>>()
        .map_err(|()| HeadError::Malformed("header not ASCII"))?;
    Ok(Some((
        len,
        Head {
            method,
            target: target.to_owned(),
            version: HTTPVersion(1, minor),
            headers,
        },
    )))
}

/// The refusal for an httparse error in `buf`. httparse parses HTTP/1.x
/// only, so any other `HTTP/` version is a version error (505); a version
/// that is not `HTTP/` at all is malformed (400).
fn refusal(e: httparse::Error, buf: &[u8]) -> HeadError {
    match e {
        httparse::Error::TooManyHeaders => HeadError::TooLarge,
        httparse::Error::Version if names_http_version(buf) => HeadError::Version,
        e => HeadError::Malformed(match e {
            httparse::Error::HeaderName => "bad header name",
            httparse::Error::HeaderValue => "bad header value",
            httparse::Error::NewLine => "bad line end",
            httparse::Error::Token => "bad method or target",
            httparse::Error::Version => "bad version",
            _ => "not an HTTP/1.x request",
        }),
    }
}

/// Whether the request line's third word (after leading empty lines) starts
/// with `HTTP/` and a digit.
fn names_http_version(buf: &[u8]) -> bool {
    let start = buf
        .iter()
        .position(|b| !matches!(b, b'\r' | b'\n'))
        .unwrap_or(buf.len());
    let line = buf[start..].split(|b| *b == b'\n').next().unwrap_or(&[]);
    line.split(|b| *b == b' ')
        .nth(2)
        .and_then(|v| v.strip_prefix(b"HTTP/"))
        .is_some_and(|v| v.first().is_some_and(u8::is_ascii_digit))
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
        parse_head(text.as_bytes()).unwrap().unwrap().1
    }

    fn end(buf: &[u8]) -> Option<usize> {
        parse_head(buf).unwrap().map(|(n, _)| n)
    }

    #[test]
    fn finds_the_end_of_a_head() {
        assert_eq!(end(b""), None);
        assert_eq!(end(b"GET / HTTP/1.1\r\n"), None);
        assert_eq!(end(b"GET / HTTP/1.1\r\nA: b\r\n"), None);
        assert_eq!(end(b"GET / HTTP/1.1\r\n\r\n"), Some(18));
        assert_eq!(end(b"GET / HTTP/1.1\r\n\r\nBODY"), Some(18));
        assert_eq!(end(b"GET / HTTP/1.1\n\nX"), Some(16));
        assert_eq!(end(b"GET / HTTP/1.1\r\nA: b\n\r\n"), Some(23));
        // Empty lines before the request line are skipped (RFC 9112 §2.2).
        assert_eq!(end(b"\r\n\r"), None);
        assert_eq!(end(b"\r\n\r\n"), None);
        assert_eq!(end(b"\r\nGET / HTTP/1.1\r\n\r\n"), Some(20));
    }

    #[test]
    fn the_head_is_bounded() {
        assert_eq!(end(b"GET / HT"), None);
        let endless = vec![b'a'; MAX_HEAD];
        assert_eq!(parse_head(&endless).unwrap_err(), HeadError::TooLarge);
        let blank_lines = vec![b'\n'; MAX_HEAD];
        assert_eq!(parse_head(&blank_lines).unwrap_err(), HeadError::TooLarge);
        let mut long = b"GET / HTTP/1.1\r\nX: ".to_vec();
        long.extend(vec![b'a'; MAX_HEAD]);
        long.extend(b"\r\n\r\n");
        assert_eq!(parse_head(&long).unwrap_err(), HeadError::TooLarge);
        assert_eq!(
            parse_head(&long[..MAX_HEAD - 1]).unwrap().map(|(n, _)| n),
            None
        );
        // Exactly MAX_HEAD bytes of head is accepted, with body after it.
        let mut full = b"GET / HTTP/1.1\r\nX: ".to_vec();
        full.extend(vec![b'a'; MAX_HEAD - full.len() - 4]);
        full.extend(b"\r\n\r\nBODY");
        assert_eq!(end(&full), Some(MAX_HEAD));
        let many: String = (0..=MAX_HEADERS).map(|i| format!("H{i}: v\r\n")).collect();
        let many = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert!(many.len() < MAX_HEAD);
        assert_eq!(
            parse_head(many.as_bytes()).unwrap_err(),
            HeadError::TooLarge
        );
        let enough: String = (0..MAX_HEADERS).map(|i| format!("H{i}: v\r\n")).collect();
        assert_eq!(
            head(&format!("GET / HTTP/1.1\r\n{enough}\r\n"))
                .headers
                .len(),
            MAX_HEADERS
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
            b"GET /\r\n\r\n",
            b"GET  / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1 x\r\n\r\n",
            b"G(T / HTTP/1.1\r\n\r\n",
            b"GET / FTP/1.1\r\n\r\n",
            b"GET /\x7f HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nNoColon\r\n\r\n",
            b"GET / HTTP/1.1\r\nBad Name: v\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n",
            b"GET /\xff HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: \xff\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: \xc3\xa9\r\n\r\n",
            b"GET / http/1.1\r\n\r\n",
            b"GET / HTTP/x.1\r\n\r\n",
            b"GET / HTTP/1.1\rX: a\r\n\r\n",
        ] {
            let e = parse_head(bad).unwrap_err();
            assert_eq!(e.status(), 400, "{:?}: {e}", String::from_utf8_lossy(bad));
        }
        // A UTF-8 target is a target (that no route knows).
        assert_eq!(head("GET /\u{e9} HTTP/1.1\r\n\r\n").target, "/\u{e9}");
        // httparse reads HTTP/1.0 and HTTP/1.1 only; another version is
        // refused as soon as it is seen.
        for other in [
            &b"GET / HTTP/2.0\r\n\r\n"[..],
            b"GET / HTTP/1.2\r\n\r\n",
            b"\r\nGET / HTTP/0.9\r\n\r\n",
            b"GET / HTTP/2",
        ] {
            assert_eq!(
                parse_head(other).unwrap_err(),
                HeadError::Version,
                "{:?}",
                String::from_utf8_lossy(other)
            );
        }
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
