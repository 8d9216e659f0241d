-- keyport schema, version 4: keyport as the workspaces' SSH user CA (relay `--auth ca`).
-- Append-only, portable SQL as in 0001.

-- At most one CA per state: the one signing ('active'), the one made by `ca rotate` and not
-- yet signing ('next'), and the one `ca promote` replaced, kept as a fallback until
-- `ca retire` drops it ('previous').
CREATE TABLE user_cas (
    id             TEXT    PRIMARY KEY,   -- 'ca1', 'ca2', … never reused
    seq            INTEGER NOT NULL UNIQUE,
    algorithm      TEXT    NOT NULL,      -- 'ed25519' | 'ecdsa-p256'
    public_key     TEXT    NOT NULL,      -- the TrustedUserCAKeys line, without comment
    fingerprint    TEXT    NOT NULL,      -- SHA256:…
    private_sealed BLOB    NOT NULL,      -- sealed: purpose 'user-ca', owner 'keyport', item = fingerprint
    state          TEXT    NOT NULL UNIQUE CHECK (state IN ('next', 'active', 'previous')),
    created_at     INTEGER NOT NULL,
    promoted_at    INTEGER
);

-- How relay mode logs in to the workspace: 'key' (the user's key in authorized_keys) or 'ca'
-- (a certificate from keyport's user CA); and which CA's certificate its sshd last accepted.
ALTER TABLE workspaces ADD COLUMN auth TEXT NOT NULL DEFAULT 'key' CHECK (auth IN ('key', 'ca'));
ALTER TABLE workspaces ADD COLUMN last_ca TEXT;
ALTER TABLE workspaces ADD COLUMN last_ca_at INTEGER;
