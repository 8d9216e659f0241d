-- keyport schema, version 3, on PostgreSQL: each file secret's last delivery, per place (as
-- migrations/sqlite/0003).

CREATE TABLE secret_deliveries (
    secret_id  bigint      NOT NULL REFERENCES secrets(id) ON DELETE CASCADE,
    place      text        NOT NULL,
    path       text        NOT NULL,
    outcome    text        NOT NULL,
    reason     text,
    at         timestamptz NOT NULL,
    PRIMARY KEY (secret_id, place)
);
