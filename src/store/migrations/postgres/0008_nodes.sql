-- keyport schema, version 8, on PostgreSQL: the replicas on this database and what master keys
-- they hold (as migrations/sqlite/0008).

CREATE TABLE nodes (
    id          text        PRIMARY KEY,
    host        text        NOT NULL,
    data_dir    text        NOT NULL,
    version     text        NOT NULL,
    key_id      text        NOT NULL,
    next_key_id text,
    started_at  timestamptz NOT NULL,
    seen_at     timestamptz NOT NULL
);
