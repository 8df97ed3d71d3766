-- Version 2: the feed of changes and the mediator instances of a formation.
--
-- The nodes already stored are kept as they are, and are the feed's first
-- changes (see the end), so that a follower reading the feed from 0 reaches
-- the store's state whatever version the file was created at.

-- One row per change to `nodes`, in the order they were made. A 'put' row
-- is read back as the node as it is then (joined on `node_id`), so its key
-- is kept as well: when the node is gone by then the row reads as a
-- removal of that key. A 'removed' row keeps the key the node had.
--
-- AUTOINCREMENT because positions must only grow: without it SQLite hands
-- out max(position) + 1, which after a compaction that emptied the table
-- starts again at 1 and would read as changes a follower already has.
CREATE TABLE changes (
    position   INTEGER PRIMARY KEY AUTOINCREMENT,
    kind       TEXT    NOT NULL CHECK (kind IN ('put', 'removed')),
    node_id    INTEGER NOT NULL,
    group_name TEXT    NOT NULL,
    node_name  TEXT    NOT NULL
);

-- The highest position compacted away: a follower behind it missed changes
-- and reloads. One row, so reads never need to tell "none" from 0.
CREATE TABLE changes_compacted (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    position INTEGER NOT NULL
);
INSERT INTO changes_compacted (id, position) VALUES (1, 0);

-- Every write to `nodes` records its change in the same statement, so in
-- the same transaction: no write path of this crate can forget it, and the
-- changes of every process sharing the file are ordered by SQLite's one
-- writer. An upsert of an existing key is an UPDATE to triggers.
CREATE TRIGGER nodes_feed_insert AFTER INSERT ON nodes
BEGIN
    INSERT INTO changes (kind, node_id, group_name, node_name)
    VALUES ('put', NEW.id, NEW.group_name, NEW.node_name);
END;

CREATE TRIGGER nodes_feed_update AFTER UPDATE ON nodes
BEGIN
    INSERT INTO changes (kind, node_id, group_name, node_name)
    VALUES ('put', NEW.id, NEW.group_name, NEW.node_name);
END;

CREATE TRIGGER nodes_feed_delete AFTER DELETE ON nodes
BEGIN
    INSERT INTO changes (kind, node_id, group_name, node_name)
    VALUES ('removed', OLD.id, OLD.group_name, OLD.node_name);
END;

-- The mediator instances sharing this store. `id` is what a node attached
-- to one records (`endpoint` = 'attached:' || id); `peer` is '' for an
-- instance that takes no forwarded calls. Times are milliseconds since the
-- Unix epoch, as in `nodes`. A formation has a handful of instances, so
-- expiry scans the table without an index.
CREATE TABLE instances (
    id             TEXT    NOT NULL PRIMARY KEY,
    peer           TEXT    NOT NULL,
    started_ms     INTEGER NOT NULL,
    heartbeat_ms   INTEGER NOT NULL,
    lease_until_ms INTEGER NOT NULL
);

-- The nodes a database of version 1 holds, as puts in the order of their
-- ids (written before the triggers could see them).
INSERT INTO changes (kind, node_id, group_name, node_name)
    SELECT 'put', id, group_name, node_name FROM nodes ORDER BY id;
