-- orders: the orders and the facts their saga has learnt.
CREATE TABLE IF NOT EXISTS orders (
    order_id           uuid             PRIMARY KEY,
    customer_id        text             NOT NULL,
    artisan_id         text             NOT NULL,
    request_id         text             NOT NULL,
    lines              jsonb            NOT NULL,
    currency_code      text             NOT NULL,
    delivery_fee_cents bigint           NOT NULL,
    total_cents        bigint           NOT NULL,
    payment_method_id  text             NOT NULL,
    delivery_address   jsonb            NOT NULL,
    delivery_lat       double precision NOT NULL,
    delivery_lng       double precision NOT NULL,
    payment            text             NOT NULL DEFAULT 'none',
    payment_reason     text             NOT NULL DEFAULT '',
    stock              text             NOT NULL DEFAULT 'none',
    stock_reason       text             NOT NULL DEFAULT '',
    cancel_reason      text             NOT NULL DEFAULT '',
    shipped            boolean          NOT NULL DEFAULT false,
    delivered          boolean          NOT NULL DEFAULT false,
    refunded           boolean          NOT NULL DEFAULT false,
    status             text             NOT NULL,
    step_deadline      timestamptz,
    version            integer          NOT NULL DEFAULT 1,
    created_at         timestamptz      NOT NULL DEFAULT now(),
    updated_at         timestamptz      NOT NULL DEFAULT now(),
    UNIQUE (customer_id, request_id)
);
-- A customer's and an artisan's orders, newest first (ListOrders: a page follows on from the last
-- order of the page before, decision 41). These two replaced orders_customer and orders_artisan,
-- which lacked the key.
DROP INDEX IF EXISTS orders_customer;
DROP INDEX IF EXISTS orders_artisan;
CREATE INDEX IF NOT EXISTS orders_customer_pages ON orders (customer_id, created_at DESC, order_id DESC);
CREATE INDEX IF NOT EXISTS orders_artisan_pages ON orders (artisan_id, created_at DESC, order_id DESC);
-- Every order, newest first: an admin's ListOrders naming no one (decision 47). Its columns never
-- change, so the saga's updates of an order's status leave it alone whenever they are HOT.
CREATE INDEX IF NOT EXISTS orders_pages ON orders (created_at DESC, order_id DESC);
CREATE INDEX IF NOT EXISTS orders_waiting ON orders (step_deadline) WHERE status IN ('PENDING', 'PAID');
-- What whoever cancelled an order wrote (CancelOrder's reason): told to the artisan, or to the
-- customer when an admin cancelled.
ALTER TABLE orders ADD COLUMN IF NOT EXISTS cancel_note text NOT NULL DEFAULT '';
-- When it was delivered, and its return (decision 52): asked for, in the customer's words, and
-- received. An order delivered before delivered_at was kept has none: its updated_at stands for it.
ALTER TABLE orders ADD COLUMN IF NOT EXISTS delivered_at timestamptz;
ALTER TABLE orders ADD COLUMN IF NOT EXISTS return_requested_at timestamptz;
ALTER TABLE orders ADD COLUMN IF NOT EXISTS return_note text NOT NULL DEFAULT '';
ALTER TABLE orders ADD COLUMN IF NOT EXISTS returned_at timestamptz;
-- The loyalty points an order spends (decision 54; total_cents is net of what they pay), and
-- loyalty's answer: taken ('ok') or refused ('failed').
ALTER TABLE orders ADD COLUMN IF NOT EXISTS points_redeemed bigint NOT NULL DEFAULT 0;
ALTER TABLE orders ADD COLUMN IF NOT EXISTS points text NOT NULL DEFAULT 'none';
ALTER TABLE orders ADD COLUMN IF NOT EXISTS points_reason text NOT NULL DEFAULT '';
-- The returns waiting for their goods, newest first: an admin's ListOrders of them reads no other
-- order (orders_pages would walk past every other), and the operators' gauges count them.
DROP INDEX IF EXISTS orders_returns_waiting;  -- its first form, keyed by the request's time
CREATE INDEX IF NOT EXISTS orders_returns_pages ON orders (created_at DESC, order_id DESC)
    WHERE status = 'RETURN_REQUESTED';

-- The products on sale, as ProductPublished, ProductUpdated and ProductWithdrawn announced them
-- (or catalog answered, as revision 0, for one whose event has not arrived yet): the newest
-- revision counts. A withdrawn product is kept, so that an order for it is refused.
CREATE TABLE IF NOT EXISTS products (
    product_id    text   PRIMARY KEY,
    artisan_id    text   NOT NULL,
    name          text   NOT NULL,
    price_cents   bigint NOT NULL,
    currency_code text   NOT NULL
);
ALTER TABLE products ADD COLUMN IF NOT EXISTS revision integer NOT NULL DEFAULT 1;
ALTER TABLE products ADD COLUMN IF NOT EXISTS withdrawn boolean NOT NULL DEFAULT false;
-- Why a product may not be returned (decision 53): each new order's lines keep it as it is then.
ALTER TABLE products ADD COLUMN IF NOT EXISTS return_exception text NOT NULL DEFAULT '';
