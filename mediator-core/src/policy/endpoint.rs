//! Which networks a node's callback endpoint may point into.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::{Arc, RwLock};

use crate::error::{Error, Result};
use crate::model::Endpoint;

/// A network in CIDR notation: `10.0.0.0/8`, `fe80::/10`, or a single
/// address (`192.0.2.7`, read as `/32` or `/128`).
///
/// ```
/// use mediator_core::policy::IpNetwork;
/// let net: IpNetwork = "10.1.0.0/16".parse()?;
/// assert!(net.contains("10.1.200.3".parse().unwrap()));
/// assert!(!net.contains("10.2.0.1".parse().unwrap()));
/// assert!("10.0.0.0/33".parse::<IpNetwork>().is_err());
/// # Ok::<(), mediator_core::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpNetwork {
    addr: IpAddr,
    prefix: u8,
}

impl IpNetwork {
    /// The network of `addr`'s first `prefix` bits; fails when `prefix` is
    /// longer than the address.
    pub fn new(addr: IpAddr, prefix: u8) -> Result<IpNetwork> {
        let bits = match addr {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        if prefix > bits {
            return Err(Error::invalid(
                "network",
                format!("a prefix of at most {bits} bits"),
            ));
        }
        Ok(IpNetwork { addr, prefix })
    }

    /// Whether `ip` lies in this network. An IPv4-mapped IPv6 address
    /// (`::ffff:10.0.0.1`) is read as the IPv4 address it maps, since that
    /// is where a connection to it goes.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_eq(&net.octets(), &ip.octets(), self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(&net.octets(), &ip.octets(), self.prefix)
            }
            _ => false,
        }
    }
}

fn prefix_eq(a: &[u8], b: &[u8], prefix: u8) -> bool {
    let whole = usize::from(prefix / 8);
    let rest = prefix % 8;
    if a[..whole] != b[..whole] {
        return false;
    }
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    (a[whole] & mask) == (b[whole] & mask)
}

impl FromStr for IpNetwork {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| Error::invalid("network", format!("{s:?} is not an IP network")))?;
        let prefix = match prefix {
            Some(p) => p
                .parse()
                .map_err(|_| Error::invalid("network", format!("{s:?} has no valid prefix")))?,
            None if addr.is_ipv4() => 32,
            None => 128,
        };
        IpNetwork::new(addr, prefix)
    }
}

impl fmt::Display for IpNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// IPv4 link-local, where cloud metadata services answer (169.254.169.254).
const LINK_LOCAL_V4: IpNetwork = IpNetwork {
    addr: IpAddr::V4(Ipv4Addr::new(169, 254, 0, 0)),
    prefix: 16,
};
/// IPv6 link-local.
const LINK_LOCAL_V6: IpNetwork = IpNetwork {
    addr: IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0)),
    prefix: 10,
};

/// Which addresses a node may register as its callback: the mediator calls
/// back whatever a node registers, so an endpoint is a request the mediator
/// makes on a caller's behalf, and must not reach what only the mediator's
/// host should reach.
///
/// Rules, in order:
/// 1. an address in a denied network is refused;
/// 2. the mediator's own listening addresses are refused (a node pointing
///    at the mediator would make it call itself in a loop); a listener on
///    `0.0.0.0` or `::` counts as listening on every address of this host
///    at its port: loopback, unspecified, and each interface's address;
/// 3. when the allow list is not empty, only addresses in it are accepted.
///
/// An IPv6 address that carries an IPv4 address a connection to it ends
/// up at (IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible `::a.b.c.d`, NAT64
/// `64:ff9b::a.b.c.d`, 6to4 `2002:aabb:ccdd::`) is judged as both: it is
/// refused when either is, so a denied network is denied in every
/// spelling, and an allow list must hold both.
///
/// The default ([`EndpointPolicy::default`]) denies link-local networks
/// (169.254.0.0/16, where cloud metadata services answer, and fe80::/10)
/// and allows everything else, loopback and private networks included, as
/// nodes on the mediator's host and network are the common case; an
/// operator denies them with [`deny`](Self::deny).
///
/// When a node registers, only IP literals are judged: a host name is
/// accepted as written, since what it resolves to may change after the
/// registration. Host names are judged where the mediator connects: the
/// policy travels with every delivery
/// ([`RequestContext::endpoints`](crate::RequestContext::endpoints)), so
/// a deliverer wrapped in others still sees it, and the HTTP deliverer drops every resolved address the policy refuses,
/// failing the delivery (nothing sent, 502) when none is left; so
/// `http://metadata.internal/` resolving to 169.254.169.254 is never
/// called. To refuse names at registration already, allow IP literals only
/// with [`ip_literals_only`](Self::ip_literals_only).
///
/// ```
/// use mediator_core::policy::EndpointPolicy;
/// use mediator_core::Endpoint;
/// let policy = EndpointPolicy::default().deny("10.0.0.0/8".parse()?);
/// assert!(policy.check(&Endpoint::http("http://127.0.0.1:9000")?).is_ok());
/// assert!(policy.check(&Endpoint::http("http://169.254.169.254")?).is_err());
/// assert!(policy.check(&Endpoint::http("http://10.1.2.3:80")?).is_err());
/// assert!(policy.check(&Endpoint::http("http://nodes.example:80")?).is_ok());
/// # Ok::<(), mediator_core::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct EndpointPolicy {
    allow: Vec<IpNetwork>,
    deny: Vec<IpNetwork>,
    ip_literals_only: bool,
    // Shared by every clone: a listener learns its address only once bound,
    // after the mediator (and its policy) was built.
    own: Arc<RwLock<Vec<SocketAddr>>>,
}

impl Default for EndpointPolicy {
    fn default() -> Self {
        EndpointPolicy {
            allow: Vec::new(),
            deny: vec![LINK_LOCAL_V4, LINK_LOCAL_V6],
            ip_literals_only: false,
            own: Arc::default(),
        }
    }
}

impl EndpointPolicy {
    /// A policy that denies nothing but the mediator's own addresses (not
    /// even link-local networks); for closed networks only.
    pub fn permissive() -> Self {
        EndpointPolicy {
            deny: Vec::new(),
            ..EndpointPolicy::default()
        }
    }

    /// Also refuses addresses in `network`.
    pub fn deny(mut self, network: IpNetwork) -> Self {
        self.deny.push(network);
        self
    }

    /// Accepts only addresses in the allowed networks (this one and any
    /// other given), unless denied.
    pub fn allow(mut self, network: IpNetwork) -> Self {
        self.allow.push(network);
        self
    }

    /// Refuses endpoints whose host is a name rather than an IP literal,
    /// so that every endpoint is judged by the rules above.
    pub fn ip_literals_only(mut self, only: bool) -> Self {
        self.ip_literals_only = only;
        self
    }

    /// Records an address the mediator listens on, which no endpoint may
    /// point at. Listeners call it once bound.
    pub fn add_own_address(&self, addr: SocketAddr) {
        // A poisoned lock only means another thread panicked while adding an
        // address; the list itself is still whole.
        let mut own = self.own.write().unwrap_or_else(|e| e.into_inner());
        if !own.contains(&addr) {
            own.push(addr);
        }
    }

    /// Whether `endpoint` may be registered; refusals are
    /// [`Error::Invalid`] on the `url` field. Endpoints that are not URLs
    /// (an attached connection, a team's own scheme) are not judged here.
    ///
    /// Before the rules above, a URL must be one the HTTP deliverer can
    /// send a request to as written, and mean the same host and port to it
    /// as to the URL standard by which the rules judge it: a backslash, a
    /// percent-encoded or non-ASCII host, a raw `<` or `` ` ``, or an IPv4
    /// address in another spelling than `a.b.c.d` is refused here, naming
    /// the problem, rather than accepted and failing every delivery.
    ///
    /// ```
    /// use mediator_core::policy::EndpointPolicy;
    /// use mediator_core::Endpoint;
    /// let policy = EndpointPolicy::default();
    /// let refused = |url: &str| policy.check(&Endpoint::http(url).unwrap()).unwrap_err().to_string();
    /// assert!(refused("http://127.0.0.1:9000\\base").contains("backslash"));
    /// assert!(refused("http://%6cocalhost:9000").contains("percent-encoded"));
    /// assert!(refused("http://10.0.0.5:9000/a<b").contains("'<'"));
    /// assert!(refused("http://0x7f.1:9000").contains("127.0.0.1"));
    /// assert!(policy.check(&Endpoint::http("http://Nodes.example:9000/a\"b")?).is_ok());
    /// # Ok::<(), mediator_core::Error>(())
    /// ```
    pub fn check(&self, endpoint: &Endpoint) -> Result<()> {
        let Some(url) = endpoint.url() else {
            return Ok(());
        };
        let parsed = url::Url::parse(url).map_err(|e| Error::invalid("url", e.to_string()))?;
        deliverable(url, &parsed).map_err(|why| Error::invalid("url", why))?;
        let ip = match parsed.host() {
            Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip),
            Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip),
            Some(url::Host::Domain(_)) if self.ip_literals_only => {
                return Err(Error::invalid("url", "must name an IP address"));
            }
            _ => return Ok(()),
        };
        let port = parsed.port_or_known_default().unwrap_or(80);
        self.check_addr(SocketAddr::new(ip.to_canonical(), port))
    }

    /// Whether the mediator may call a node at `addr`, by the rules above.
    pub fn check_addr(&self, addr: SocketAddr) -> Result<()> {
        match self.refusal(addr) {
            Some(rule) => Err(Error::invalid("url", rule)),
            None => Ok(()),
        }
    }

    /// Why the mediator may not call a node at `addr`, naming the rule
    /// (and the network) that refuses it; `None` when it may.
    ///
    /// ```
    /// use mediator_core::policy::EndpointPolicy;
    /// let policy = EndpointPolicy::default();
    /// let why = policy.refusal("169.254.169.254:80".parse().unwrap());
    /// assert_eq!(
    ///     why.as_deref(),
    ///     Some("points into a network the mediator does not call (169.254.0.0/16)")
    /// );
    /// assert_eq!(policy.refusal("127.0.0.1:9000".parse().unwrap()), None);
    /// ```
    pub fn refusal(&self, addr: SocketAddr) -> Option<String> {
        let ip = addr.ip().to_canonical();
        if let Some(why) = self.refusal_of(ip, addr.port()) {
            return Some(why);
        }
        let IpAddr::V6(v6) = ip else {
            return None;
        };
        let v4 = embedded_ipv4(v6)?;
        self.refusal_of(IpAddr::V4(v4), addr.port())
            .map(|why| format!("{why}, through the IPv4 address {v4} that {v6} carries"))
    }

    fn refusal_of(&self, ip: IpAddr, port: u16) -> Option<String> {
        if let Some(net) = self.deny.iter().find(|net| net.contains(ip)) {
            return Some(format!(
                "points into a network the mediator does not call ({net})"
            ));
        }
        if self.is_own(ip, port) {
            return Some("points at the mediator itself".to_owned());
        }
        if !self.allow.is_empty() && !self.allow.iter().any(|net| net.contains(ip)) {
            return Some("points outside the networks the mediator calls".to_owned());
        }
        None
    }

    fn is_own(&self, ip: IpAddr, port: u16) -> bool {
        let own = self.own.read().unwrap_or_else(|e| e.into_inner());
        let mut on_every_address = false;
        for listening in own.iter().filter(|l| l.port() == port) {
            let listening_ip = listening.ip().to_canonical();
            if listening_ip == ip || (listening_ip.is_loopback() && ip.is_unspecified()) {
                return true;
            }
            on_every_address |= listening_ip.is_unspecified();
        }
        drop(own);
        // Asked only at one of the mediator's own ports, so nodes elsewhere
        // (the common case) never pay for the system call below.
        on_every_address && is_this_hosts(ip)
    }
}

/// Whether the HTTP deliverer can call `url` as written, and would call
/// the host and port the URL standard reads in it (`parsed`), which is
/// what the rules judge.
///
/// The deliverer appends a request's path to the endpoint and reads the
/// result with `http`'s `Uri` parser, which takes a URL only as RFC 3986
/// writes it; the URL standard is more forgiving (it reads `\` as `/`,
/// decodes `%6c` in a host, encodes `<` in a path, reads `0x7f.1` as
/// `127.0.0.1`), so a URL it accepts may still fail every delivery, or
/// reach another host than the one judged. Returns why not.
fn deliverable(url: &str, parsed: &url::Url) -> std::result::Result<(), String> {
    if let Some(at) = url.find('\\') {
        return Err(format!(
            "has a backslash at character {}, which the mediator cannot send; write `/`",
            at + 1
        ));
    }
    // As the deliverer builds it: the endpoint, then the request's path.
    let uri: http::Uri = format!("{url}/")
        .parse()
        .map_err(|e: http::uri::InvalidUri| unsendable(url, parsed, &e))?;
    let host = uri.host().unwrap_or_default();
    let same_host = match parsed.host() {
        Some(url::Host::Ipv4(ip)) => host.parse::<Ipv4Addr>() == Ok(ip),
        Some(url::Host::Ipv6(ip)) => {
            host.strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .and_then(|h| h.parse::<Ipv6Addr>().ok())
                == Some(ip)
        }
        Some(url::Host::Domain(name)) => host.eq_ignore_ascii_case(name),
        None => false,
    };
    if !same_host {
        return Err(format!(
            "host {host:?} is not written as the mediator would call it; write {}",
            parsed.host_str().unwrap_or_default()
        ));
    }
    let default = if uri.scheme() == Some(&http::uri::Scheme::HTTPS) {
        443
    } else {
        80
    };
    if Some(uri.port_u16().unwrap_or(default)) != parsed.port_or_known_default() {
        return Err(format!(
            "port {:?} is not written as the mediator would call it",
            uri.port()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_default()
        ));
    }
    Ok(())
}

/// Why `url` cannot be read as a request URI (`e`), naming what is in the
/// way where it can be found.
fn unsendable(url: &str, parsed: &url::Url, e: &http::uri::InvalidUri) -> String {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    let authority_end = url[after_scheme..]
        .find('/')
        .map_or(url.len(), |i| after_scheme + i);
    let authority = &url[after_scheme..authority_end];
    let host = parsed.host_str().unwrap_or_default();
    if authority.contains('%') {
        return format!("has a percent-encoded host, which the mediator cannot send; write {host}");
    }
    // The characters `http`'s parser takes: RFC 3986's in a host, and in a
    // path also `"`, `{`, `}` and UTF-8, as clients send them unencoded.
    let in_authority = |c: char| c.is_ascii_alphanumeric() || "-._~!$&'()*+,;=:[]@".contains(c);
    let in_path = |c: char| !c.is_ascii() || (c.is_ascii_graphic() && !"#<>?`".contains(c));
    let offending = url
        .char_indices()
        .skip_while(|&(i, _)| i < after_scheme)
        .find(|&(i, c)| {
            if i < authority_end {
                !in_authority(c)
            } else {
                !in_path(c)
            }
        });
    match offending {
        Some((i, c)) if i < authority_end => format!(
            "has {c:?} in its host, which the mediator cannot send; write {host}"
        ),
        Some((i, c)) => format!(
            "has {c:?} at character {}, which the mediator cannot send as written; percent-encode it",
            url[..i].chars().count() + 1
        ),
        None => format!("cannot be sent as an HTTP request target: {e}"),
    }
}

/// Whether `ip` is one of this host's addresses. Loopback and unspecified
/// addresses are; any other is when a socket can be bound to it, which the
/// system allows for its own addresses only. Asked afresh each time, since
/// interfaces come and go while the mediator runs; a bind with port 0 costs
/// one system call and no packet.
fn is_this_hosts(ip: IpAddr) -> bool {
    ip.is_loopback() || ip.is_unspecified() || std::net::UdpSocket::bind((ip, 0)).is_ok()
}

/// The IPv4 address that IPv6 address `ip` carries, where a connection to
/// `ip` ends up at that IPv4 host: IPv4-mapped (`::ffff:a.b.c.d`),
/// IPv4-compatible (`::a.b.c.d`, but not `::` or `::1`), NAT64's
/// well-known prefix (`64:ff9b::/96`, RFC 6052) and 6to4 (`2002::/16`,
/// the IPv4 address in bits 16 to 48, RFC 3056).
fn embedded_ipv4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let [a, b, c, d, e, f, _, _] = ip.segments();
    let [.., o12, o13, o14, o15] = ip.octets();
    let low = Ipv4Addr::new(o12, o13, o14, o15);
    match (a, b, c, d, e, f) {
        (0, 0, 0, 0, 0, 0xffff) => Some(low),
        (0, 0, 0, 0, 0, 0) if !ip.is_unspecified() && !ip.is_loopback() => Some(low),
        (0x64, 0xff9b, 0, 0, 0, 0) => Some(low),
        (0x2002, ..) => {
            let [hi1, hi2] = b.to_be_bytes();
            let [lo1, lo2] = c.to_be_bytes();
            Some(Ipv4Addr::new(hi1, hi2, lo1, lo2))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(url: &str) -> Endpoint {
        Endpoint::http(url).unwrap()
    }

    #[test]
    fn link_local_is_denied_by_default_and_private_allowed() {
        let policy = EndpointPolicy::default();
        for url in [
            "http://169.254.169.254",
            "http://169.254.0.1:8080",
            "http://[fe80::1]:80",
            "http://[::ffff:169.254.169.254]:80",
        ] {
            assert!(policy.check(&endpoint(url)).is_err(), "{url}");
        }
        for url in [
            "http://127.0.0.1:9000",
            "http://10.0.0.5:9000",
            "http://192.168.1.2",
            "http://[::1]:9000",
            "https://nodes.example",
        ] {
            assert!(policy.check(&endpoint(url)).is_ok(), "{url}");
        }
        assert!(EndpointPolicy::permissive()
            .check(&endpoint("http://169.254.169.254"))
            .is_ok());
    }

    #[test]
    fn operators_deny_and_allow_networks() {
        let policy = EndpointPolicy::default()
            .deny("127.0.0.0/8".parse().unwrap())
            .allow("10.0.0.0/8".parse().unwrap())
            .allow("127.0.0.0/8".parse().unwrap());
        assert!(policy.check(&endpoint("http://127.0.0.1:1")).is_err());
        assert!(policy.check(&endpoint("http://10.9.9.9:1")).is_ok());
        assert!(policy.check(&endpoint("http://192.168.0.1:1")).is_err());
        let literal = EndpointPolicy::default().ip_literals_only(true);
        assert!(literal.check(&endpoint("http://nodes.example")).is_err());
        assert!(literal.check(&endpoint("http://10.0.0.1")).is_ok());
    }

    #[test]
    fn the_mediators_own_addresses_are_denied() {
        let policy = EndpointPolicy::default();
        policy.add_own_address("127.0.0.1:8080".parse().unwrap());
        policy.add_own_address("0.0.0.0:8443".parse().unwrap());
        assert!(policy.check(&endpoint("http://127.0.0.1:8080")).is_err());
        assert!(policy.check(&endpoint("http://0.0.0.0:8080")).is_err());
        assert!(policy.check(&endpoint("http://127.0.0.1:8081")).is_ok());
        assert!(policy.check(&endpoint("https://127.0.0.1:8443")).is_err());
        assert!(policy.check(&endpoint("http://[::1]:8443")).is_err());
        assert!(policy.check(&endpoint("http://10.0.0.1:8443")).is_ok());
    }

    /// One of this host's addresses beside loopback: the source address the
    /// system picks for a route out (a UDP connect sends nothing).
    fn this_hosts_address() -> Option<IpAddr> {
        for (bind, out) in [
            ("0.0.0.0:0", "198.51.100.1:9"),
            ("[::]:0", "[2001:db8::1]:9"),
        ] {
            let Ok(socket) = std::net::UdpSocket::bind(bind) else {
                continue;
            };
            if socket.connect(out).is_err() {
                continue;
            }
            match socket.local_addr() {
                Ok(addr) if !addr.ip().is_loopback() && !addr.ip().is_unspecified() => {
                    return Some(addr.ip())
                }
                _ => continue,
            }
        }
        None
    }

    #[test]
    fn a_listener_on_every_address_owns_each_of_the_hosts_addresses_at_its_port() {
        let Some(ip) = this_hosts_address() else {
            eprintln!("skipped: this host has no address beside loopback");
            return;
        };
        for listening in ["0.0.0.0:8443", "[::]:8443"] {
            let policy = EndpointPolicy::default();
            policy.add_own_address(listening.parse().unwrap());
            let at = |port| policy.refusal(SocketAddr::new(ip, port));
            assert_eq!(
                at(8443).as_deref(),
                Some("points at the mediator itself"),
                "{ip} under {listening}"
            );
            assert_eq!(at(8444), None, "{ip} under {listening}");
        }
        // A listener on one address owns that address only.
        let policy = EndpointPolicy::default();
        policy.add_own_address("127.0.0.1:8443".parse().unwrap());
        assert_eq!(policy.refusal(SocketAddr::new(ip, 8443)), None);
        // An address of another host at the mediator's port is not its own.
        let policy = EndpointPolicy::default();
        policy.add_own_address("0.0.0.0:8443".parse().unwrap());
        assert_eq!(policy.refusal("198.51.100.7:8443".parse().unwrap()), None);
    }

    #[test]
    fn ipv4_carried_in_ipv6_is_judged_in_every_spelling() {
        let policy = EndpointPolicy::default();
        for url in [
            "http://[::ffff:a9fe:a9fe]",
            "http://[::169.254.169.254]:80",
            "http://[64:ff9b::169.254.169.254]",
            "http://[64:ff9b::a9fe:a9fe]:8080",
            "http://[2002:a9fe:a9fe::1]",
            "http://[2002:a9fe:0001:1:2:3:4:5]:9000",
        ] {
            let err = policy.check(&endpoint(url)).unwrap_err().to_string();
            assert!(err.contains("169.254.0.0/16"), "{url}: {err}");
        }
        for url in [
            "http://[64:ff9b::10.0.0.1]:9000",
            "http://[2002:a00:1::1]:9000",
            "http://[::1]:9000",
            "http://[2001:db8::a9fe:a9fe]:9000",
        ] {
            assert!(policy.check(&endpoint(url)).is_ok(), "{url}");
        }
        let denied = EndpointPolicy::default().deny("10.0.0.0/8".parse().unwrap());
        assert!(denied
            .check(&endpoint("http://[2002:a00:1::1]:9000"))
            .is_err());
        // The mediator's own address, carried in IPv6.
        let own = EndpointPolicy::default();
        own.add_own_address("127.0.0.1:8080".parse().unwrap());
        assert!(own.check(&endpoint("http://[::127.0.0.1]:8080")).is_err());
        assert!(own.check(&endpoint("http://[::127.0.0.1]:8081")).is_ok());
        // An allow list holds both spellings or refuses.
        let allow = EndpointPolicy::default().allow("10.0.0.0/8".parse().unwrap());
        assert!(allow
            .check(&endpoint("http://[64:ff9b::10.0.0.1]:9000"))
            .is_err());
        let both = allow.allow("64:ff9b::/96".parse().unwrap());
        assert!(both
            .check(&endpoint("http://[64:ff9b::10.0.0.1]:9000"))
            .is_ok());
        assert!(both
            .check(&endpoint("http://[64:ff9b::8.8.8.8]:9000"))
            .is_err());
        assert_eq!(embedded_ipv4("::".parse().unwrap()), None);
        assert_eq!(embedded_ipv4("::1".parse().unwrap()), None);
    }

    #[test]
    fn urls_the_deliverer_cannot_send_as_written_are_refused_naming_why() {
        let policy = EndpointPolicy::permissive();
        for (url, why) in [
            ("http://127.0.0.1:9000\\base", "backslash at character 22"),
            ("http://h\\x", "backslash"),
            ("http://%6c%6fcalhost:9000", "percent-encoded host"),
            ("http://10.0.0.5:9000/a<b", "'<' at character 23"),
            ("http://10.0.0.5:9000/a`b", "'`'"),
            ("http://10.0.0.5:9000/a>b", "'>'"),
            ("http://a\"b:9000", "'\"' in its host"),
            ("http://a{b:9000", "'{' in its host"),
            ("http://b\u{fc}cher.example", "write xn--bcher-kva.example"),
            ("http://0x7f.1:9000", "write 127.0.0.1"),
            ("http://2130706433:9000", "write 127.0.0.1"),
            ("http://[0:0::1]:9000/x<", "'<'"),
        ] {
            let err = policy.check(&endpoint(url)).unwrap_err().to_string();
            assert!(err.contains(why), "{url}: {err}");
        }
        for url in [
            "http://Nodes.Example:9000/base",
            "http://10.0.0.5:080/a\"b{c}|d~e%20f",
            "https://[0:0::1]:8443/x",
            "HTTP://10.0.0.5",
            "http://10.0.0.5:9000/caf\u{e9}",
        ] {
            assert!(policy.check(&endpoint(url)).is_ok(), "{url}");
        }
    }

    #[test]
    fn networks_parse_and_match_by_prefix() {
        let net: IpNetwork = "fe80::/10".parse().unwrap();
        assert!(net.contains("febf::1".parse().unwrap()));
        assert!(!net.contains("fec0::1".parse().unwrap()));
        assert!("0.0.0.0/0"
            .parse::<IpNetwork>()
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
        assert!("1.2.3.4".parse::<IpNetwork>().unwrap().to_string() == "1.2.3.4/32");
        for bad in ["x/8", "10.0.0.0/x", "::/129"] {
            assert!(bad.parse::<IpNetwork>().is_err(), "{bad}");
        }
    }
}
