-- catalog: projections of artisans' products and workshops and inventory's availability,
-- with a Spanish full-text index (unaccented, stemmed) and trigrams for typos.
SELECT pg_advisory_xact_lock(hashtext('a4co-extensions'));
CREATE EXTENSION IF NOT EXISTS unaccent SCHEMA public;
CREATE EXTENSION IF NOT EXISTS pg_trgm SCHEMA public;

CREATE TABLE IF NOT EXISTS products (
    product_id    text        PRIMARY KEY,
    artisan_id    text        NOT NULL,
    name          text        NOT NULL,
    description   text        NOT NULL,
    category      text        NOT NULL,
    price_cents   bigint      NOT NULL,
    currency_code text        NOT NULL,
    publish_time  timestamptz NOT NULL,
    name_norm     text        NOT NULL,  -- unaccented, lower case: for trigram similarity
    search        tsvector    NOT NULL   -- name (A), category (B), description (C), Spanish stems
);
-- Since products change (UpdateProduct, WithdrawProduct): the revision recorded, and when the
-- product was withdrawn from sale (then no search finds it, and GetProduct answers NOT_FOUND).
ALTER TABLE products ADD COLUMN IF NOT EXISTS revision integer NOT NULL DEFAULT 1;
ALTER TABLE products ADD COLUMN IF NOT EXISTS withdrawn_at timestamptz;
-- Why a product may not be returned, shown to customers before they buy (decision 53).
ALTER TABLE products ADD COLUMN IF NOT EXISTS return_exception text NOT NULL DEFAULT '';
CREATE INDEX IF NOT EXISTS products_search ON products USING gin (search);
CREATE INDEX IF NOT EXISTS products_name_trgm ON products USING gin (name_norm gin_trgm_ops);
CREATE INDEX IF NOT EXISTS products_category ON products (category);
CREATE INDEX IF NOT EXISTS products_artisan ON products (artisan_id);
CREATE INDEX IF NOT EXISTS products_published ON products (publish_time DESC, product_id);

CREATE TABLE IF NOT EXISTS artisans (
    artisan_id   text             PRIMARY KEY,
    display_name text             NOT NULL,
    locality     text             NOT NULL,
    latitude     double precision NOT NULL,
    longitude    double precision NOT NULL
);
-- Since workshops change (UpdateArtisan): the revision recorded; its onboarding is 1.
ALTER TABLE artisans ADD COLUMN IF NOT EXISTS revision integer NOT NULL DEFAULT 1;

-- Availability arrives from inventory, possibly before the product itself: kept apart.
CREATE TABLE IF NOT EXISTS availability (
    product_id      text        PRIMARY KEY,
    available       integer     NOT NULL,
    low_threshold   integer     NOT NULL DEFAULT 0,
    as_of           timestamptz NOT NULL
);

-- Every word of the catalogue, unaccented, to correct typos in queries.
CREATE TABLE IF NOT EXISTS lexicon (
    word text PRIMARY KEY
);
CREATE INDEX IF NOT EXISTS lexicon_trgm ON lexicon USING gin (word gin_trgm_ops);

-- Every catalog process keeps a search index of these tables in memory (adapters/follower.py):
-- each write that changes what a search finds notifies "<schema>.search", which PostgreSQL
-- delivers when the transaction commits. "p:<product>" for a product or its stock going from none
-- to some (or back); "a:<workshop>" for a workshop placed or moved, whose products carry its place.
CREATE OR REPLACE FUNCTION search_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(TG_TABLE_SCHEMA || '.search', TG_ARGV[0] || ':' || (to_jsonb(NEW) ->> TG_ARGV[1]));
    RETURN NULL;
END
$$;
CREATE OR REPLACE TRIGGER products_search AFTER INSERT OR UPDATE ON products
    FOR EACH ROW EXECUTE FUNCTION search_changed('p', 'product_id');
CREATE OR REPLACE TRIGGER artisans_placed AFTER INSERT ON artisans
    FOR EACH ROW EXECUTE FUNCTION search_changed('a', 'artisan_id');
CREATE OR REPLACE TRIGGER artisans_moved AFTER UPDATE ON artisans
    FOR EACH ROW WHEN (OLD.latitude IS DISTINCT FROM NEW.latitude OR OLD.longitude IS DISTINCT FROM NEW.longitude)
    EXECUTE FUNCTION search_changed('a', 'artisan_id');
CREATE OR REPLACE TRIGGER availability_known AFTER INSERT ON availability
    FOR EACH ROW WHEN (NEW.available > 0) EXECUTE FUNCTION search_changed('p', 'product_id');
CREATE OR REPLACE TRIGGER availability_flipped AFTER UPDATE ON availability
    FOR EACH ROW WHEN ((OLD.available > 0) IS DISTINCT FROM (NEW.available > 0))
    EXECUTE FUNCTION search_changed('p', 'product_id');
