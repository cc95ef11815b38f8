package adclick.flink;

import java.io.Serializable;
import java.util.Comparator;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * The stateful invalid-traffic rules of a counted click (issue 26), in one place: the SQL
 * specification ({@link ClickTrafficLabels}, an aggregate over an OVER window) and the
 * operator the job runs in its place ({@link ClickLabelOperator}) both label with this, so they
 * cannot drift.
 *
 * <p>A click gets one label, the first that holds:
 * <ol>
 *   <li>its stateless label (the row's traffic: bot_user_agent, datacenter_ip), if any;
 *   <li>{@value #REPEAT_CLICK}: an earlier click of the same ad by the same user_id less than
 *       the repeat window before it (0 &lt;= C.ts - E.ts &lt; R);
 *   <li>{@value #IP_FREQUENCY}: the ip threshold or more earlier clicks of the same ad from the
 *       same ip key ({@link IpAddress#key}) less than the ip window before it;
 *   <li>{@value #VALID}.
 * </ol>
 * "Earlier" is the order of (event time, then event id as a string): a click's label depends
 * only on the set of the ad's counted clicks ordered before it, never on the order they came in.
 * Every counted click is an earlier click of those after it, whatever its own label (a bot's
 * click still makes the next click of its user a repeat). A click without a user_id is never a
 * repeat nor makes one (SQL's NULL equals nothing); a missing ip keys as IpAddress.key does.
 */
public final class ClickRules implements Serializable {

  private static final long serialVersionUID = 1L;

  public static final String VALID = "valid";
  public static final String REPEAT_CLICK = "repeat_click";
  public static final String IP_FREQUENCY = "ip_frequency";

  public static final long DEFAULT_REPEAT_WINDOW_MS = 10_000;
  public static final long DEFAULT_IP_WINDOW_MS = 600_000;
  public static final int DEFAULT_IP_THRESHOLD = 3;

  /**
   * What the rules read of a click. The id, user, ip key and label are Strings, or (in the
   * operator, which reads them off binary rows without decoding them) StringData: one kind for
   * all the clicks labelled together. Ids order as their UTF-8 bytes do, which for the ids'
   * ASCII characters is String order; users and ip keys only need equality.
   */
  public static class Click {
    public final long ts;
    public final Object id;
    public final Object user;
    public final Object ipKey;
    public final Object traffic;

    public Click(long ts, Object id, Object user, Object ipKey, Object traffic) {
      this.ts = ts;
      this.id = id;
      this.user = user;
      this.ipKey = ipKey;
      this.traffic = traffic;
    }

    /** A click from its row's values (the ip as its text, keyed here). */
    public static Click of(long ts, String id, String user, String ip, String traffic) {
      return new Click(ts, id, user, IpAddress.key(ip), traffic);
    }

    @Override
    public String toString() {
      return id + "@" + ts;
    }
  }

  /** The rules' order: event time, then event id (a null id first). */
  @SuppressWarnings({"unchecked", "rawtypes"})
  public static final Comparator<Click> ORDER = Comparator.<Click>comparingLong(c -> c.ts)
      .thenComparing(c -> (Comparable) c.id, Comparator.nullsFirst(Comparator.naturalOrder()));

  public final long repeatWindowMs;
  public final long ipWindowMs;
  public final int ipThreshold;

  public ClickRules(long repeatWindowMs, long ipWindowMs, int ipThreshold) {
    if (repeatWindowMs <= 0 || ipWindowMs <= 0 || ipThreshold <= 0) {
      throw new IllegalArgumentException("the windows and the threshold must be positive: "
          + repeatWindowMs + ", " + ipWindowMs + ", " + ipThreshold);
    }
    this.repeatWindowMs = repeatWindowMs;
    this.ipWindowMs = ipWindowMs;
    this.ipThreshold = ipThreshold;
  }

  /** The defaults: R = 10 s, W = 10 min, K = 3. */
  public static ClickRules defaults() {
    return new ClickRules(DEFAULT_REPEAT_WINDOW_MS, DEFAULT_IP_WINDOW_MS, DEFAULT_IP_THRESHOLD);
  }

  /** How far back a click looks: max(R, W). Clicks older than this never change a label. */
  public long lookbackMs() {
    return Math.max(repeatWindowMs, ipWindowMs);
  }

  /** The label of sorted[index] against sorted[0, index); sorted in {@link #ORDER}. */
  public String label(List<? extends Click> sorted, int index) {
    return labels(sorted, index, index + 1)[0];
  }

  /**
   * The labels of sorted[from, to), each against the clicks before it in sorted (which must be
   * in {@link #ORDER}): one pass with two sliding windows (users within R, ip keys within W),
   * so labelling a run of n clicks with m before them costs O(n + m), not O(n * m).
   */
  public String[] labels(List<? extends Click> sorted, int from, int to) {
    String[] labels = new String[Math.max(0, to - from)];
    if (from >= to) {
      return labels;
    }
    Map<Object, Integer> users = new HashMap<>();  // in the repeat window before i
    Map<Object, Integer> ips = new HashMap<>();    // in the ip window before i
    long first = sorted.get(from).ts;
    int userStart = from;
    while (userStart > 0 && repeats(sorted.get(userStart - 1).ts, first)) {
      userStart--;
    }
    int ipStart = from;
    while (ipStart > 0 && inIpWindow(sorted.get(ipStart - 1).ts, first)) {
      ipStart--;
    }
    for (int j = userStart; j < from; j++) {
      add(users, sorted.get(j).user, 1);
    }
    for (int j = ipStart; j < from; j++) {
      add(ips, sorted.get(j).ipKey, 1);
    }
    for (int i = from; i < to; i++) {
      Click click = sorted.get(i);
      while (userStart < i && !repeats(sorted.get(userStart).ts, click.ts)) {
        add(users, sorted.get(userStart++).user, -1);
      }
      while (ipStart < i && !inIpWindow(sorted.get(ipStart).ts, click.ts)) {
        add(ips, sorted.get(ipStart++).ipKey, -1);
      }
      labels[i - from] = label(click.traffic,
          click.user != null && users.containsKey(click.user),
          ips.getOrDefault(click.ipKey, 0));
      add(users, click.user, 1);
      add(ips, click.ipKey, 1);
    }
    return labels;
  }

  /**
   * A click's label from what the rules read of the clicks before it: its stateless label
   * (null for none), whether one of its user's is less than R before it, and how many of its
   * ip key's are less than W before it. The order of the rules is here and nowhere else.
   */
  public String label(Object traffic, boolean repeat, int earlierOfIpKey) {
    if (traffic != null) {
      return traffic.toString();
    }
    if (repeat) {
      return REPEAT_CLICK;
    }
    return earlierOfIpKey >= ipThreshold ? IP_FREQUENCY : VALID;
  }

  /** Whether a click at ts is a repeat of its user's click at earlierTs (ordered before it). */
  public boolean repeats(long earlierTs, long ts) {
    return ts - earlierTs < repeatWindowMs;
  }

  /** Whether a click at earlierTs (ordered before one at ts) counts in ts's ip window. */
  public boolean inIpWindow(long earlierTs, long ts) {
    return ts - earlierTs < ipWindowMs;
  }

  private static void add(Map<Object, Integer> counts, Object key, int delta) {
    if (key == null) {
      return;
    }
    counts.merge(key, delta, (a, b) -> a + b == 0 ? null : a + b);
  }
}
