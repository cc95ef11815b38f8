package adclick.flink;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.apache.flink.table.annotation.DataTypeHint;
import org.apache.flink.table.annotation.FunctionHint;
import org.apache.flink.table.functions.AggregateFunction;

/**
 * The stateful invalid-traffic labels ({@link ClickRules}) as SQL: an aggregate for an OVER
 * window over an ad's counted clicks, what the job's SQL says and what Flink's batch mode runs.
 *
 * <pre>
 * CREATE TEMPORARY FUNCTION click_traffic_labels AS 'adclick.flink.ClickTrafficLabels';
 * click_traffic_labels(traffic, user_id, ip, event_ts_ms, event_id,
 *                      CAST(10000 AS BIGINT), CAST(600000 AS BIGINT), 3)
 *   OVER (PARTITION BY ad_id ORDER BY event_time
 *         RANGE BETWEEN INTERVAL '600' SECOND PRECEDING AND CURRENT ROW) AS labels
 * </pre>
 *
 * then {@code labels[event_id]} is the row's label. A RANGE window hands every row of one event
 * time (the peers) the same value, so the value is a map: for each accumulated row of the
 * newest event time, its label against the accumulated rows ordered before it ((event time,
 * event id), peers included). The window must reach back at least max(R, W) (the rules'
 * windows; its bound is inclusive, the rules' exclusive). The streaming job runs
 * {@link ClickLabelOperator} in the OVER's place (ClickLabel.install), which labels the same.
 */
@FunctionHint(
    accumulator = @DataTypeHint(value = "RAW", bridgedTo = ClickTrafficLabels.Acc.class),
    output = @DataTypeHint("MAP<STRING, STRING>"))
public class ClickTrafficLabels extends AggregateFunction<Map<String, String>,
    ClickTrafficLabels.Acc> {

  private static final long serialVersionUID = 1L;

  /**
   * The window's rows, as the rules read them (the ip as its key), in no order; and the rules'
   * parameters, as the calls pass them. A RAW type (Flink's generic serializer): its arrays grow
   * by doubling, so a row is accumulated in O(1).
   */
  public static class Acc {
    public int size;
    public long[] ts = new long[8];
    public String[] ids = new String[8];
    public String[] users = new String[8];
    public String[] ipKeys = new String[8];
    public String[] traffic = new String[8];
    public long repeatWindowMs = ClickRules.DEFAULT_REPEAT_WINDOW_MS;
    public long ipWindowMs = ClickRules.DEFAULT_IP_WINDOW_MS;
    public int ipThreshold = ClickRules.DEFAULT_IP_THRESHOLD;

    public Acc() {}

    void add(long t, String id, String user, String ipKey, String label) {
      if (size == ts.length) {
        int capacity = size * 2;
        ts = Arrays.copyOf(ts, capacity);
        ids = Arrays.copyOf(ids, capacity);
        users = Arrays.copyOf(users, capacity);
        ipKeys = Arrays.copyOf(ipKeys, capacity);
        traffic = Arrays.copyOf(traffic, capacity);
      }
      ts[size] = t;
      ids[size] = id;
      users[size] = user;
      ipKeys[size] = ipKey;
      traffic[size] = label;
      size++;
    }

    /** Removes one row of this time and id (the last one put there, if several). */
    void remove(long t, String id) {
      for (int i = size - 1; i >= 0; i--) {
        if (ts[i] == t && java.util.Objects.equals(ids[i], id)) {
          size--;
          ts[i] = ts[size];
          ids[i] = ids[size];
          users[i] = users[size];
          ipKeys[i] = ipKeys[size];
          traffic[i] = traffic[size];
          ids[size] = null;
          users[size] = null;
          ipKeys[size] = null;
          traffic[size] = null;
          return;
        }
      }
    }
  }

  @Override
  public Acc createAccumulator() {
    return new Acc();
  }

  /** Takes a row into the window (a row without an event time is no click: ignored). */
  public void accumulate(Acc acc, String traffic, String userId, String ip, Long eventTsMs,
                         String eventId, Long repeatWindowMs, Long ipWindowMs,
                         Integer ipThreshold) {
    if (eventTsMs == null) {
      return;
    }
    parameters(acc, repeatWindowMs, ipWindowMs, ipThreshold);
    acc.add(eventTsMs, eventId, userId, IpAddress.key(ip), traffic);
  }

  /** Takes a row out of the window (a bounded OVER window retracts the rows it leaves). */
  public void retract(Acc acc, String traffic, String userId, String ip, Long eventTsMs,
                      String eventId, Long repeatWindowMs, Long ipWindowMs,
                      Integer ipThreshold) {
    if (eventTsMs == null) {
      return;
    }
    acc.remove(eventTsMs, eventId);
  }

  /** Empties the window (batch frames reset their accumulator). */
  public void resetAccumulator(Acc acc) {
    Acc empty = new Acc();
    acc.size = 0;
    acc.ts = empty.ts;
    acc.ids = empty.ids;
    acc.users = empty.users;
    acc.ipKeys = empty.ipKeys;
    acc.traffic = empty.traffic;
  }

  private static void parameters(Acc acc, Long repeatWindowMs, Long ipWindowMs,
                                 Integer ipThreshold) {
    if (repeatWindowMs != null) {
      acc.repeatWindowMs = repeatWindowMs;
    }
    if (ipWindowMs != null) {
      acc.ipWindowMs = ipWindowMs;
    }
    if (ipThreshold != null) {
      acc.ipThreshold = ipThreshold;
    }
  }

  /**
   * The label of each row of the newest event time, by event id, each against the rows ordered
   * before it; rows older than the lookback (max(R, W)) before that time are not read.
   */
  @Override
  public Map<String, String> getValue(Acc acc) {
    Map<String, String> labels = new HashMap<>();
    if (acc.size == 0) {
      return labels;
    }
    ClickRules rules = new ClickRules(acc.repeatWindowMs, acc.ipWindowMs, acc.ipThreshold);
    long newest = Long.MIN_VALUE;
    for (int i = 0; i < acc.size; i++) {
      newest = Math.max(newest, acc.ts[i]);
    }
    List<ClickRules.Click> window = new ArrayList<>(acc.size);
    for (int i = 0; i < acc.size; i++) {
      if (newest - acc.ts[i] < rules.lookbackMs()) {
        window.add(new ClickRules.Click(acc.ts[i], acc.ids[i], acc.users[i], acc.ipKeys[i],
            acc.traffic[i]));
      }
    }
    window.sort(ClickRules.ORDER);
    int from = window.size();
    while (from > 0 && window.get(from - 1).ts == newest) {
      from--;
    }
    String[] computed = rules.labels(window, from, window.size());
    for (int i = from; i < window.size(); i++) {
      labels.put((String) window.get(i).id, computed[i - from]);
    }
    return labels;
  }
}
