-- Late clicks and dead letters per minute (and reason), over the last 6 hours of data.
--
-- Run: adclick sql -f sql/analyses/03_late_and_dead_letters_per_minute.sql
-- Three kinds of event, one row per (minute, kind, reason):
--   late_correction  late but within the allowed lateness: counted, as a late = 1 row of
--                    ad_click_counts (minute is the click's own minute)
--   too_late         later than the allowed lateness: not counted, kept in late_clicks
--   dead_letter      rejected by the job (reason says why); minute is when it was received
-- A burst of too_late points at a stalled producer or a watermark running ahead; a burst of
-- one dead-letter reason at a producer sending a new or broken format.
WITH (
    SELECT greatest(
        (SELECT max(minute) FROM ad_click_counts),
        (SELECT max(minute) FROM late_clicks),
        (SELECT toDateTime(max(received_at), 'UTC') FROM dead_letters))
) AS latest
SELECT minute, kind, reason, events
FROM
(
    SELECT minute, 'late_correction' AS kind, '' AS reason, sum(clicks) AS events
    FROM ad_click_counts FINAL
    WHERE late = 1 AND minute > latest - INTERVAL 6 HOUR
    GROUP BY minute
    UNION ALL
    SELECT minute, 'too_late', '', count()
    FROM late_clicks FINAL
    WHERE minute > latest - INTERVAL 6 HOUR
    GROUP BY minute
    UNION ALL
    SELECT toStartOfMinute(toDateTime(received_at, 'UTC')) AS minute, 'dead_letter',
           toString(reason), count()
    FROM dead_letters FINAL
    WHERE received_at > latest - INTERVAL 6 HOUR
    GROUP BY minute, reason
)
ORDER BY minute, kind, reason
