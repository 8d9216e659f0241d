-- keyport schema, version 5, on PostgreSQL: a secret's lifecycle (as migrations/sqlite/0005).

ALTER TABLE secrets ADD COLUMN kind text NOT NULL DEFAULT 'other'
    CHECK (kind IN ('token', 'password', 'key', 'certificate', 'config', 'other'));
ALTER TABLE secrets ADD COLUMN rotate_after_secs bigint;
ALTER TABLE secrets ADD COLUMN mask bigint CHECK (mask IN (0, 1));
ALTER TABLE secrets ADD COLUMN value_updated_at timestamptz NOT NULL DEFAULT to_timestamp(0);
UPDATE secrets SET value_updated_at = updated_at;
