//! The dashboard at `GET /`: one self-contained HTML page listing the
//! registered nodes, rendered on the server and reloaded by the browser
//! every few seconds (the browser resends its Basic login on each reload).

use std::fmt::Write as _;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::Full;
use mediator_core::{Node, Timestamp};

use super::reply::{add_common_headers, HttpResponse};

/// Seconds between reloads.
const REFRESH_SECS: u32 = 5;

/// Only inline styles, no scripts, no frames: the page needs nothing else.
const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'";

const STYLE: &str = "body{font:14px system-ui,sans-serif;margin:2em;color:#222}\
h1{font-size:1.4em;margin:0 0 .3em}p{color:#666;margin:0 0 1em}\
table{border-collapse:collapse;width:100%}\
th,td{text-align:left;padding:.35em .7em;border-bottom:1px solid #ddd;white-space:nowrap}\
th{background:#f4f4f4}tr.expired td{color:#a33}code{font-size:.95em}";

/// The page for these nodes, as seen at `now` by mediator `instance`.
pub(crate) fn page(nodes: &[Node], instance: &str, now: Timestamp) -> HttpResponse {
    let mut html = String::with_capacity(1024 + nodes.len() * 256);
    // Writing to a `String` cannot fail.
    let _ = write_page(&mut html, nodes, instance, now);
    let mut response = Response::new(Full::new(Bytes::from(html)));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    add_common_headers(headers);
    response
}

fn write_page(
    out: &mut String,
    nodes: &[Node],
    instance: &str,
    now: Timestamp,
) -> std::fmt::Result {
    write!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECS}\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>Mediator</title><style>{STYLE}</style></head><body>\
         <h1>Mediator</h1><p>{count} registered node{plural} &middot; instance \
         <code>{instance}</code> &middot; {at} &middot; refreshes every {REFRESH_SECS} s</p>\
         <table><thead><tr><th>id</th><th>node</th><th>endpoint</th><th>created</th>\
         <th>updated</th><th>lease until</th></tr></thead><tbody>",
        count = nodes.len(),
        plural = if nodes.len() == 1 { "" } else { "s" },
        instance = escape(instance),
        at = now.to_rfc3339(),
    )?;
    for node in nodes {
        let class = if node.is_expired(now) {
            " class=\"expired\""
        } else {
            ""
        };
        write!(
            out,
            "<tr{class}><td>{id}</td><td><code>{key}</code></td><td><code>{endpoint}</code></td>\
             <td>{created}</td><td>{updated}</td><td>{lease}</td></tr>",
            id = node.id.0,
            key = escape(&node.key.to_string()),
            endpoint = escape(&node.endpoint.to_string()),
            created = node.created.to_rfc3339(),
            updated = node
                .updated
                .map_or_else(|| "&ndash;".to_owned(), Timestamp::to_rfc3339),
            lease = node.lease_until.to_rfc3339(),
        )?;
    }
    if nodes.is_empty() {
        out.push_str("<tr><td colspan=\"6\">no node is registered</td></tr>");
    }
    out.push_str("</tbody></table></body></html>\n");
    Ok(())
}

/// Text as HTML element content or a quoted attribute value.
fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_in_values_is_escaped() {
        assert_eq!(
            escape("<a href='x'>&\"</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;"
        );
    }
}
