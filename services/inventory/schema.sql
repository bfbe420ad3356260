-- inventory: stock per product, idempotent adjustments, reservations for orders.
CREATE TABLE IF NOT EXISTS stock (
    product_id          text        PRIMARY KEY,
    artisan_id          text        NOT NULL,
    on_hand             integer     NOT NULL CHECK (on_hand >= 0),
    reserved            integer     NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    low_stock_threshold integer     NOT NULL DEFAULT 0 CHECK (low_stock_threshold >= 0),
    version             bigint      NOT NULL DEFAULT 1,
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CHECK (reserved <= on_hand)
);
CREATE INDEX IF NOT EXISTS stock_artisan ON stock (artisan_id);

CREATE TABLE IF NOT EXISTS adjustments (
    request_id  uuid        PRIMARY KEY,
    product_id  text        NOT NULL REFERENCES stock (product_id),
    actor_id    text        NOT NULL,
    delta       integer     NOT NULL,
    reason      text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS reservations (
    order_id    text        NOT NULL,
    product_id  text        NOT NULL REFERENCES stock (product_id),
    quantity    integer     NOT NULL CHECK (quantity > 0),
    status      text        NOT NULL CHECK (status IN ('held', 'released', 'committed', 'returned')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (order_id, product_id)
);
-- A returned order's lines are 'returned' (decision 52): a table made before takes the new status
-- once, when its check does not know it yet.
DO $$
BEGIN
    IF NOT EXISTS (
        SELECT FROM pg_constraint
        WHERE conrelid = 'reservations'::regclass AND conname = 'reservations_status_check'
          AND pg_get_constraintdef(oid) LIKE '%returned%'
    ) THEN
        ALTER TABLE reservations DROP CONSTRAINT IF EXISTS reservations_status_check;
        ALTER TABLE reservations ADD CONSTRAINT reservations_status_check
            CHECK (status IN ('held', 'released', 'committed', 'returned'));
    END IF;
END
$$;
