-- Which minutes are complete: one row per minute once the watermark has passed it, with or
-- without clicks in it (a minute without any had no top-N row, so the store never knew it had
-- closed, and its freshness stopped there). The job's clock ticks in every minute; the local
-- top lists carry the counts' watermark, which is behind the clock's: this window fires when
-- both have passed the minute, so after the minute's counts and local top lists were emitted.
-- Appended after the other statements, so the plan nodes before it keep their ids (and a
-- savepoint taken before it restores).
CREATE TEMPORARY VIEW minute_beats AS
SELECT minute_time FROM local_top_ads
UNION ALL
SELECT event_time AS minute_time FROM job_clock;

-- With the invalid-traffic rules the minute's counts were labelled under (the lists' versions
-- and the thresholds), for the record.
INSERT INTO minutes_sink
SELECT window_start, traffic_rules(CAST(${repeat_click_window_ms} AS BIGINT),
                                   CAST(${ip_frequency_window_ms} AS BIGINT),
                                   ${ip_frequency_threshold})
FROM TABLE(TUMBLE(TABLE minute_beats, DESCRIPTOR(minute_time), INTERVAL '1' MINUTE))
GROUP BY window_start, window_end;
