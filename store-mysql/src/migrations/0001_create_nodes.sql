-- Version 1: the registrations table, shared in shape with the SQLite store.
--
-- `node_name` is '' for a group's unnamed node: names are never empty, and a
-- UNIQUE key would let any number of NULLs through.
-- Names compare byte for byte (utf8mb4_bin), so `A` and `a` are two nodes,
-- as everywhere else in the mediator; the default collations would fold case.
-- InnoDB keeps its AUTO_INCREMENT counter across restarts (MariaDB 10.2.4+,
-- MySQL 8), so the id of a removed node is never handed out again.
-- A plain CREATE TABLE: an unrelated `nodes` table already in the database
-- makes opening fail loudly instead of being adopted.
CREATE TABLE nodes (
    id             BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    group_name     VARCHAR(50)     CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    node_name      VARCHAR(50)     CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    endpoint       VARCHAR(2100)   CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    meta           TEXT            CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    created_ms     BIGINT          NOT NULL,
    updated_ms     BIGINT          NULL,
    lease_until_ms BIGINT          NOT NULL,
    UNIQUE KEY nodes_group_name_node_name (group_name, node_name),
    -- Eviction scans by lease end.
    KEY nodes_lease_until_ms (lease_until_ms)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
