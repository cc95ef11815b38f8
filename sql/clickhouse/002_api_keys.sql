-- API keys of adclick's HTTP API (api.auth). Applied after 001 by adclick.store.apply_schema;
-- {db} is the database name, the only text substituted.
--
-- Only the SHA-256 of a key is stored (hex), never the key itself: a leaked table or backup
-- gives no usable credential, and the API only ever needs to recognise a key it is shown.
-- Revoking a key inserts its row again with revoked = 1 and a later updated_at; the
-- ReplacingMergeTree keeps the row with the greatest updated_at, so readers use FINAL.
-- The table is tiny (one row per key): the API reads all valid hashes at once and caches them.

CREATE TABLE IF NOT EXISTS {db}.api_keys
(
    key_hash    String,
    name        String,
    created_at  DateTime64(3, 'UTC'),
    updated_at  DateTime64(3, 'UTC'),
    revoked     UInt8
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY key_hash;
