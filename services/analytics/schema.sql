-- analytics: one fact row per order and per order line, filled in as its events arrive.
CREATE TABLE IF NOT EXISTS sales (
    order_id       text        PRIMARY KEY,
    artisan_id     text        NOT NULL,
    currency_code  text        NOT NULL DEFAULT 'EUR',
    subtotal_cents bigint      NOT NULL DEFAULT 0,
    total_cents    bigint      NOT NULL DEFAULT 0,
    placed_at      timestamptz,
    delivered_at   timestamptz,
    cancelled_at   timestamptz,
    refunded_cents bigint      NOT NULL DEFAULT 0
);
-- A report reads the artisan's sales placed, delivered and cancelled in its period, each through
-- its own index, whatever the length of the artisan's history.
CREATE INDEX IF NOT EXISTS sales_artisan_placed ON sales (artisan_id, placed_at);
CREATE INDEX IF NOT EXISTS sales_artisan_delivered ON sales (artisan_id, delivered_at)
    WHERE delivered_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS sales_artisan_cancelled ON sales (artisan_id, cancelled_at)
    WHERE cancelled_at IS NOT NULL;
DROP INDEX IF EXISTS sales_artisan;  -- the first of the three starts with it
-- When a delivered order's goods came back, and what was refunded for it (decision 52).
ALTER TABLE sales ADD COLUMN IF NOT EXISTS returned_at timestamptz;
ALTER TABLE sales ADD COLUMN IF NOT EXISTS returned_cents bigint NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS sales_artisan_returned ON sales (artisan_id, returned_at)
    WHERE returned_at IS NOT NULL;

CREATE TABLE IF NOT EXISTS sale_lines (
    order_id      text   NOT NULL,
    product_id    text   NOT NULL,
    product_name  text   NOT NULL,
    quantity      bigint NOT NULL,
    revenue_cents bigint NOT NULL,
    PRIMARY KEY (order_id, product_id)
);
