//! Request paths: which route a path names, and with which parameters.

use crate::server::metrics::RouteLabel;
use crate::server::request_log::TargetName;

/// How a forwarding route addresses its group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fan {
    /// `/one/:group/:name?/*path`
    One,
    /// `/any/:group/*path`
    Any,
    /// `/many/:group/*path`
    Many,
}

/// A request path, parsed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Route<'a> {
    Register,
    Renew,
    Remove(Option<&'a str>),
    Forward {
        fan: Fan,
        group: &'a str,
        name: Option<&'a str>,
        rest: &'a str,
    },
    /// `/peer/one/:group/:name?/*path`: a call another instance of the
    /// formation forwards for a node attached here.
    Peer {
        group: &'a str,
        name: Option<&'a str>,
        rest: &'a str,
    },
    AdminClusters(Option<&'a str>),
    AdminCluster(&'a str),
    /// `/admin/instances`: the formation's instances.
    AdminInstances,
    Token,
    Ping,
    Healthz,
    Readyz,
    Metrics,
    Dashboard,
    /// `/console/...`, with the rest of the path.
    Console(&'a str),
    NotFound,
}

impl Route<'_> {
    /// The route a request is counted under in the metrics.
    pub(super) fn label(&self) -> RouteLabel {
        match self {
            Route::Register => RouteLabel::Register,
            Route::Renew => RouteLabel::Renew,
            Route::Remove(_) => RouteLabel::Remove,
            Route::Forward { fan: Fan::One, .. } => RouteLabel::One,
            Route::Forward { fan: Fan::Any, .. } => RouteLabel::Any,
            Route::Forward { fan: Fan::Many, .. } => RouteLabel::Many,
            Route::Peer { .. } => RouteLabel::One,
            Route::AdminClusters(_)
            | Route::AdminCluster(_)
            | Route::AdminInstances
            | Route::Dashboard
            | Route::Console(_) => RouteLabel::Admin,
            Route::Token => RouteLabel::Token,
            Route::Ping | Route::Healthz | Route::Readyz | Route::Metrics | Route::NotFound => {
                RouteLabel::Other
            }
        }
    }
}

impl<'a> Route<'a> {
    /// The target of a forwarding route.
    /// As [`Target`](mediator_core::Target) writes it (`g/n`, `g/`, `g/*`,
    /// `g/?`), straight from the path: for the request log, valid or not.
    pub(super) fn target(&self) -> Option<TargetName<'a>> {
        match *self {
            Route::Peer { group, name, .. } => Some(TargetName {
                group,
                rest: name.unwrap_or(""),
            }),
            Route::Forward {
                fan, group, name, ..
            } => Some(TargetName {
                group,
                rest: match fan {
                    Fan::One => name.unwrap_or(""),
                    Fan::Many => "*",
                    Fan::Any => "?",
                },
            }),
            _ => None,
        }
    }
}

/// Splits off the first segment: `a/b/c` → (`a`, Some(`b/c`)).
fn first_segment(path: &str) -> (&str, Option<&str>) {
    // A byte scan: segments are short, and every request's path is split.
    match path.bytes().position(|b| b == b'/') {
        // `/` is ASCII: both sides are on character boundaries.
        Some(at) => (&path[..at], Some(&path[at + 1..])),
        None => (path, None),
    }
}

/// Whether a route without parameters matches, with or without a trailing slash.
fn bare(tail: Option<&str>) -> bool {
    matches!(tail, None | Some(""))
}

/// The name and the rest after a `/one` group: `/one/g//p`, an empty name
/// segment, is the unnamed node.
fn one_name(after: Option<&str>) -> (Option<&str>, Option<&str>) {
    let (name, rest) = after.map_or(("", None), first_segment);
    (Some(name).filter(|n| !n.is_empty()), rest)
}

pub(crate) fn parse_route(path: &str) -> Route<'_> {
    let path = path.strip_prefix('/').unwrap_or(path);
    let (head, tail) = first_segment(path);
    match head {
        "" if tail.is_none() => Route::Dashboard,
        "register" if bare(tail) => Route::Register,
        "renew" if bare(tail) => Route::Renew,
        "remove" => match tail.map(|t| t.trim_end_matches('/')) {
            None | Some("") => Route::Remove(None),
            Some(id) => Route::Remove(Some(id)),
        },
        "one" | "any" | "many" => {
            let Some(tail) = tail else {
                return Route::NotFound;
            };
            let (group, after) = first_segment(tail);
            let (fan, name, rest) = match head {
                "one" => {
                    let (name, rest) = one_name(after);
                    (Fan::One, name, rest)
                }
                "any" => (Fan::Any, None, after),
                _ => (Fan::Many, None, after),
            };
            Route::Forward {
                fan,
                group,
                name,
                rest: rest.unwrap_or(""),
            }
        }
        "peer" => {
            let Some(("one", Some(tail))) = tail.map(first_segment) else {
                return Route::NotFound;
            };
            let (group, after) = first_segment(tail);
            let (name, rest) = one_name(after);
            Route::Peer {
                group,
                name,
                rest: rest.unwrap_or(""),
            }
        }
        "admin" => {
            let (what, param) = tail.map_or(("", None), first_segment);
            let param = param
                .map(|p| p.trim_end_matches('/'))
                .filter(|p| !p.is_empty());
            match (what, param) {
                ("clusters", group) => Route::AdminClusters(group),
                ("cluster", Some(id)) => Route::AdminCluster(id),
                ("instances", None) => Route::AdminInstances,
                _ => Route::NotFound,
            }
        }
        "console" => match tail {
            Some(rest) if !rest.is_empty() => Route::Console(rest),
            _ => Route::NotFound,
        },
        "token" if bare(tail) => Route::Token,
        "ping" if bare(tail) => Route::Ping,
        "healthz" if bare(tail) => Route::Healthz,
        "readyz" if bare(tail) => Route::Readyz,
        "metrics" if bare(tail) => Route::Metrics,
        _ => Route::NotFound,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_parse() {
        let one = |group, name, rest| Route::Forward {
            fan: Fan::One,
            group,
            name,
            rest,
        };
        assert_eq!(parse_route("/one/g/n/a/b"), one("g", Some("n"), "a/b"));
        assert_eq!(parse_route("/one/g//p"), one("g", None, "p"));
        assert_eq!(parse_route("/one/g"), one("g", None, ""));
        assert_eq!(parse_route("/one/g/n"), one("g", Some("n"), ""));
        assert_eq!(parse_route("/one/g/n/"), one("g", Some("n"), ""));
        assert_eq!(parse_route("/one"), Route::NotFound);
        assert_eq!(
            parse_route("/peer/one/g/n/a"),
            Route::Peer {
                group: "g",
                name: Some("n"),
                rest: "a"
            }
        );
        assert_eq!(parse_route("/peer/many/g/a"), Route::NotFound);
        assert_eq!(parse_route("/peer"), Route::NotFound);
        assert_eq!(parse_route("/admin/instances"), Route::AdminInstances);
        assert_eq!(
            parse_route("/many/g/x/"),
            Route::Forward {
                fan: Fan::Many,
                group: "g",
                name: None,
                rest: "x/"
            }
        );
        assert_eq!(parse_route("/remove/12"), Route::Remove(Some("12")));
        assert_eq!(parse_route("/remove/"), Route::Remove(None));
        assert_eq!(parse_route("/admin/clusters"), Route::AdminClusters(None));
        assert_eq!(
            parse_route("/admin/clusters/g"),
            Route::AdminClusters(Some("g"))
        );
        assert_eq!(parse_route("/admin/cluster/7"), Route::AdminCluster("7"));
        assert_eq!(parse_route("/admin/cluster"), Route::NotFound);
        assert_eq!(parse_route("/register/"), Route::Register);
        assert_eq!(parse_route("/register/x"), Route::NotFound);
        assert_eq!(parse_route("/"), Route::Dashboard);
        assert_eq!(parse_route("/metrics"), Route::Metrics);
        assert_eq!(
            parse_route("/console/api/state"),
            Route::Console("api/state")
        );
        assert_eq!(parse_route("/console/"), Route::NotFound);
        assert_eq!(parse_route("/metrics/"), Route::Metrics);
        assert_eq!(parse_route("//"), Route::NotFound);
    }
}
