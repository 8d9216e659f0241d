-- keyport schema, version 2: workspaces for relay mode. Append-only, portable SQL as in 0001.

-- AUTOINCREMENT: a removed workspace's id is never given to a new one, so a relay still holding
-- an old id (to pin an announced host key) cannot touch a workspace that took its place.
CREATE TABLE workspaces (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    name       TEXT    NOT NULL UNIQUE,
    address    TEXT    NOT NULL,   -- HOST:PORT of its sshd
    os_user    TEXT    NOT NULL,   -- the login on the workspace
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE workspace_host_keys (
    workspace_id INTEGER NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    public_key   TEXT    NOT NULL,  -- canonical openssh line, no comment
    fingerprint  TEXT    NOT NULL,  -- SHA256:…
    source       TEXT    NOT NULL,  -- 'pinned' | 'scan' | 'announced'
    added_at     INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, fingerprint)
);

CREATE TABLE workspace_grants (
    workspace_id INTEGER NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    user_id      INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    owner        INTEGER NOT NULL DEFAULT 0,
    os_user      TEXT,              -- per-user login override; NULL = the workspace's
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, user_id)
);
-- "Which workspaces may this user use": the list a user sees, and the cascade on user removal.
CREATE INDEX workspace_grants_user ON workspace_grants (user_id);
