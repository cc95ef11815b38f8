-- Parse and validate each raw click in the JVM (no Python on the per-click path).
-- JSON_QUERY with an unconditional array wrapper returns a field's JSON text, e.g. ["ad-7"] for a
-- string or [1732488000000] for a number, so one regular expression checks type and format at once.
-- ${...} are integers checked by the job before substitution; no host or name is spliced in.
CREATE TEMPORARY VIEW clicks_parsed AS
SELECT
  payload,
  kafka_partition,
  kafka_offset,
  kafka_timestamp,
  proc_time,
  event_time,
  CHAR_LENGTH(body) AS payload_chars,
  JSON_QUERY(body, '$.click_id' WITH UNCONDITIONAL ARRAY WRAPPER) AS j_click_id,
  JSON_QUERY(body, '$.ad_id' WITH UNCONDITIONAL ARRAY WRAPPER) AS j_ad_id,
  JSON_QUERY(body, '$.click_ts' WITH UNCONDITIONAL ARRAY WRAPPER) AS j_click_ts,
  JSON_QUERY(body, '$.user_id' WITH UNCONDITIONAL ARRAY WRAPPER) AS j_user_id,
  JSON_QUERY(body, '$.ip' WITH UNCONDITIONAL ARRAY WRAPPER) AS j_ip,
  JSON_QUERY(body, '$.country' WITH UNCONDITIONAL ARRAY WRAPPER) AS j_country,
  JSON_QUERY(body, '$.device' WITH UNCONDITIONAL ARRAY WRAPPER) AS j_device,
  body
FROM (SELECT *, CAST(payload AS STRING) AS body FROM clicks_raw);

CREATE TEMPORARY VIEW clicks_checked AS
SELECT *,
  CASE
    WHEN payload_chars > ${max_payload_chars} THEN 'oversized'
    WHEN NOT (body IS JSON OBJECT) THEN 'not_json_object'
    WHEN j_click_id IS NULL OR NOT REGEXP(j_click_id, '^\["[A-Za-z0-9_.:-]{1,64}"\]$') THEN 'bad_click_id'
    WHEN j_ad_id IS NULL OR NOT REGEXP(j_ad_id, '^\["[A-Za-z0-9_.:-]{1,64}"\]$') THEN 'bad_ad_id'
    WHEN j_click_ts IS NULL OR NOT REGEXP(j_click_ts, '^\[-?[0-9]{1,15}\]$') THEN 'bad_click_ts'
    WHEN click_ts_ms < ${min_click_ts_ms} THEN 'click_ts_too_old'
    WHEN click_ts_ms > UNIX_TIMESTAMP() * 1000 + ${max_future_ms} THEN 'click_ts_in_future'
    WHEN TO_TIMESTAMP_LTZ(click_ts_ms, 3) <> event_time THEN 'ambiguous_click_ts'
    WHEN j_user_id IS NULL OR NOT REGEXP(j_user_id, '^\["[A-Za-z0-9_.:@-]{1,128}"\]$') THEN 'bad_user_id'
    WHEN j_ip IS NULL OR NOT REGEXP(j_ip, '^\["[0-9A-Fa-f.:]{2,45}"\]$') THEN 'bad_ip'
    WHEN j_country IS NULL OR NOT REGEXP(j_country, '^\["[A-Z]{2}"\]$') THEN 'bad_country'
    WHEN j_device IS NULL
      OR j_device NOT IN ('["mobile"]', '["desktop"]', '["tablet"]', '["other"]') THEN 'bad_device'
  END AS reject_reason
FROM (
  SELECT *,
    CASE WHEN REGEXP(j_click_ts, '^\[-?[0-9]{1,15}\]$')
      THEN CAST(SUBSTRING(j_click_ts FROM 2 FOR CHAR_LENGTH(j_click_ts) - 2) AS BIGINT)
    END AS click_ts_ms
  FROM clicks_parsed
);

CREATE TEMPORARY VIEW clicks_valid AS
SELECT
  SUBSTRING(j_click_id FROM 3 FOR CHAR_LENGTH(j_click_id) - 4) AS click_id,
  SUBSTRING(j_ad_id FROM 3 FOR CHAR_LENGTH(j_ad_id) - 4) AS ad_id,
  click_ts_ms,
  SUBSTRING(j_user_id FROM 3 FOR CHAR_LENGTH(j_user_id) - 4) AS user_id,
  SUBSTRING(j_ip FROM 3 FOR CHAR_LENGTH(j_ip) - 4) AS ip,
  SUBSTRING(j_country FROM 3 FOR 2) AS country,
  SUBSTRING(j_device FROM 3 FOR CHAR_LENGTH(j_device) - 4) AS device,
  proc_time,
  event_time
FROM clicks_checked
WHERE reject_reason IS NULL;
