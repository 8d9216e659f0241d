-- keyport schema, version 8: the daemons on this database and what master keys they hold.
-- Append-only, portable SQL as in 0001 (migrations/postgres/0008 is the same table).

-- One row per running daemon, rewritten by its heartbeat; removed at a clean shutdown. A
-- master-key rotation re-seals only when every live one holds the new key.
CREATE TABLE nodes (
    id          TEXT    PRIMARY KEY,  -- random, per start
    host        TEXT    NOT NULL,
    data_dir    TEXT    NOT NULL,     -- where its master key is (on its host)
    version     TEXT    NOT NULL,
    key_id      TEXT    NOT NULL,     -- the master key it seals with
    next_key_id TEXT,                 -- the key staged for the next rotation, if any
    started_at  INTEGER NOT NULL,
    seen_at     INTEGER NOT NULL
);
