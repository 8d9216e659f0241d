-- keyport schema, version 4, on PostgreSQL: keyport as the workspaces' SSH user CA (as
-- migrations/sqlite/0004).

CREATE TABLE user_cas (
    id             text        PRIMARY KEY,
    seq            bigint      NOT NULL UNIQUE,
    algorithm      text        NOT NULL,
    public_key     text        NOT NULL,
    fingerprint    text        NOT NULL,
    private_sealed bytea       NOT NULL,
    state          text        NOT NULL UNIQUE CHECK (state IN ('next', 'active', 'previous')),
    created_at     timestamptz NOT NULL,
    promoted_at    timestamptz
);

ALTER TABLE workspaces ADD COLUMN auth text NOT NULL DEFAULT 'key' CHECK (auth IN ('key', 'ca'));
ALTER TABLE workspaces ADD COLUMN last_ca text;
ALTER TABLE workspaces ADD COLUMN last_ca_at timestamptz;
