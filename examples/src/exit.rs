//! The `mediator` binary's exit codes, and the words its errors use for a
//! mediator it cannot reach.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | done; for `send`, every node asked answered (a broadcast with `--allow-partial`: at least one) |
//! | 1 | usage or configuration: a bad flag or setting, a missing secret, an unreadable file, an address in use, a store that does not open, a problem `check` found |
//! | 2 | the mediator: it cannot be reached, or it refused the request (wrong token, unknown node, no node available, overloaded) |
//! | 3 | delivery: a node failed, did not answer in time, or its reply could not be opened; for a broadcast, any such node (all of them even with `--allow-partial`) |

/// Done.
pub const OK: u8 = 0;
/// Usage or configuration error.
pub const USAGE: u8 = 1;
/// The mediator could not be reached or refused.
pub const MEDIATOR: u8 = 2;
/// A delivery failed, wholly or in part.
pub const DELIVERY: u8 = 3;

/// What to tell a person whose call to the mediator at `url` failed with
/// `reason` before any answer: the usual causes in plain words, with what
/// to do, and the low-level reason kept at the end.
///
/// ```
/// use mediator_examples::exit::explain_unreachable;
/// let said = explain_unreachable(
///     "http://127.0.0.1:8080",
///     "client error (Connect): tcp connect error: Connection refused (os error 111)",
/// );
/// assert!(said.starts_with("connection refused: is `mediator serve` running at http://127.0.0.1:8080?"));
/// let said = explain_unreachable("https://127.0.0.1:8080", "received corrupt message of type InvalidContentType");
/// assert!(said.contains("does not speak TLS; use http://127.0.0.1:8080"));
/// ```
pub fn explain_unreachable(url: &str, reason: &str) -> String {
    let lower = reason.to_ascii_lowercase();
    let said = if lower.contains("connection refused") {
        format!("connection refused: is `mediator serve` running at {url}? (--url or MEDIATOR_URL name another)")
    } else if lower.contains("invalidcontenttype") || lower.contains("corrupt message") {
        let plain = url.replacen("https://", "http://", 1);
        format!("the server at {url} does not speak TLS; use {plain}")
    } else if lower.contains("http2 error")
        || lower.contains("invalid http version")
        || lower.contains("received http/0")
        || lower.contains("invalid status")
    {
        let tls = url.replacen("http://", "https://", 1);
        format!("the server at {url} did not answer in HTTP; if it serves HTTPS, use {tls}")
    } else if lower.contains("unknownissuer")
        || lower.contains("invalid peer certificate")
        || lower.contains("certificate")
    {
        format!("the TLS certificate of {url} is not trusted or does not match its name")
    } else if lower.contains("dns error") || lower.contains("failed to lookup") {
        format!("the host name of {url} does not resolve")
    } else if lower.contains("timed out") || lower.contains("deadline") {
        format!("no connection to {url} in time: is the address right, and not filtered?")
    } else {
        format!("the connection to {url} failed")
    };
    format!("{said} ({reason})")
}

/// What to tell a person whose listener could not open its address, with
/// what to do.
pub fn explain_bind(error: &std::io::Error) -> String {
    match error.kind() {
        std::io::ErrorKind::AddrInUse => format!(
            "{error}: another process (another mediator?) listens there; stop it, or pick \
             another address with --listen (MEDIATOR_LISTEN, PORT) or --quic-listen"
        ),
        std::io::ErrorKind::PermissionDenied => format!(
            "{error}: ports below 1024 need privileges; pick a higher port, or grant \
             CAP_NET_BIND_SERVICE"
        ),
        std::io::ErrorKind::AddrNotAvailable => {
            format!("{error}: that address is not one of this machine's")
        }
        _ => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_reasons_are_kept_whole() {
        let said = explain_unreachable("http://h:1", "something odd");
        assert_eq!(said, "the connection to http://h:1 failed (something odd)");
    }
}
