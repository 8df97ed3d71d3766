-- Version 1: the registrations table, shared in shape with the MySQL store.
--
-- `node_name` is '' for a group's unnamed node: names are never empty, and a
-- UNIQUE constraint would let any number of NULLs through.
-- AUTOINCREMENT keeps ids of removed nodes from being handed out again, so a
-- stale id can never address a newer registration.
CREATE TABLE nodes (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    group_name     TEXT    NOT NULL,
    node_name      TEXT    NOT NULL,
    endpoint       TEXT    NOT NULL,
    meta           TEXT    NOT NULL,
    created_ms     INTEGER NOT NULL,
    updated_ms     INTEGER NULL,
    lease_until_ms INTEGER NOT NULL,
    UNIQUE (group_name, node_name)
);

-- Eviction scans by lease end.
CREATE INDEX nodes_lease_until_ms ON nodes (lease_until_ms);
