//! Import of the original project's `clusters` table into any registry.

use std::fmt;
use std::time::Duration;

use mediator_core::{Endpoint, Meta, NodeId, NodeKey, Registration, Registry, Timestamp};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row};

use crate::registry::{bounded, driver_opts};
use crate::{MysqlConfig, MysqlError};

/// The longest the source table may take to read, connecting excluded
/// (connecting is bounded by [`MysqlConfig::DEFAULT_CONNECT_TIMEOUT`]).
pub const IMPORT_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// The original's `port` column held the port the original left out of URLs.
const DEFAULT_HTTP_PORT: u32 = 80;

/// What an import did, row by row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// The rows now registered, in the source's id order.
    pub imported: Vec<Imported>,
    /// The rows left out, in the source's id order, each with its reason.
    pub skipped: Vec<Skipped>,
}

/// One imported row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    /// The row's `id` in the source table (also in the node's meta as
    /// `imported_from_id`).
    pub original_id: u64,
    /// The key it is registered under.
    pub key: NodeKey,
    /// The id the target store gave it.
    pub id: NodeId,
    /// Where the mediator will call it.
    pub endpoint: Endpoint,
}

/// One row left out of an import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The row's `id` in the source table.
    pub original_id: u64,
    /// Its `cluster` column.
    pub cluster: String,
    /// Its `node` column.
    pub node: Option<String>,
    /// Why it was left out.
    pub reason: String,
}

impl fmt::Display for ImportReport {
    /// One line per row, then a count, as a command prints it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for row in &self.imported {
            writeln!(
                f,
                "imported id {} as {} -> {} (node id {})",
                row.original_id, row.key, row.endpoint, row.id
            )?;
        }
        for row in &self.skipped {
            // A NULL node is the cluster's unnamed node, as the original had it.
            let node = match &row.node {
                Some(node) => format!("node {node:?}"),
                None => "node NULL".to_owned(),
            };
            writeln!(
                f,
                "skipped id {} (cluster {:?}, {node}): {}",
                row.original_id, row.cluster, row.reason
            )?;
        }
        write!(
            f,
            "{} imported, {} skipped",
            self.imported.len(),
            self.skipped.len()
        )
    }
}

/// Copies every row of the original project's `clusters` table at
/// `source_url` into `into`, with a lease of `ttl` from `now`.
///
/// Each row `(id, cluster, node, domain, port, created, updated)` becomes a
/// registration: `cluster` is the group, `node` the name (`NULL` is the
/// group's unnamed node), and the endpoint is `domain` with `:port` after
/// its host unless the port is 80 (as the original built its URLs, so an
/// `https://` domain with port 80 means the default HTTPS port). The meta
/// holds `imported_from_id` (the original id), `original_created` and, when
/// set, `original_updated` (the DATETIME values as stored, `YYYY-MM-DD
/// hh:mm:ss`, in the original server's time zone).
///
/// A row is skipped, with its reason in the report, when its names break
/// the mediator's rules, its domain does not start with `http://` or
/// `https://` (or already names a port while `port` is not 80), its port
/// is not a number from 1 to 65535, or its key is already registered in
/// `into` (so running an import twice changes nothing and reports every row
/// as already registered). The source is only read.
///
/// The `mediator` command runs it as
/// `mediator import-clusters --from mysql://user@host/db [--table clusters] --store <store url>`.
///
/// # Errors
/// When `table` is not a plain identifier, the source cannot be reached or
/// read in time ([`MysqlConfig::DEFAULT_CONNECT_TIMEOUT`] to connect,
/// [`IMPORT_READ_TIMEOUT`] to read), its columns are not the original's, or
/// `into` fails ([`MysqlError::Target`]; the rows before it stay imported).
///
/// ```no_run
/// use mediator_core::{MemoryRegistry, Timestamp};
/// use mediator_store_mysql::import_original_clusters;
/// use std::time::Duration;
/// # async fn demo() -> Result<(), mediator_store_mysql::MysqlError> {
/// let registry = MemoryRegistry::new();
/// let report = import_original_clusters(
///     "mysql://legacy@10.0.0.9/mediator",
///     "clusters",
///     &registry,
///     Duration::from_secs(3600),
///     Timestamp::now(),
/// )
/// .await?;
/// println!("{report}");
/// # Ok(()) }
/// ```
pub async fn import_original_clusters(
    source_url: &str,
    table: &str,
    into: &dyn Registry,
    ttl: Duration,
    now: Timestamp,
) -> Result<ImportReport, MysqlError> {
    if table.is_empty()
        || table.len() > 64
        || !table
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(MysqlError::TableName(table.to_owned()));
    }
    let (opts, addr) = driver_opts(&MysqlConfig::new(source_url))?;
    let mut conn = bounded(
        &addr,
        "connect",
        MysqlConfig::DEFAULT_CONNECT_TIMEOUT,
        Conn::new(opts),
    )
    .await?;
    let rows: Vec<Row> = bounded(
        &addr,
        "reading the clusters table",
        IMPORT_READ_TIMEOUT,
        async {
            // The dates are read as the text the server stores, so no time zone
            // is guessed and no date type feature of the driver is needed.
            let rows = conn
                .query(format!(
                    "SELECT id, cluster, node, domain, CAST(port AS CHAR), \
                 CAST(created AS CHAR), CAST(updated AS CHAR) FROM `{table}` ORDER BY id"
                ))
                .await?;
            conn.disconnect().await?;
            Ok(rows)
        },
    )
    .await?;

    let mut report = ImportReport::default();
    for row in rows {
        let (original_id, cluster, node, domain, port, created, updated) =
            mysql_async::from_row_opt::<(
                u64,
                String,
                Option<String>,
                String,
                String,
                String,
                Option<String>,
            )>(row)
            .map_err(|e| MysqlError::SourceTable {
                table: table.to_owned(),
                reason: format!("unexpected column types: {e}"),
            })?;
        let mut skip = |reason: String| {
            report.skipped.push(Skipped {
                original_id,
                cluster: cluster.clone(),
                node: node.clone(),
                reason,
            });
        };
        let key = match NodeKey::new(cluster.as_str(), node.as_deref()) {
            Ok(key) => key,
            Err(e) => {
                skip(e.to_string());
                continue;
            }
        };
        let endpoint = match original_endpoint(&domain, &port) {
            Ok(endpoint) => endpoint,
            Err(reason) => {
                skip(reason);
                continue;
            }
        };
        let target = |source| MysqlError::Target {
            original_id,
            source,
        };
        if into.get(&key).await.map_err(target)?.is_some() {
            skip(format!("{key} is already registered in the target store"));
            continue;
        }
        let mut meta = Meta::new();
        meta.insert("imported_from_id".to_owned(), original_id.to_string());
        meta.insert("original_created".to_owned(), created);
        if let Some(updated) = updated {
            meta.insert("original_updated".to_owned(), updated);
        }
        let registration = Registration::new(key.clone(), endpoint.clone(), ttl).with_meta(meta);
        let node = into.upsert(registration, now).await.map_err(target)?;
        report.imported.push(Imported {
            original_id,
            key,
            id: node.id,
            endpoint,
        });
    }
    Ok(report)
}

/// The endpoint the original called for `domain` and `port`, or why there
/// is none.
fn original_endpoint(domain: &str, port: &str) -> Result<Endpoint, String> {
    let (scheme, rest) = domain
        .strip_prefix("http://")
        .map(|rest| ("http://", rest))
        .or_else(|| {
            domain
                .strip_prefix("https://")
                .map(|rest| ("https://", rest))
        })
        .ok_or_else(|| format!("domain {domain:?} does not start with http:// or https://"))?;
    let port_number = match port.parse::<u32>() {
        Ok(n) if port.bytes().all(|b| b.is_ascii_digit()) && (1..=65_535).contains(&n) => n,
        _ => return Err(format!("port {port:?} is not a number from 1 to 65535")),
    };
    let host_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (host, path) = rest.split_at(host_end);
    if host.is_empty() {
        return Err(format!("domain {domain:?} names no host"));
    }
    let url = if port_number == DEFAULT_HTTP_PORT {
        format!("{scheme}{host}{path}")
    } else {
        // The part after an IPv6 literal's closing bracket holds any port.
        if host
            .rsplit(']')
            .next()
            .is_some_and(|tail| tail.contains(':'))
        {
            return Err(format!(
                "domain {domain:?} already names a port, and port is {port_number}"
            ));
        }
        // The port goes after the host even when the domain has a path,
        // where the original's plain concatenation made a broken URL.
        format!("{scheme}{host}:{port_number}{path}")
    };
    Endpoint::http(url).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::original_endpoint;

    #[test]
    fn endpoints_follow_the_original() {
        let ok = |domain, port| original_endpoint(domain, port).map(|e| e.to_string());
        assert_eq!(ok("http://127.0.0.1", "80"), Ok("http://127.0.0.1".into()));
        assert_eq!(ok("http://h", "8080"), Ok("http://h:8080".into()));
        assert_eq!(
            ok("https://h.example", "80"),
            Ok("https://h.example".into())
        );
        assert_eq!(
            ok("https://h.example", "8443"),
            Ok("https://h.example:8443".into())
        );
        assert_eq!(ok("http://h/", "81"), Ok("http://h:81".into()));
        assert_eq!(ok("http://h/base", "81"), Ok("http://h:81/base".into()));
        assert_eq!(ok("http://[::1]", "81"), Ok("http://[::1]:81".into()));
        assert_eq!(ok("http://h", "080"), Ok("http://h".into()));
        for (domain, port) in [
            ("ftp://h", "80"),
            ("h", "80"),
            ("http://", "80"),
            ("http://h", ""),
            ("http://h", "0"),
            ("http://h", "65536"),
            ("http://h", "+81"),
            ("http://h:90", "81"),
            ("http://h h", "80"),
        ] {
            assert!(original_endpoint(domain, port).is_err(), "{domain} {port}");
        }
    }
}
