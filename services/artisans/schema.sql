-- artisans: onboarded workshops and their published products.
CREATE TABLE IF NOT EXISTS workshops (
    artisan_id   text             PRIMARY KEY,
    request_id   uuid             NOT NULL UNIQUE,
    display_name text             NOT NULL,
    craft        text             NOT NULL,
    locality     text             NOT NULL,
    latitude     double precision NOT NULL,
    longitude    double precision NOT NULL,
    address      jsonb            NOT NULL DEFAULT '{}',
    bio          text             NOT NULL DEFAULT '',
    onboarded_at timestamptz      NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS products (
    product_id          uuid        PRIMARY KEY,
    request_id          uuid        NOT NULL UNIQUE,
    artisan_id          text        NOT NULL REFERENCES workshops (artisan_id),
    name                text        NOT NULL,
    description         text        NOT NULL,
    category            text        NOT NULL,
    price_cents         bigint      NOT NULL CHECK (price_cents > 0),
    currency_code       text        NOT NULL,
    initial_stock       integer     NOT NULL CHECK (initial_stock >= 0),
    low_stock_threshold integer     NOT NULL CHECK (low_stock_threshold >= 0),
    published_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS products_artisan ON products (artisan_id);
-- An artisan's products, newest first (ListProducts: a page follows on from the last product of
-- the page before, decision 41). It replaced products_artisan_newest, whose key was ascending.
DROP INDEX IF EXISTS products_artisan_newest;
CREATE INDEX IF NOT EXISTS products_artisan_pages ON products (artisan_id, published_at DESC, product_id DESC);
-- A product's changes (UpdateProduct, WithdrawProduct): its revision counts its publication and
-- each change, and leads its events, so that consumers keep the newest whatever order they arrive in.
ALTER TABLE products ADD COLUMN IF NOT EXISTS revision integer NOT NULL DEFAULT 1;
-- Why a product may not be returned ('PERISHABLE', 'PERSONALISED'; '' when it may: decision 53).
ALTER TABLE products ADD COLUMN IF NOT EXISTS return_exception text NOT NULL DEFAULT '';
ALTER TABLE products ADD COLUMN IF NOT EXISTS updated_at timestamptz;
ALTER TABLE products ADD COLUMN IF NOT EXISTS withdrawn_at timestamptz;
-- A workshop's changes (UpdateArtisan): its revision counts its onboarding and each change, and
-- leads its events, so that consumers keep the newest whatever order they arrive in.
ALTER TABLE workshops ADD COLUMN IF NOT EXISTS revision integer NOT NULL DEFAULT 1;
ALTER TABLE workshops ADD COLUMN IF NOT EXISTS updated_at timestamptz;
-- A workshop that left the marketplace (OffboardArtisan): its products were withdrawn with it, and
-- it neither changes nor publishes again.
ALTER TABLE workshops ADD COLUMN IF NOT EXISTS offboarded_at timestamptz;
