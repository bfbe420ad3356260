-- loyalty: a ledger of point entries; one entry per cause, so redeliveries add nothing.
CREATE TABLE IF NOT EXISTS entries (
    entry_key  text        PRIMARY KEY,  -- "<kind>:<order or user>", unique per cause
    user_id    text        NOT NULL,
    order_id   text        NOT NULL DEFAULT '',
    points     bigint      NOT NULL,
    kind       text        NOT NULL CHECK (kind IN ('welcome', 'purchase', 'revocation')),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS entries_user ON entries (user_id);
-- A user's entries, newest first (ListLedgerEntries: a page follows on from the last entry of the
-- page before, decision 41). It replaced entries_user_newest, whose key was ascending.
DROP INDEX IF EXISTS entries_user_newest;
CREATE INDEX IF NOT EXISTS entries_user_pages ON entries (user_id, created_at DESC, entry_key DESC);
