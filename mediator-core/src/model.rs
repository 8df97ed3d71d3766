//! The data the mediator deals in: who a node is, where it is, and what is sent.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::time::Timestamp;

/// The longest group or node name.
pub const MAX_NAME_LEN: usize = 50;

/// Checks one name against `^[A-Za-z0-9_-]{1,50}$`, naming the field on refusal.
pub fn validate_name(field: &'static str, value: &str) -> Result<()> {
    if value.is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if value.len() > MAX_NAME_LEN {
        return Err(Error::invalid(
            field,
            format!(
                "must be at most {MAX_NAME_LEN} characters, got {}",
                value.len()
            ),
        ));
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        return Err(Error::invalid(
            field,
            format!("must match ^[A-Za-z0-9_-]{{1,50}}$, found {bad:?}"),
        ));
    }
    Ok(())
}

/// A node's identity: its group and, optionally, its name.
///
/// A key without a name is the group's unnamed node; a group has at most one.
/// Keys can only be built validated, so an invalid name never reaches a store.
///
/// ```
/// use mediator_core::NodeKey;
/// let key = NodeKey::new("billing", Some("worker-1")).unwrap();
/// assert_eq!(key.to_string(), "billing/worker-1");
/// assert_eq!("billing/".parse::<NodeKey>().unwrap(), NodeKey::unnamed("billing").unwrap());
/// assert!(NodeKey::new("bad group", None::<&str>).is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct NodeKey {
    /// `group/name`, or `group/` for the unnamed node: one allocation,
    /// shared by every copy of the key (the store's, the routing table's,
    /// each request's), where two strings each were copied every time.
    text: Arc<str>,
    /// Where the group ends in `text` (the index of the `/`).
    group_end: usize,
}

impl NodeKey {
    /// A validated key; `name: None` is the group's unnamed node.
    pub fn new(group: impl Into<String>, name: Option<impl Into<String>>) -> Result<Self> {
        let mut text = group.into();
        validate_name("group", &text)?;
        let group_end = text.len();
        text.push('/');
        if let Some(name) = name {
            let name = name.into();
            validate_name("name", &name)?;
            text.push_str(&name);
        }
        Ok(NodeKey {
            text: Arc::from(text),
            group_end,
        })
    }

    /// A named node's key.
    pub fn named(group: impl Into<String>, name: impl Into<String>) -> Result<Self> {
        NodeKey::new(group, Some(name))
    }

    /// The group's unnamed node.
    pub fn unnamed(group: impl Into<String>) -> Result<Self> {
        NodeKey::new(group, None::<String>)
    }

    /// The key as text: `group/name`, or `group/` for the unnamed node,
    /// as [`Display`](fmt::Display) writes it.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The group.
    pub fn group(&self) -> &str {
        &self.text[..self.group_end]
    }

    /// The name, or `None` for the group's unnamed node.
    pub fn name(&self) -> Option<&str> {
        // Names are never empty, so an empty tail is the unnamed node.
        Some(&self.text[self.group_end + 1..]).filter(|name| !name.is_empty())
    }
}

impl fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeKey")
            .field("group", &self.group())
            .field("name", &self.name())
            .finish()
    }
}

/// By group, then name (the unnamed node first), as when the two were
/// separate fields: `-` sorts before `/`, so the text alone would put
/// `a-b/x` before `a/x`.
impl Ord for NodeKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.group(), self.name()).cmp(&(other.group(), other.name()))
    }
}

impl PartialOrd for NodeKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for NodeKey {
    /// `group/name`, or `group/` for the unnamed node (the token `sub` form).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// `s` around its first `/`. A byte scan: on names this short it costs a
/// fraction of a `char` pattern's search, on every request's target.
pub(crate) fn split_at_slash(s: &str) -> Option<(&str, &str)> {
    let at = s.bytes().position(|b| b == b'/')?;
    // `/` is ASCII, so both sides are on character boundaries.
    Some((&s[..at], &s[at + 1..]))
}

impl FromStr for NodeKey {
    type Err = Error;
    /// Parses `group/name` or `group/` (a bare `group` is the unnamed node too).
    fn from_str(s: &str) -> Result<Self> {
        match split_at_slash(s) {
            Some((group, "")) => NodeKey::unnamed(group),
            Some((group, name)) => NodeKey::named(group, name),
            None => NodeKey::unnamed(s),
        }
    }
}

impl Serialize for NodeKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for NodeKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A registration's id, assigned by the store on first insert and kept on update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(pub u64);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The longest endpoint text accepted.
pub const MAX_ENDPOINT_LEN: usize = 2048;

/// Where the mediator reaches a node: validated text whose scheme picks
/// the [`Deliver`](crate::Deliver) that serves it.
///
/// - `http://host:port/base` or `https://...`: the mediator calls the node
///   back at this URL ([`Endpoint::http`]);
/// - `attached:INSTANCE`: the node holds a live connection to mediator
///   instance `INSTANCE`, and only that instance can deliver to it
///   ([`Endpoint::attached`]);
/// - `SCHEME:REST`: a team's own transport ([`Endpoint::custom`]).
///
/// Every way to build one validates, so a stored endpoint is always one a
/// deliverer can read.
///
/// ```
/// use mediator_core::Endpoint;
/// let e: Endpoint = "http://10.0.0.5:9000".parse().unwrap();
/// assert_eq!((e.scheme(), e.as_str()), ("http", "http://10.0.0.5:9000"));
/// let a: Endpoint = "attached:hub-1".parse().unwrap();
/// assert_eq!(a, Endpoint::attached("hub-1").unwrap());
/// assert_eq!(a.attached_instance(), Some("hub-1"));
/// let c = Endpoint::custom("chan", "inbox-7").unwrap();
/// assert_eq!(c.to_string(), "chan:inbox-7");
/// assert!("http://h:99999".parse::<Endpoint>().is_err());
/// assert!("no scheme".parse::<Endpoint>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// Shared by every copy of the node, as [`NodeKey`]'s text is.
    text: Arc<str>,
    /// Where the scheme ends in `text` (the index of the first `:`).
    scheme_end: usize,
}

/// The scheme of [`Endpoint::attached`] endpoints.
pub const ATTACHED_SCHEME: &str = "attached";

fn printable(field: &'static str, value: &str) -> Result<()> {
    if value.is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if value.len() > MAX_ENDPOINT_LEN || value.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(Error::invalid(
            field,
            format!("must be at most {MAX_ENDPOINT_LEN} characters without spaces"),
        ));
    }
    Ok(())
}

impl Endpoint {
    /// A validated HTTP callback endpoint: an absolute `http` or `https`
    /// URL with a host, a port in range if one is given, no credentials,
    /// query or fragment. A trailing `/` is dropped.
    pub fn http(url: impl Into<String>) -> Result<Self> {
        let url = url.into();
        printable("url", &url)?;
        let parsed = url::Url::parse(&url).map_err(|e| Error::invalid("url", e.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(Error::invalid("url", "must start with http:// or https://"));
        }
        if !url.contains("://") || parsed.host_str().is_none_or(str::is_empty) {
            return Err(Error::invalid("url", "must name a host"));
        }
        // Credentials in the URL would be stored, listed and logged; a query
        // or fragment would be glued to every forwarded path.
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(Error::invalid("url", "must not carry user:password@"));
        }
        if parsed.query().is_some() || parsed.fragment().is_some() || url.contains(['?', '#']) {
            return Err(Error::invalid("url", "must not have a query or fragment"));
        }
        // Lower-case the scheme so that it picks its deliverer whatever the
        // node wrote; the rest is kept as given.
        let scheme_end = parsed.scheme().len();
        let text = format!("{}{}", parsed.scheme(), &url[scheme_end..]);
        Ok(Endpoint {
            text: Arc::from(text.trim_end_matches('/')),
            scheme_end,
        })
    }

    /// A node attached to mediator instance `instance`.
    pub fn attached(instance: impl AsRef<str>) -> Result<Self> {
        Endpoint::custom(ATTACHED_SCHEME, instance)
    }

    /// An endpoint of a transport of one's own, written `scheme:rest`.
    ///
    /// The scheme is lower-case (`[a-z][a-z0-9+.-]*`, at most 32
    /// characters); `rest` is printable text without spaces. `http` and
    /// `https` are checked as URLs.
    pub fn custom(scheme: impl AsRef<str>, rest: impl AsRef<str>) -> Result<Self> {
        let (scheme, rest) = (scheme.as_ref(), rest.as_ref());
        if matches!(scheme, "http" | "https") {
            return Endpoint::http(format!("{scheme}:{rest}"));
        }
        let mut chars = scheme.chars();
        let well_formed = chars.next().is_some_and(|c| c.is_ascii_lowercase())
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+.-".contains(c))
            && scheme.len() <= 32;
        if !well_formed {
            return Err(Error::invalid(
                "endpoint",
                format!("scheme {scheme:?} must match ^[a-z][a-z0-9+.-]{{0,31}}$"),
            ));
        }
        printable("endpoint", rest)?;
        Ok(Endpoint {
            text: Arc::from(format!("{scheme}:{rest}")),
            scheme_end: scheme.len(),
        })
    }

    /// The scheme, which picks the deliverer: `http`, `https`, `attached`, ...
    pub fn scheme(&self) -> &str {
        &self.text[..self.scheme_end]
    }

    /// The whole endpoint as text, as stores keep it.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// What follows `scheme:`.
    pub fn rest(&self) -> &str {
        &self.text[self.scheme_end + 1..]
    }

    /// The base URL of an `http` or `https` endpoint.
    pub fn url(&self) -> Option<&str> {
        matches!(self.scheme(), "http" | "https").then_some(&*self.text)
    }

    /// The instance holding an attached node's connection.
    pub fn attached_instance(&self) -> Option<&str> {
        (self.scheme() == ATTACHED_SCHEME).then(|| self.rest())
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for Endpoint {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.split_once(':') {
            Some((scheme, _))
                if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https") =>
            {
                Endpoint::http(s)
            }
            Some((scheme, rest)) => Endpoint::custom(scheme, rest),
            None => Err(Error::invalid(
                "endpoint",
                "must be an http(s) URL, attached:INSTANCE or scheme:address",
            )),
        }
    }
}

/// Free-form string metadata a node registers with (version, zone, ...).
pub type Meta = BTreeMap<String, String>;

/// A registered node, as a store returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The store's id for this registration.
    pub id: NodeId,
    /// Who the node is.
    pub key: NodeKey,
    /// Where the mediator reaches it.
    pub endpoint: Endpoint,
    /// What the node said about itself.
    pub meta: Meta,
    /// When it first registered.
    pub created: Timestamp,
    /// When its registration last changed or its lease was last renewed
    /// (the node last heard from), or `None` if neither ever happened.
    pub updated: Option<Timestamp>,
    /// When its lease runs out, unless renewed.
    pub lease_until: Timestamp,
}

impl Node {
    /// Whether the lease has run out at `now` (a lease ending exactly at `now` has).
    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.lease_until <= now
    }
}

/// What a node asks to be registered as.
///
/// ```
/// use mediator_core::{Endpoint, NodeKey, Registration};
/// use std::time::Duration;
/// let r = Registration::new(
///     NodeKey::named("users", "api").unwrap(),
///     Endpoint::http("http://127.0.0.1:9000").unwrap(),
///     Duration::from_secs(30),
/// );
/// assert_eq!(r.ttl, Duration::from_secs(30));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// Who registers.
    pub key: NodeKey,
    /// Where to reach it.
    pub endpoint: Endpoint,
    /// Metadata to store with it.
    pub meta: Meta,
    /// How long the lease lasts from the moment of registration.
    pub ttl: Duration,
}

impl Registration {
    /// A registration with no metadata.
    pub fn new(key: NodeKey, endpoint: Endpoint, ttl: Duration) -> Self {
        Registration {
            key,
            endpoint,
            meta: Meta::new(),
            ttl,
        }
    }

    /// Adds metadata.
    pub fn with_meta(mut self, meta: Meta) -> Self {
        self.meta = meta;
        self
    }
}

/// Whom a request is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// Exactly one node.
    One(NodeKey),
    /// Every node of a group; each reply is gathered.
    All(String),
    /// Any one healthy node of a group, the least busy first.
    Any(String),
}

impl Target {
    /// The group the target lies in.
    pub fn group(&self) -> &str {
        match self {
            Target::One(key) => key.group(),
            Target::All(group) | Target::Any(group) => group,
        }
    }

    /// A validated `All` target.
    pub fn all(group: impl Into<String>) -> Result<Self> {
        let group = group.into();
        validate_name("group", &group)?;
        Ok(Target::All(group))
    }

    /// A validated `Any` target.
    pub fn any(group: impl Into<String>) -> Result<Self> {
        let group = group.into();
        validate_name("group", &group)?;
        Ok(Target::Any(group))
    }
}

impl Target {
    /// Whether this target reaches the node `own`: `One` its own key, `All`
    /// and `Any` its own group.
    ///
    /// A node refuses a request whose target it is not reached by, since the
    /// mediator (or whoever handed it over) delivered it to the wrong node.
    ///
    /// ```
    /// use mediator_core::{NodeKey, Target};
    /// let me = NodeKey::named("users", "api").unwrap();
    /// assert!("users/*".parse::<Target>().unwrap().addresses(&me));
    /// assert!(!"users/db".parse::<Target>().unwrap().addresses(&me));
    /// ```
    pub fn addresses(&self, own: &NodeKey) -> bool {
        match self {
            Target::One(key) => key == own,
            Target::All(group) | Target::Any(group) => group == own.group(),
        }
    }
}

impl FromStr for Target {
    type Err = Error;

    /// Parses the [`Display`](fmt::Display) form: `g/n`, `g/` (the group's
    /// unnamed node), `g/*` (all) or `g/?` (any). A bare `g` is refused,
    /// since it could mean the unnamed node or the whole group.
    ///
    /// ```
    /// use mediator_core::{NodeKey, Target};
    /// assert_eq!("cache/*".parse::<Target>().unwrap(), Target::all("cache").unwrap());
    /// assert_eq!("g/".parse::<Target>().unwrap(), Target::One(NodeKey::unnamed("g").unwrap()));
    /// assert!("g/a b".parse::<Target>().is_err());
    /// assert!("g".parse::<Target>().is_err());
    /// ```
    fn from_str(s: &str) -> Result<Self> {
        match split_at_slash(s) {
            Some((group, "*")) => Target::all(group),
            Some((group, "?")) => Target::any(group),
            Some(_) => Ok(Target::One(s.parse()?)),
            None => Err(Error::invalid(
                "target",
                "must be group/name, group/, group/* or group/?",
            )),
        }
    }
}

impl fmt::Display for Target {
    /// `group/name` for one node, `group/*` for all, `group/?` for any.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::One(key) => key.fmt(f),
            Target::All(group) => write!(f, "{group}/*"),
            Target::Any(group) => write!(f, "{group}/?"),
        }
    }
}

/// One request on its way through the mediator. The body is opaque.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// The verified sender, or `None` when the caller has no node identity.
    pub from: Option<NodeKey>,
    /// Whom it is for.
    pub target: Target,
    /// The HTTP method the caller used.
    pub method: Method,
    /// The path and query to deliver at the node, starting with `/`.
    pub path_and_query: String,
    /// Headers to pass on (already stripped of credentials and hop-by-hop headers).
    pub headers: HeaderMap,
    /// The payload, never parsed by the mediator.
    pub body: Bytes,
}

impl Envelope {
    /// A POST envelope with no headers.
    pub fn new(target: Target, path_and_query: impl Into<String>, body: impl Into<Bytes>) -> Self {
        Envelope {
            from: None,
            target,
            method: Method::POST,
            path_and_query: path_and_query.into(),
            headers: HeaderMap::new(),
            body: body.into(),
        }
    }

    /// Sets the sender.
    pub fn from(mut self, from: NodeKey) -> Self {
        self.from = Some(from);
        self
    }

    /// The path without its query, as the AAD of sealed payloads binds it.
    pub fn path(&self) -> &str {
        self.path_and_query
            .split('?')
            .next()
            .unwrap_or(&self.path_and_query)
    }
}

/// A node's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The node's status.
    pub status: StatusCode,
    /// The node's headers (hop-by-hop headers removed by the transport).
    pub headers: HeaderMap,
    /// The node's body.
    pub body: Bytes,
}

impl Reply {
    /// A reply with no headers.
    pub fn new(status: StatusCode, body: impl Into<Bytes>) -> Self {
        Reply {
            status,
            headers: HeaderMap::new(),
            body: body.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated_with_the_field_named() {
        let long = "a".repeat(51);
        for (group, name, field) in [
            ("", None, "group"),
            ("a b", None, "group"),
            (long.as_str(), None, "group"),
            ("ok", Some("x/y"), "name"),
            ("ok", Some(""), "name"),
            ("ok", Some("é"), "name"),
        ] {
            match NodeKey::new(group, name) {
                Err(Error::Invalid { field: f, .. }) => assert_eq!(f, field, "{group:?} {name:?}"),
                other => panic!("{group:?}/{name:?} gave {other:?}"),
            }
        }
        assert!(NodeKey::new("a".repeat(50), Some("Z_-9")).is_ok());
    }

    #[test]
    fn key_round_trips_through_text() {
        for text in ["g/n", "g/", "A-b_c/x-1"] {
            let key: NodeKey = text.parse().unwrap();
            assert_eq!(key.to_string(), text);
        }
        let json = serde_json::to_string(&NodeKey::named("g", "n").unwrap()).unwrap();
        assert_eq!(json, "\"g/n\"");
        assert!(serde_json::from_str::<NodeKey>("\"g/n n\"").is_err());
    }

    #[test]
    fn endpoints_validate_and_round_trip() {
        assert!(Endpoint::http("http://").is_err());
        assert!(Endpoint::http("127.0.0.1:80").is_err());
        assert!(Endpoint::http("http://a b").is_err());
        assert_eq!(
            Endpoint::http("https://h:1/").unwrap().to_string(),
            "https://h:1"
        );
        assert!("attached:".parse::<Endpoint>().is_err());
        for bad in [
            "http://h:99999",
            "http://%%%",
            "http://[::1",
            "HTTP:/x",
            "Chan:x",
            "chan:",
            "chan:a b",
        ] {
            assert!(bad.parse::<Endpoint>().is_err(), "{bad} was accepted");
        }
        assert_eq!(
            "https://h:443/x/".parse::<Endpoint>().unwrap().scheme(),
            "https"
        );
        for bad in ["http://u:p@h:1", "http://h/?a=1", "http://h/#x"] {
            assert!(
                matches!(
                    Endpoint::http(bad),
                    Err(Error::Invalid { field: "url", .. })
                ),
                "{bad} was accepted"
            );
        }
        assert!(Endpoint::http("http://h:1/base/path").is_ok());
    }

    #[test]
    fn targets_parse_and_address() {
        let me: NodeKey = "users/api".parse().unwrap();
        for (text, reaches) in [
            ("users/api", true),
            ("users/*", true),
            ("users/?", true),
            ("users/other", false),
            ("users/", false),
            ("other/*", false),
            ("other/?", false),
            ("other/api", false),
        ] {
            let target: Target = text.parse().expect(text);
            assert_eq!(target.to_string(), text);
            assert_eq!(target.addresses(&me), reaches, "{text}");
        }
        let unnamed: NodeKey = "g/".parse().unwrap();
        assert!("g/".parse::<Target>().unwrap().addresses(&unnamed));
        assert!(!"g/n".parse::<Target>().unwrap().addresses(&unnamed));
        for bad in ["users", "/x", "a b/*", "g/?x", "g/a/b", ""] {
            assert!(
                matches!(bad.parse::<Target>(), Err(Error::Invalid { .. })),
                "{bad:?} was accepted"
            );
        }
    }

    #[test]
    fn envelope_path_drops_query() {
        let e = Envelope::new(Target::all("g").unwrap(), "/a/b?x=1", "");
        assert_eq!(e.path(), "/a/b");
    }
}
