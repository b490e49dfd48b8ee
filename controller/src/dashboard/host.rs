//! The `Host` allow-list: the dashboard answers only requests addressed to one of its own
//! names, so a web page elsewhere cannot read it through DNS rebinding (its requests carry
//! the attacker's name in `Host`, whatever address that name resolves to).
//!
//! A request names its host in the `Host` header, or in an absolute-form target
//! (`GET http://name/ HTTP/1.1`); every name it gives must be allowed, and a request that
//! gives none is refused too. Names compare without case and without a trailing dot; a port
//! missing from `Host` means 80.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// One allowed name, with the one port it is allowed on, or any port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    /// Lowercase, without a trailing dot; an IPv6 address in brackets.
    name: String,
    port: Option<u16>,
}

/// Why a host name was not understood.
#[derive(Debug, thiserror::Error)]
#[error("`{0}` is not a host name (expected NAME or NAME:PORT, e.g. dash.example:7878 or [::1])")]
pub struct BadHost(String);

impl FromStr for HostPattern {
    type Err = BadHost;

    fn from_str(s: &str) -> Result<Self, BadHost> {
        let bad = || BadHost(s.chars().take(80).collect());
        let (name, port) = split_port(s).ok_or_else(bad)?;
        let name = normalize(name).ok_or_else(bad)?;
        Ok(HostPattern { name, port })
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(port) => write!(f, "{}:{port}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// `name[:port]`, the name possibly a bracketed IPv6 address.
fn split_port(s: &str) -> Option<(&str, Option<u16>)> {
    let (name, port) = if s.starts_with('[') {
        let end = s.find(']')?;
        match &s[end + 1..] {
            "" => (&s[..=end], None),
            rest => (&s[..=end], Some(rest.strip_prefix(':')?)),
        }
    } else {
        match s.rsplit_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (s, None),
        }
    };
    let port = port.map(str::parse::<u16>).transpose().ok()?;
    Some((name, port))
}

/// The name as it is compared: lowercase, no trailing dot; `None` when it holds anything a
/// host name or an IP address cannot.
fn normalize(name: &str) -> Option<String> {
    if let Some(inner) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        let ip: std::net::Ipv6Addr = inner.parse().ok()?;
        return Some(format!("[{ip}]"));
    }
    let name = name.strip_suffix('.').unwrap_or(name);
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
    ok.then(|| name.to_ascii_lowercase())
}

/// The host names a dashboard answers for.
#[derive(Debug, Clone)]
pub struct AllowedHosts {
    patterns: Vec<HostPattern>,
}

impl AllowedHosts {
    /// The loopback names (`localhost`, `127.0.0.1`, `[::1]`) on the port the server
    /// listens on, the address it listens on when that is a concrete one, and `extra`.
    pub fn new(listening: SocketAddr, extra: &[HostPattern]) -> AllowedHosts {
        let port = Some(listening.port());
        let mut patterns: Vec<HostPattern> = ["localhost", "127.0.0.1", "[::1]"]
            .into_iter()
            .map(|name| HostPattern {
                name: name.to_owned(),
                port,
            })
            .collect();
        let ip = listening.ip();
        if !ip.is_unspecified() {
            let name = match ip {
                IpAddr::V4(v4) => v4.to_string(),
                IpAddr::V6(v6) => format!("[{v6}]"),
            };
            patterns.push(HostPattern { name, port });
        }
        patterns.extend(extra.iter().cloned());
        patterns.dedup();
        AllowedHosts { patterns }
    }

    /// Every allowed name, for the log.
    pub fn patterns(&self) -> &[HostPattern] {
        &self.patterns
    }

    /// Whether `host` (a `Host` header's value or a request target's authority) is allowed.
    pub fn allows(&self, host: &str) -> bool {
        let Some((name, port)) = split_port(host) else {
            return false;
        };
        let Some(name) = normalize(name) else {
            return false;
        };
        let port = port.unwrap_or(80);
        self.patterns
            .iter()
            .any(|p| p.name == name && p.port.is_none_or(|allowed| allowed == port))
    }

    /// Why `request` may not be answered, or `None` when it may.
    fn refusal(&self, request: &Request) -> Option<String> {
        let mut named = 0;
        for value in request.headers().get_all(header::HOST) {
            named += 1;
            match value.to_str() {
                Ok(host) if self.allows(host) => {}
                _ => return Some(format!("Host {value:?} is not allowed")),
            }
        }
        if named > 1 {
            return Some(format!("{named} Host headers"));
        }
        if let Some(authority) = request.uri().authority() {
            named += 1;
            if !self.allows(authority.as_str()) {
                return Some(format!("request target names {authority:?}, not allowed"));
            }
        }
        (named == 0).then(|| "the request names no host".to_owned())
    }
}

/// `app`, answering only requests addressed to one of `hosts`.
pub fn only_for(hosts: AllowedHosts, app: axum::Router) -> axum::Router {
    app.layer(axum::middleware::from_fn_with_state(Arc::new(hosts), check))
}

/// Refuses, with 421 and a plain message, a request addressed to a host name not allowed.
async fn check(State(hosts): State<Arc<AllowedHosts>>, request: Request, next: Next) -> Response {
    match hosts.refusal(&request) {
        None => next.run(request).await,
        Some(why) => {
            tracing::warn!(
                why = %why.chars().take(200).collect::<String>(),
                path = %request.uri().path().chars().take(200).collect::<String>(),
                "refused a dashboard request for a host name it does not answer for"
            );
            (
                StatusCode::MISDIRECTED_REQUEST,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                "this atropos dashboard answers only for its own host names \
                 (add one with `atropos serve --allow-host NAME`)\n",
            )
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use super::*;

    fn hosts(listen: &str, extra: &[&str]) -> AllowedHosts {
        let extra: Vec<HostPattern> = extra.iter().map(|e| e.parse().unwrap()).collect();
        AllowedHosts::new(listen.parse().unwrap(), &extra)
    }

    #[test]
    fn loopback_names_are_allowed_on_the_listening_port_only() {
        let h = hosts("127.0.0.1:7878", &[]);
        for ok in [
            "localhost:7878",
            "LOCALHOST:7878",
            "localhost.:7878",
            "127.0.0.1:7878",
            "[::1]:7878",
            "[0:0::1]:7878",
        ] {
            assert!(h.allows(ok), "{ok}");
        }
        for refused in [
            "evil.example",
            "evil.example:7878",
            "localhost:7879",
            "localhost",
            "127.0.0.1",
            "localhost.evil.example:7878",
            "",
            ":7878",
            "localhost:",
            "localhost:99999",
            "[::1",
            "local host:7878",
        ] {
            assert!(!h.allows(refused), "{refused}");
        }
    }

    #[test]
    fn a_concrete_listen_address_is_allowed_and_an_unspecified_one_is_not_a_name() {
        let h = hosts("192.168.1.5:9000", &[]);
        assert!(h.allows("192.168.1.5:9000"));
        let any = hosts("0.0.0.0:9000", &[]);
        assert!(!any.allows("0.0.0.0:9000"));
        assert!(any.allows("localhost:9000"));
        let v6 = hosts("[fe80::1]:9000", &[]);
        assert!(v6.allows("[FE80::1]:9000"));
    }

    #[test]
    fn an_extra_name_without_a_port_is_allowed_on_any_port() {
        let h = hosts("127.0.0.1:7878", &["dash.example", "ci.example:443"]);
        assert!(h.allows("dash.example"));
        assert!(h.allows("Dash.Example:8080"));
        assert!(h.allows("ci.example:443"));
        assert!(!h.allows("ci.example:80"));
        assert!(!h.allows("ci.example"));
    }

    #[test]
    fn allow_host_rejects_what_is_not_a_host_name() {
        for bad in ["", "a b", "x:y", "[::g]", "evil.example/path", "a:1:2"] {
            assert!(bad.parse::<HostPattern>().is_err(), "{bad}");
        }
        assert_eq!(
            "[::1]:80".parse::<HostPattern>().unwrap().to_string(),
            "[::1]:80"
        );
    }
}
