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
///    `0.0.0.0` or `::` counts as listening on every loopback and
///    unspecified address at its port;
/// 3. when the allow list is not empty, only addresses in it are accepted.
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
/// mediator hands its policy to each deliverer
/// ([`Deliver::use_endpoint_policy`](crate::Deliver::use_endpoint_policy)),
/// and the HTTP deliverer drops every resolved address the policy refuses,
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
    pub fn check(&self, endpoint: &Endpoint) -> Result<()> {
        let Some(url) = endpoint.url() else {
            return Ok(());
        };
        let parsed = url::Url::parse(url).map_err(|e| Error::invalid("url", e.to_string()))?;
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
        if let Some(net) = self.deny.iter().find(|net| net.contains(ip)) {
            return Some(format!(
                "points into a network the mediator does not call ({net})"
            ));
        }
        if self.is_own(SocketAddr::new(ip, addr.port())) {
            return Some("points at the mediator itself".to_owned());
        }
        if !self.allow.is_empty() && !self.allow.iter().any(|net| net.contains(ip)) {
            return Some("points outside the networks the mediator calls".to_owned());
        }
        None
    }

    fn is_own(&self, addr: SocketAddr) -> bool {
        let own = self.own.read().unwrap_or_else(|e| e.into_inner());
        own.iter().any(|listening| {
            if listening.port() != addr.port() {
                return false;
            }
            let ip = listening.ip().to_canonical();
            ip == addr.ip()
                || (ip.is_unspecified() && (addr.ip().is_loopback() || addr.ip().is_unspecified()))
                || (ip.is_loopback() && addr.ip().is_unspecified())
        })
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
