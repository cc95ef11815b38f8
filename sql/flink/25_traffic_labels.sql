-- Invalid traffic: every counted click and impression gets ONE label, `valid` or the reason it
-- is not, first match in this order (config.TRAFFIC_REASONS):
--   bot_user_agent  its user agent is a known crawler's     } the format's `traffic`, decided
--   datacenter_ip   its ip is in a cloud or hosting range   } per event (TrafficRules.java)
--   repeat_click    its user clicked the same ad less than ${repeat_click_window_ms} ms before
--   ip_frequency    its ip key (the IPv4 address, or the IPv6 /64) made ${ip_frequency_threshold}
--                   or more clicks on the same ad in the ${ip_frequency_window_s} s before it
-- The last two look at the ad's other counted clicks ("before" orders by click_ts, then
-- click_id; an earlier click counts whatever its own label), so they apply to clicks only.
--
-- Said as an OVER window: the label of each click from the ad's clicks of the window before it.
-- A RANGE window gives every click of one millisecond the same value, so the aggregate answers
-- with the labels of all of them, by click_id. Flink's batch mode runs this as written.
-- The streaming job runs udfs/java's ClickLabelOperator in the OVER's place (attach_job in the
-- job), keyed by ad like it: labels are decided when the click's minute closes here, from every
-- click counted by then, so they do not depend on the order clicks arrived in; a late click is
-- labelled when it comes, and if it changes the label of a click decided before (it comes
-- earlier in event time), the operator emits that click again as a revision: its new label, and
-- under '^replaces' the one it had (40_outputs.sql turns it into -1 and +1). The labels of the
-- whole minute, once its lateness has passed, are then exactly those of this SQL over all its
-- counted clicks.
CREATE TEMPORARY VIEW clicks_labeled AS
SELECT event, event_id, ad_id, event_ts_ms, user_id, ip, country, device, event_time,
       watermark_ts, minute_start, timeliness, labels[event_id] AS traffic,
       labels['^replaces'] AS replaces
FROM (
  SELECT *, click_traffic_labels(
           traffic, user_id, ip, event_ts_ms, event_id, CAST(${repeat_click_window_ms} AS BIGINT),
           CAST(${ip_frequency_window_ms} AS BIGINT), ${ip_frequency_threshold}) OVER (
           PARTITION BY ad_id ORDER BY event_time
           RANGE BETWEEN INTERVAL '${ip_frequency_window_s}' SECOND(3) PRECEDING AND CURRENT ROW)
         AS labels
  FROM events_timed
  WHERE event = 'click' AND timeliness <> 'too_late'
);

-- Every counted event with its label; an impression's is the format's, or valid.
CREATE TEMPORARY VIEW events_labeled AS
SELECT * FROM clicks_labeled
UNION ALL
SELECT event, event_id, ad_id, event_ts_ms, user_id, ip, country, device, event_time,
       watermark_ts, minute_start, timeliness, COALESCE(traffic, 'valid'), CAST(NULL AS STRING)
FROM events_timed
WHERE event = 'impression' AND timeliness <> 'too_late';
