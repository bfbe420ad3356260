-- loyalty: a ledger of point entries; one entry per cause, so redeliveries add nothing.
CREATE TABLE IF NOT EXISTS entries (
    entry_key  text        PRIMARY KEY,  -- "<kind>:<order or user>", unique per cause
    user_id    text        NOT NULL,
    order_id   text        NOT NULL DEFAULT '',
    points     bigint      NOT NULL,
    kind       text        NOT NULL
               CHECK (kind IN ('welcome', 'purchase', 'revocation', 'redemption', 'restoration')),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS entries_user ON entries (user_id);
-- A user's entries, newest first (ListLedgerEntries: a page follows on from the last entry of the
-- page before, decision 41). It replaced entries_user_newest, whose key was ascending.
DROP INDEX IF EXISTS entries_user_newest;
CREATE INDEX IF NOT EXISTS entries_user_pages ON entries (user_id, created_at DESC, entry_key DESC);
-- Points spent on orders and given back (decision 54): a table made before takes the new kinds
-- once, when its check does not know them yet.
DO $$
BEGIN
    IF NOT EXISTS (
        SELECT FROM pg_constraint
        WHERE conrelid = 'entries'::regclass AND conname = 'entries_kind_check'
          AND pg_get_constraintdef(oid) LIKE '%restoration%'
    ) THEN
        ALTER TABLE entries DROP CONSTRAINT IF EXISTS entries_kind_check;
        ALTER TABLE entries ADD CONSTRAINT entries_kind_check
            CHECK (kind IN ('welcome', 'purchase', 'revocation', 'redemption', 'restoration'));
    END IF;
END
$$;
-- Each order that spends points, once: 'redeemed' (its points taken) or 'refused' (too few), then
-- 'restored' once it is cancelled or returned; 'void' when its undoing came first (a redelivery
-- overtook the order's own event), so that its points are never taken.
CREATE TABLE IF NOT EXISTS redemptions (
    order_id   text        PRIMARY KEY,
    user_id    text        NOT NULL,
    points     bigint      NOT NULL,
    status     text        NOT NULL CHECK (status IN ('redeemed', 'refused', 'restored', 'void')),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
