//! Admin routing as a pure function: no sockets, unit-tested.

/// An admin endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /stop`.
    Stop,
    /// `POST /pause`.
    Pause,
    /// `POST /resume`.
    Resume,
    /// `GET /status`.
    Status,
    /// `GET /metrics`.
    Metrics,
    /// `GET /health`.
    Health,
}

/// Why a request is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// No such path (404).
    #[error("not found")]
    NotFound,
    /// The path exists for other methods (405, with `Allow`).
    #[error("method not allowed")]
    MethodNotAllowed {
        /// The method the path is for (`GET` paths also take `HEAD`; see
        /// [`RouteError::headers`] for the full `Allow` list).
        allow: &'static str,
    },
    /// A mutating endpoint without the configured bearer token (401, with
    /// `WWW-Authenticate: Bearer`).
    #[error("unauthorized")]
    Unauthorized,
}

impl RouteError {
    /// The HTTP status code.
    pub fn status(self) -> u16 {
        match self {
            RouteError::NotFound => 404,
            RouteError::MethodNotAllowed { .. } => 405,
            RouteError::Unauthorized => 401,
        }
    }

    /// The headers the refusal must carry: `Allow` listing every accepted
    /// method on a 405 (RFC 9110 §15.5.6), `WWW-Authenticate` on a 401
    /// (RFC 9110 §15.5.2).
    pub fn headers(self) -> Vec<(&'static str, &'static str)> {
        match self {
            RouteError::NotFound => vec![],
            RouteError::MethodNotAllowed { allow: "GET" } => vec![("Allow", "GET, HEAD")],
            RouteError::MethodNotAllowed { allow } => vec![("Allow", allow)],
            RouteError::Unauthorized => vec![("WWW-Authenticate", "Bearer")],
        }
    }
}

/// Decides what a request is: `method` and `url` as received, the
/// `Authorization` header if any, and the configured token if any.
pub fn route(
    method: &str,
    url: &str,
    authorization: Option<&str>,
    token: Option<&str>,
) -> Result<Endpoint, RouteError> {
    let path = url.split(['?', '#']).next().unwrap_or("");
    let path = if path.len() > 1 {
        path.trim_end_matches('/')
    } else {
        path
    };
    let (endpoint, allow) = match path {
        "/stop" => (Endpoint::Stop, "POST"),
        "/pause" => (Endpoint::Pause, "POST"),
        "/resume" => (Endpoint::Resume, "POST"),
        "/status" => (Endpoint::Status, "GET"),
        "/metrics" => (Endpoint::Metrics, "GET"),
        "/health" => (Endpoint::Health, "GET"),
        _ => return Err(RouteError::NotFound),
    };
    let method_ok = method == allow || (allow == "GET" && method == "HEAD");
    if !method_ok {
        return Err(RouteError::MethodNotAllowed { allow });
    }
    if allow == "POST" {
        if let Some(token) = token {
            let presented = authorization.and_then(bearer_credentials);
            if !presented.is_some_and(|p| constant_time_eq(p.as_bytes(), token.as_bytes())) {
                return Err(RouteError::Unauthorized);
            }
        }
    }
    Ok(endpoint)
}

/// The credentials of an `Authorization: Bearer <credentials>` value, trimmed.
/// The scheme name is case-insensitive (RFC 9110 §11.1); one space follows it.
fn bearer_credentials(authorization: &str) -> Option<&str> {
    let (scheme, credentials) = authorization.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("Bearer")
        .then(|| credentials.trim())
        .filter(|c| !c.is_empty())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_methods_and_paths() {
        assert_eq!(route("POST", "/stop", None, None), Ok(Endpoint::Stop));
        assert_eq!(route("POST", "/pause/", None, None), Ok(Endpoint::Pause));
        assert_eq!(
            route("POST", "/resume?x=1", None, None),
            Ok(Endpoint::Resume)
        );
        assert_eq!(route("GET", "/status", None, None), Ok(Endpoint::Status));
        assert_eq!(route("HEAD", "/health", None, None), Ok(Endpoint::Health));
        assert_eq!(route("GET", "/metrics", None, None), Ok(Endpoint::Metrics));
        assert_eq!(route("GET", "/nope", None, None), Err(RouteError::NotFound));
        assert_eq!(route("GET", "", None, None), Err(RouteError::NotFound));
        assert_eq!(
            route("GET", "/stop", None, None),
            Err(RouteError::MethodNotAllowed { allow: "POST" })
        );
        assert_eq!(
            route("DELETE", "/status", None, None),
            Err(RouteError::MethodNotAllowed { allow: "GET" })
        );
        assert_eq!(RouteError::MethodNotAllowed { allow: "GET" }.status(), 405);
    }

    #[test]
    fn refusals_carry_allow_and_challenge_headers() {
        let allow = |m, u| route(m, u, None, None).unwrap_err().headers();
        assert_eq!(allow("POST", "/health"), vec![("Allow", "GET, HEAD")]);
        assert_eq!(allow("PUT", "/metrics"), vec![("Allow", "GET, HEAD")]);
        assert_eq!(allow("GET", "/stop"), vec![("Allow", "POST")]);
        assert_eq!(allow("HEAD", "/pause"), vec![("Allow", "POST")]);
        // Every method the Allow header lists is accepted.
        for path in [
            "/health", "/status", "/metrics", "/stop", "/pause", "/resume",
        ] {
            let listed = allow("DELETE", path);
            for m in listed[0].1.split(", ") {
                assert!(route(m, path, None, None).is_ok(), "{m} {path}");
            }
        }
        assert_eq!(
            route("POST", "/stop", None, Some("t"))
                .unwrap_err()
                .headers(),
            vec![("WWW-Authenticate", "Bearer")]
        );
        assert!(RouteError::NotFound.headers().is_empty());
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        let t = Some("s3cret");
        for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
            assert_eq!(
                route("POST", "/stop", Some(&format!("{scheme} s3cret")), t),
                Ok(Endpoint::Stop),
                "{scheme}"
            );
        }
        for bad in [
            "Bearers3cret",
            "Bearer",
            "Bearer ",
            " Bearer s3cret",
            "Bear s3cret",
        ] {
            assert_eq!(
                route("POST", "/stop", Some(bad), t),
                Err(RouteError::Unauthorized),
                "{bad:?}"
            );
        }
        assert_eq!(
            route("POST", "/stop", Some("Bearer   s3cret  "), t),
            Ok(Endpoint::Stop)
        );
    }

    #[test]
    fn tokens_guard_mutating_endpoints_only() {
        let t = Some("s3cret");
        assert_eq!(
            route("POST", "/stop", None, t),
            Err(RouteError::Unauthorized)
        );
        assert_eq!(
            route("POST", "/stop", Some("Bearer wrong"), t),
            Err(RouteError::Unauthorized)
        );
        assert_eq!(
            route("POST", "/stop", Some("Basic s3cret"), t),
            Err(RouteError::Unauthorized)
        );
        assert_eq!(
            route("POST", "/stop", Some("Bearer s3cret"), t),
            Ok(Endpoint::Stop)
        );
        assert_eq!(route("GET", "/status", None, t), Ok(Endpoint::Status));
        assert_eq!(RouteError::Unauthorized.status(), 401);
    }

    #[test]
    fn arbitrary_input_never_panics() {
        for (m, u) in [
            ("", ""),
            ("GET", "?"),
            ("POST", "//"),
            ("GET", "/\u{0}"),
            ("x", "/status#frag"),
        ] {
            let _ = route(m, u, Some("Bearer"), Some(""));
        }
    }
}
