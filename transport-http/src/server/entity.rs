//! The JSON shapes of registrations: the two request dialects of
//! `/register` and the row the mediator answers with.

use std::collections::BTreeMap;
use std::time::Duration;

use mediator_core::model::{validate_name, MAX_NAME_LEN};
use mediator_core::{Endpoint, Error, Meta, Node, NodeKey, Timestamp};
use serde_json::{json, Map, Value};

/// The original's validation messages, word for word.
const MISSING: &str = "This field is missing.";
const NOT_VALID: &str = "This value is not valid.";
const NAME_PATTERN: &str = r"name should match pattern /^[a-z\d_-]+$/i";
const DOMAIN_SCHEME: &str = "Domain should start from http:// or https://";

/// Which dialect a `/register` body speaks.
pub(crate) enum Dialect {
    /// `{"cluster", "node", "domain", "port", "id"}`: the original's children.
    Original,
    /// `{"group", "name", "url", "ttl", "meta"}`.
    Ours,
}

impl Dialect {
    /// Ours when the body uses any of our field names, else the original's.
    pub(crate) fn of(body: &Map<String, Value>) -> Dialect {
        if body.contains_key("group") || body.contains_key("url") {
            Dialect::Ours
        } else {
            Dialect::Original
        }
    }
}

/// A `/register` body in the original's dialect, checked by the original's
/// rules; on refusal, one message per field, keyed by the original's field
/// names.
pub(crate) fn parse_original(
    body: &Map<String, Value>,
) -> Result<(NodeKey, Endpoint), BTreeMap<&'static str, &'static str>> {
    let mut errors = BTreeMap::new();
    let cluster = match body.get("cluster") {
        None | Some(Value::Null) => {
            errors.insert("cluster", MISSING);
            None
        }
        Some(Value::String(s)) => original_name(s)
            .map_err(|m| errors.insert("cluster", m))
            .ok(),
        Some(_) => {
            errors.insert("cluster", NOT_VALID);
            None
        }
    };
    let node = match body.get("node") {
        None | Some(Value::Null) => Some(None),
        Some(Value::String(s)) => original_name(s)
            .map(Some)
            .map_err(|m| errors.insert("node", m))
            .ok(),
        Some(_) => {
            errors.insert("node", NOT_VALID);
            None
        }
    };
    let domain = match body.get("domain") {
        None | Some(Value::Null) => {
            errors.insert("domain", MISSING);
            None
        }
        Some(Value::String(s)) if !(s.starts_with("http://") || s.starts_with("https://")) => {
            errors.insert("domain", DOMAIN_SCHEME);
            None
        }
        Some(Value::String(s)) if s.len() <= MAX_NAME_LEN => Some(s.as_str()),
        Some(_) => {
            errors.insert("domain", NOT_VALID);
            None
        }
    };
    let port = match body.get("port") {
        None | Some(Value::Null) => Some(80),
        Some(Value::Number(n)) => n.as_u64().and_then(|p| u16::try_from(p).ok()),
        Some(Value::String(s))
            if !s.is_empty() && s.len() <= 8 && s.bytes().all(|b| b.is_ascii_digit()) =>
        {
            s.parse::<u16>().ok()
        }
        Some(_) => None,
    };
    if port.is_none() {
        errors.insert("port", NOT_VALID);
    }
    match body.get("id") {
        None | Some(Value::Null) => {}
        Some(Value::Number(n)) if n.is_u64() => {}
        Some(Value::String(s)) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {}
        Some(_) => {
            errors.insert("id", NOT_VALID);
        }
    }
    let (Some(cluster), Some(node), Some(domain), Some(port)) = (cluster, node, domain, port)
    else {
        return Err(errors);
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    // As the original called its children: the domain, then the port unless 80.
    let url = if port == 80 {
        domain.to_owned()
    } else {
        format!("{domain}:{port}")
    };
    let endpoint = Endpoint::http(url).map_err(|_| BTreeMap::from([("domain", NOT_VALID)]))?;
    let key = NodeKey::new(cluster, node).map_err(|e| {
        let field = match e {
            Error::Invalid { field: "name", .. } => "node",
            _ => "cluster",
        };
        BTreeMap::from([(field, NAME_PATTERN)])
    })?;
    Ok((key, endpoint))
}

/// The original's rule for cluster and node names.
fn original_name(s: &str) -> Result<&str, &'static str> {
    if s.is_empty()
        || !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        Err(NAME_PATTERN)
    } else if s.len() > MAX_NAME_LEN {
        Err(NOT_VALID)
    } else {
        Ok(s)
    }
}

/// A `/register` body in our dialect.
pub(crate) struct OursRegistration {
    pub(crate) key: NodeKey,
    pub(crate) endpoint: Endpoint,
    pub(crate) ttl: Option<Duration>,
    pub(crate) meta: Meta,
}

/// Parses our dialect; every refusal names the field.
pub(crate) fn parse_ours(body: &Map<String, Value>) -> Result<OursRegistration, Error> {
    let key = key_of(body, "group", "name")?;
    let url = match body.get("url") {
        Some(Value::String(s)) => s,
        Some(_) => return Err(Error::invalid("url", "must be a string")),
        None => return Err(Error::invalid("url", "is required")),
    };
    let endpoint = Endpoint::http(url.as_str())?;
    let ttl = ttl_of(body)?;
    let meta = match body.get("meta") {
        None | Some(Value::Null) => Meta::new(),
        Some(Value::Object(map)) => map
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                _ => Err(Error::invalid(
                    "meta",
                    format!("value of {k:?} must be a string"),
                )),
            })
            .collect::<Result<Meta, Error>>()?,
        Some(_) => return Err(Error::invalid("meta", "must be an object of strings")),
    };
    Ok(OursRegistration {
        key,
        endpoint,
        ttl,
        meta,
    })
}

/// A node key from `group_field` and the optional `name_field` (string or
/// null; missing or null is the unnamed node).
pub(crate) fn key_of(
    body: &Map<String, Value>,
    group_field: &'static str,
    name_field: &'static str,
) -> Result<NodeKey, Error> {
    let group = match body.get(group_field) {
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err(Error::invalid("group", "must be a string")),
        None => return Err(Error::invalid("group", "is required")),
    };
    let name = match body.get(name_field) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(_) => return Err(Error::invalid("name", "must be a string or null")),
    };
    validate_name("group", group)?;
    NodeKey::new(group, name)
}

/// The optional `ttl` field: whole seconds.
pub(crate) fn ttl_of(body: &Map<String, Value>) -> Result<Option<Duration>, Error> {
    match body.get("ttl") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .map(|s| Some(Duration::from_secs(s)))
            .ok_or_else(|| Error::invalid("ttl", "must be a whole number of seconds")),
        Some(_) => Err(Error::invalid("ttl", "must be a whole number of seconds")),
    }
}

/// A registration as the mediator shows it: the original's row fields
/// (`id`, `cluster`, `node`, `domain`, `port`, `created`, `updated`) and
/// ours (`group`, `name`, `url`, `lease_until`, `ttl`).
///
/// `ttl` is the lease length granted at the last registration when known,
/// else the lease as it stands from the last change.
pub(crate) fn row(node: &Node, ttl: Option<Duration>) -> Value {
    // Only a URL has the original's domain and port; other endpoints
    // (attached, a team's own) show them as null.
    let (domain, port) = match node.endpoint.url().and_then(split_url) {
        Some((domain, port)) => (Value::String(domain), Value::from(port)),
        None => (Value::Null, Value::Null),
    };
    let ttl = ttl.map_or_else(
        || {
            let since = node.updated.unwrap_or(node.created);
            since.until(node.lease_until).as_secs()
        },
        |t| t.as_secs(),
    );
    json!({
        "id": node.id.0,
        "cluster": node.key.group(),
        "node": node.key.name(),
        "domain": domain,
        "port": port,
        "created": node.created.to_rfc3339(),
        "updated": node.updated.map(Timestamp::to_rfc3339),
        "group": node.key.group(),
        "name": node.key.name(),
        "url": node.endpoint.to_string(),
        "lease_until": node.lease_until.to_rfc3339(),
        "ttl": ttl,
    })
}

/// `scheme://host` and the port (explicit, else the scheme's default) of an
/// endpoint URL.
fn split_url(url: &str) -> Option<(String, u16)> {
    let parsed = url::Url::parse(url).ok()?;
    let host = parsed.host_str()?;
    let port = parsed.port_or_known_default()?;
    Some((format!("{}://{host}", parsed.scheme()), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!("test bodies are objects"),
        }
    }

    #[test]
    fn urls_split_into_domain_and_port() {
        assert_eq!(split_url("http://h"), Some(("http://h".into(), 80)));
        assert_eq!(split_url("https://h"), Some(("https://h".into(), 443)));
        assert_eq!(split_url("http://h:9/p"), Some(("http://h".into(), 9)));
        assert_eq!(
            split_url("http://[::1]:7"),
            Some(("http://[::1]".into(), 7))
        );
        assert_eq!(split_url("http://[::1]"), Some(("http://[::1]".into(), 80)));
    }

    #[test]
    fn original_rules_and_messages() {
        let errors = parse_original(&object(json!({"node": "a b", "port": "12x"}))).err();
        let expected = BTreeMap::from([
            ("cluster", MISSING),
            ("node", NAME_PATTERN),
            ("domain", MISSING),
            ("port", NOT_VALID),
        ]);
        assert_eq!(errors, Some(expected));
        let errors = parse_original(&object(json!({"cluster": "c", "domain": "ftp://x"}))).err();
        assert_eq!(errors, Some(BTreeMap::from([("domain", DOMAIN_SCHEME)])));
        let (key, endpoint) = parse_original(&object(
            json!({"cluster": "c", "node": null, "domain": "http://h", "port": "8080"}),
        ))
        .unwrap();
        assert_eq!(key, NodeKey::unnamed("c").unwrap());
        assert_eq!(endpoint.to_string(), "http://h:8080");
        let (_, endpoint) = parse_original(&object(
            json!({"cluster": "c", "domain": "http://h", "port": 80}),
        ))
        .unwrap();
        assert_eq!(endpoint.to_string(), "http://h");
    }
}
