-- payments: tokenised payment methods, charges and refunds. Never a full card number.
CREATE TABLE IF NOT EXISTS payment_methods (
    payment_method_id uuid        PRIMARY KEY,
    customer_id       text        NOT NULL,
    method_type       text        NOT NULL CHECK (method_type IN ('card', 'sepa_debit', 'bizum')),
    brand             text        NOT NULL DEFAULT 'unknown',
    last_four         text        NOT NULL,
    provider_token    text        NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now()
);
-- When the customer deleted it (DeletePaymentMethod): no new order may use it; the orders placed
-- with it before are still charged and refunded.
ALTER TABLE payment_methods ADD COLUMN IF NOT EXISTS deleted_at timestamptz;
-- A customer's methods in use, newest first (ListPaymentMethods, decision 41's pages); it
-- replaced payment_methods_customer.
DROP INDEX IF EXISTS payment_methods_customer;
CREATE INDEX IF NOT EXISTS payment_methods_customer_pages
    ON payment_methods (customer_id, created_at DESC, payment_method_id DESC) WHERE deleted_at IS NULL;

CREATE TABLE IF NOT EXISTS payments (
    payment_id         uuid        PRIMARY KEY,
    order_id           text        NOT NULL UNIQUE,
    customer_id        text        NOT NULL,
    payment_method_id  uuid,
    amount_cents       bigint      NOT NULL,
    currency_code      text        NOT NULL,
    refunded_cents     bigint      NOT NULL DEFAULT 0,
    status             text        NOT NULL CHECK (status IN ('succeeded', 'failed', 'refunded')),
    method_type        text        NOT NULL DEFAULT '',
    last_four          text        NOT NULL DEFAULT '',
    provider_reference text        NOT NULL DEFAULT '',
    failure_reason     text        NOT NULL DEFAULT '',
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);
