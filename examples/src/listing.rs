//! `mediator nodes`: the registrations a running mediator lists, in one set
//! of field names, with the lease left computed from its expiry and now.
//!
//! The admin API answers each row with the original's names (`cluster`,
//! `node`, `domain`, `port`) beside ours; the command shows ours only.

use mediator_core::Timestamp;
use serde::Serialize;
use serde_json::Value;

/// One registered node, as `nodes --json` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Listed {
    /// The registration id.
    pub id: u64,
    /// The node's group.
    pub group: String,
    /// The node's name; `None` for the group's unnamed node.
    pub name: Option<String>,
    /// `group/name` (`group/` for the unnamed node).
    pub node: String,
    /// Where the mediator reaches it.
    pub url: String,
    /// When its lease runs out (RFC 3339, UTC).
    pub lease_until: String,
    /// Whole seconds left on its lease now (0 once it has run out).
    pub lease_left_s: u64,
    /// When it first registered (RFC 3339, UTC).
    pub created: String,
    /// When it last registered or renewed, if ever after `created`.
    pub updated: Option<String>,
}

impl Listed {
    /// Reads one row of `/admin/clusters`, computing the lease left at `now`.
    ///
    /// ```
    /// use mediator_core::Timestamp;
    /// use mediator_examples::listing::Listed;
    /// let row = serde_json::json!({
    ///     "id": 7, "group": "app", "name": "echo", "url": "http://10.0.0.1:9000",
    ///     "lease_until": "2024-01-01T00:01:00.000Z", "created": "2024-01-01T00:00:00.000Z",
    ///     "updated": null, "cluster": "app", "node": "echo", "ttl": 60,
    /// });
    /// let now = Timestamp::from_millis(1_704_067_200_000 + 45_000); // 00:00:45
    /// let listed = Listed::from_row(&row, now).unwrap();
    /// assert_eq!((listed.node.as_str(), listed.lease_left_s), ("app/echo", 15));
    /// ```
    pub fn from_row(row: &Value, now: Timestamp) -> Result<Listed, String> {
        let text = |field: &str| {
            row.get(field)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| format!("a row without {field:?}: {row}"))
        };
        let id = row
            .get("id")
            .and_then(Value::as_u64)
            .ok_or_else(|| format!("a row without an id: {row}"))?;
        let group = text("group")?;
        let name = row.get("name").and_then(Value::as_str).map(str::to_owned);
        let lease_until = text("lease_until")?;
        let until = Timestamp::from_rfc3339(&lease_until)
            .ok_or_else(|| format!("lease_until {lease_until:?} is not an RFC 3339 time"))?;
        Ok(Listed {
            id,
            node: format!("{group}/{}", name.as_deref().unwrap_or("")),
            group,
            name,
            url: text("url")?,
            lease_left_s: now.until(until).as_secs(),
            lease_until,
            created: text("created")?,
            updated: row
                .get("updated")
                .and_then(Value::as_str)
                .map(str::to_owned),
        })
    }
}

/// A lease left as a person reads it: `59s`, `12m 5s`, `1h 5m`, `expired`.
///
/// ```
/// use mediator_examples::listing::human_seconds;
/// assert_eq!(human_seconds(0), "expired");
/// assert_eq!(human_seconds(59), "59s");
/// assert_eq!(human_seconds(725), "12m 5s");
/// assert_eq!(human_seconds(3_900), "1h 5m");
/// ```
pub fn human_seconds(secs: u64) -> String {
    match secs {
        0 => "expired".to_owned(),
        1..=59 => format!("{secs}s"),
        60..=3_599 => format!("{}m {}s", secs / 60, secs % 60),
        _ => format!("{}h {}m", secs / 3_600, secs % 3_600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_expired_lease_has_none_left_and_rows_without_fields_are_refused() {
        let row = serde_json::json!({
            "id": 1, "group": "g", "name": null, "url": "attached:x",
            "lease_until": "2020-01-01T00:00:00.000Z", "created": "2020-01-01T00:00:00.000Z",
        });
        let listed = Listed::from_row(&row, Timestamp::now()).unwrap();
        assert_eq!((listed.node.as_str(), listed.lease_left_s), ("g/", 0));
        assert!(Listed::from_row(&serde_json::json!({"id": 1}), Timestamp::now()).is_err());
    }
}
