-- Version 2: the feed of changes that the mediator instances sharing this
-- database follow, and the instances themselves.
--
-- `changes` holds one row per change to `nodes`. A 'put' row names the node
-- by id and is read joined to `nodes`, so it gives the node as it is when
-- read; the key is kept on every row so that a put whose node has gone
-- since can still be given as that node's removal.
-- Positions are not AUTO_INCREMENT: an auto-increment value is handed out
-- before commit, so 11 could commit before 10 and a follower that read 11
-- would skip 10 for ever. A writer takes its positions from `feed.head`
-- under that row's lock, in the same transaction as its write, so positions
-- commit in order (see src/registry.rs).
CREATE TABLE changes (
    position   BIGINT UNSIGNED        NOT NULL PRIMARY KEY,
    kind       ENUM('put', 'removed') NOT NULL,
    node_id    BIGINT UNSIGNED        NOT NULL,
    group_name VARCHAR(50)            CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    node_name  VARCHAR(50)            CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- One row: the newest position handed out (the store's version) and the
-- newest position compacted away (a follower behind it has a gap).
CREATE TABLE feed (
    id        TINYINT UNSIGNED NOT NULL PRIMARY KEY,
    head      BIGINT UNSIGNED  NOT NULL,
    compacted BIGINT UNSIGNED  NOT NULL,
    CONSTRAINT feed_has_one_row CHECK (id = 1)
) ENGINE = InnoDB;

-- Mediator instances and their leases. Ids are ASCII by their rule
-- (mediator_core::formation::check_instance_id) and compare byte for byte.
CREATE TABLE instances (
    id             VARCHAR(64)   CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
    peer           VARCHAR(2100) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    started_ms     BIGINT        NOT NULL,
    heartbeat_ms   BIGINT        NOT NULL,
    lease_until_ms BIGINT        NOT NULL,
    -- Expiry locks only the instances due, not every one.
    KEY instances_lease_until_ms (lease_until_ms)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- An instance that goes takes the nodes attached to it (`attached:<id>`,
-- at most 73 characters): found and locked through this index rather than
-- by locking every row of a scan of the table.
ALTER TABLE nodes ADD KEY nodes_endpoint (endpoint(80));

-- The nodes already registered are the feed's first changes, in id order
-- at positions 1, 2, 3... (positions have no holes: a reader takes a
-- missing one for a change not yet visible), so a follower that reads the
-- feed from 0 reaches the nodes a database of version 1 held.
INSERT INTO changes (position, kind, node_id, group_name, node_name)
    SELECT ROW_NUMBER() OVER (ORDER BY id), 'put', id, group_name, node_name FROM nodes;
INSERT INTO feed (id, head, compacted)
    SELECT 1, COUNT(*), 0 FROM nodes;
