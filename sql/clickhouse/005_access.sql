-- Who may read what (api.auth, adclick.access). Applied after 004 by adclick.store.apply_schema.
--
-- A key's role: 'admin' (everything, /v1/sql and /v1/admin included), 'reader' (the count,
-- metrics, top and status APIs), or 'advertiser:<advertiser_id>' (those APIs over that
-- advertiser's ads only). Keys made before roles existed read as 'reader': they keep the data
-- APIs and lose SQL until an admin says otherwise. expires_at NULL never expires.
ALTER TABLE {db}.api_keys ADD COLUMN IF NOT EXISTS role String DEFAULT 'reader';
ALTER TABLE {db}.api_keys ADD COLUMN IF NOT EXISTS expires_at Nullable(DateTime64(3, 'UTC'));

-- When each key was last used, written by the API at most once a minute per key (the newest
-- row wins), apart from api_keys so that a read never rewrites a key's row.
CREATE TABLE IF NOT EXISTS {db}.api_key_usage
(
    key_hash     String,
    last_used_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(last_used_at)
ORDER BY key_hash;

-- The ads dimension: which advertiser an ad belongs to (the newest row of an ad wins). An
-- advertiser's key sees the ads listed here under its id, and no other. Loaded from a file or
-- POST /v1/admin/ads (adclick ads load); `make demo` loads the generator's.
CREATE TABLE IF NOT EXISTS {db}.ads
(
    ad_id         String,
    advertiser_id String,
    name          String,
    updated_at    DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY ad_id;
