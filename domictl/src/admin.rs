//! Calls to a node's admin endpoints (`domi-admin`), over HTTP with `ureq`,
//! at the admin address of the node's record.

use std::time::Duration;

use domi_cluster::etcd::record::NodeRecord;

use crate::resolve::admin_address;
use crate::CtlError;

/// An admin endpoint `domictl` calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    /// `GET /status`.
    Status,
    /// `POST /pause`.
    Pause,
    /// `POST /resume`.
    Resume,
    /// `POST /stop`: the drain.
    Stop,
}

impl Call {
    /// The HTTP method.
    pub fn method(self) -> &'static str {
        match self {
            Call::Status => "GET",
            Call::Pause | Call::Resume | Call::Stop => "POST",
        }
    }

    /// The path.
    pub fn path(self) -> &'static str {
        match self {
            Call::Status => "/status",
            Call::Pause => "/pause",
            Call::Resume => "/resume",
            Call::Stop => "/stop",
        }
    }
}

/// The `Authorization` header value for `token`, as the admin server
/// expects it.
pub fn authorization(token: &str) -> String {
    format!("Bearer {token}")
}

/// Makes `call` to `node`'s admin endpoint within `timeout`, sending
/// `token` (if any) as a bearer token; the body of a 2xx answer.
///
/// Errors: [`CtlError::NoAdminAddress`] when the record has none,
/// [`CtlError::AdminUnreachable`] when nothing answers, [`CtlError::Admin`]
/// for any other status (401: a missing or wrong token).
pub fn call(
    node: &NodeRecord,
    call: Call,
    token: Option<&str>,
    timeout: Duration,
) -> Result<String, CtlError> {
    let addr = admin_address(node)?;
    let url = format!("http://{addr}{}", call.path());
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .proxy(None)
        .build()
        .into();
    let unreachable = |reason: String| CtlError::AdminUnreachable {
        id: node.id,
        name: node.name.clone(),
        addr: addr.to_owned(),
        reason,
    };
    let auth = token.map(authorization);
    let answer = match call {
        Call::Status => {
            let mut req = agent.get(&url);
            if let Some(a) = &auth {
                req = req.header("Authorization", a);
            }
            req.call()
        }
        Call::Pause | Call::Resume | Call::Stop => {
            let mut req = agent.post(&url);
            if let Some(a) = &auth {
                req = req.header("Authorization", a);
            }
            req.send_empty()
        }
    };
    let mut answer = answer.map_err(|e| unreachable(e.to_string()))?;
    let status = answer.status().as_u16();
    let body = answer
        .body_mut()
        .read_to_string()
        .map_err(|e| unreachable(format!("reading the answer: {e}")))?;
    if (200..300).contains(&status) {
        Ok(body)
    } else {
        Err(CtlError::Admin {
            id: node.id,
            name: node.name.clone(),
            status,
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_and_the_token_header() {
        assert_eq!(
            (Call::Status.method(), Call::Status.path()),
            ("GET", "/status")
        );
        assert_eq!((Call::Stop.method(), Call::Stop.path()), ("POST", "/stop"));
        assert_eq!(authorization("t0k"), "Bearer t0k");
        // The admin server's own routing accepts what we send.
        for c in [Call::Status, Call::Pause, Call::Resume, Call::Stop] {
            assert!(
                domi_admin_route_ok(c.method(), c.path(), &authorization("t")),
                "{c:?}"
            );
        }
    }

    fn domi_admin_route_ok(method: &str, path: &str, authorization: &str) -> bool {
        domi_admin::route(method, path, Some(authorization), Some("t")).is_ok()
    }
}
