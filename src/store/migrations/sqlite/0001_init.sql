-- keyport schema, version 1. Migrations are append-only: never edit a released file, add one.
-- Portable SQL on purpose (a PostgreSQL backend will follow): integer ids, INTEGER unix-millisecond
-- timestamps, BLOB for sealed bytes (BYTEA there), no SQLite-only column types.

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- AUTOINCREMENT: sealed blobs are bound to the user id, so an id is never reused.
CREATE TABLE users (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    name       TEXT    NOT NULL UNIQUE,
    is_admin   INTEGER NOT NULL DEFAULT 0,
    os_user    TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE login_keys (
    id          INTEGER PRIMARY KEY,
    user_id     INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    algorithm   TEXT    NOT NULL,
    public_key  TEXT    NOT NULL,   -- canonical line, no comment
    fingerprint TEXT    NOT NULL,
    comment     TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    UNIQUE (user_id, fingerprint)
);

CREATE TABLE secrets (
    id            INTEGER PRIMARY KEY,
    user_id       INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name          TEXT    NOT NULL,
    description   TEXT    NOT NULL DEFAULT '',
    env_name      TEXT,
    env_key       TEXT,             -- upper-cased env_name: uniqueness is case-insensitive
    file_path     TEXT,
    file_resolved TEXT,             -- file_path with ~ resolved against the OS user's home
    enabled       INTEGER NOT NULL,
    value_sealed  BLOB    NOT NULL, -- AES-256-GCM, bound to (secret, user id, name)
    value_len     INTEGER NOT NULL,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    UNIQUE (user_id, name),
    UNIQUE (user_id, env_key),
    UNIQUE (user_id, file_resolved),
    CHECK (enabled = 0 OR env_name IS NOT NULL OR file_path IS NOT NULL)
);

CREATE TABLE user_keys (
    user_id        INTEGER PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    algorithm      TEXT    NOT NULL,
    public_key     TEXT    NOT NULL,
    fingerprint    TEXT    NOT NULL,
    private_sealed BLOB    NOT NULL, -- bound to (user-key, user id)
    created_at     INTEGER NOT NULL
);

CREATE TABLE host_keys (
    algorithm      TEXT PRIMARY KEY,
    public_key     TEXT    NOT NULL,
    fingerprint    TEXT    NOT NULL,
    private_sealed BLOB    NOT NULL, -- bound to (host-key, host, algorithm)
    created_at     INTEGER NOT NULL
);

CREATE TABLE api_tokens (
    id           INTEGER PRIMARY KEY,
    user_id      INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name         TEXT    NOT NULL,
    token_hash   TEXT    NOT NULL UNIQUE, -- hex SHA-256 of the token; the token is shown once
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER,
    UNIQUE (user_id, name)
);

-- Audit events outlive the users they name, so they hold names, not foreign keys.
CREATE TABLE audit_events (
    id          INTEGER PRIMARY KEY,
    at          INTEGER NOT NULL,
    actor       TEXT    NOT NULL,
    user_name   TEXT    NOT NULL,
    action      TEXT    NOT NULL,
    secret_name TEXT,
    detail      TEXT    NOT NULL DEFAULT '{}'  -- JSON; never a value
);
CREATE INDEX audit_events_user ON audit_events (user_name, at);

-- Files keyport wrote, so it can remove them later only if they still hold what it wrote.
-- Keyed by OS user and path, not by keyport user, so the record outlives a removed user.
CREATE TABLE secret_files (
    os_user     TEXT    NOT NULL,
    path        TEXT    NOT NULL,
    user_name   TEXT    NOT NULL,
    secret_name TEXT    NOT NULL,
    hash_sealed BLOB    NOT NULL, -- SHA-256 of the content, sealed: a bare hash of a short value leaks it
    written_at  INTEGER NOT NULL,
    PRIMARY KEY (os_user, path)
);
