package adclick.flink;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.Comparator;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.Set;
import java.util.TreeMap;
import org.junit.jupiter.api.Test;

/**
 * The rules ({@link ClickRules}) and their SQL form ({@link ClickTrafficLabels}) run the way an
 * OVER window runs the aggregate: per row, the rows of its ad in [ts - 600 s, ts] accumulated
 * (batch), or accumulated and retracted as the window slides (streaming), and the row's label
 * read from the value's map by its id.
 */
class ClickTrafficLabelsTest {

  static final long T0 = 1_767_225_600_000L; // 2026-01-01T00:00:00Z, a minute's start
  static final long RANGE_MS = 600_000;      // the OVER's INTERVAL '10' MINUTE PRECEDING
  static final long R = ClickRules.DEFAULT_REPEAT_WINDOW_MS;
  static final long W = ClickRules.DEFAULT_IP_WINDOW_MS;
  static final int K = ClickRules.DEFAULT_IP_THRESHOLD;

  /** A click as the tests write it: its ad, id, time, user, ip and stateless label. */
  static final class TestClick {
    final String ad;
    final String id;
    final long ts;
    final String user;
    final String ip;
    final String traffic;

    TestClick(String ad, String id, long ts, String user, String ip, String traffic) {
      this.ad = ad;
      this.id = id;
      this.ts = ts;
      this.user = user;
      this.ip = ip;
      this.traffic = traffic;
    }

    ClickRules.Click rules() {
      return ClickRules.Click.of(ts, id, user, ip, traffic);
    }

    @Override
    public String toString() {
      return ad + "/" + id + "@" + (ts - T0) + " " + user + " " + ip + " " + traffic;
    }
  }

  static TestClick click(String id, long offsetMs, String user, String ip) {
    return new TestClick("ad-1", id, T0 + offsetMs, user, ip, null);
  }

  static TestClick click(String id, long offsetMs, String user, String ip, String traffic) {
    return new TestClick("ad-1", id, T0 + offsetMs, user, ip, traffic);
  }

  static final Comparator<TestClick> ORDER =
      Comparator.<TestClick>comparingLong(c -> c.ts).thenComparing(c -> c.id);

  /** The specification: each click's label over all the clicks of its ad sorted by (ts, id). */
  static Map<String, String> expected(List<TestClick> clicks) {
    Map<String, List<TestClick>> byAd = new TreeMap<>();
    for (TestClick c : clicks) {
      byAd.computeIfAbsent(c.ad, a -> new ArrayList<>()).add(c);
    }
    Map<String, String> labels = new HashMap<>();
    ClickRules rules = ClickRules.defaults();
    for (List<TestClick> ad : byAd.values()) {
      ad.sort(ORDER);
      List<ClickRules.Click> sorted = new ArrayList<>();
      for (TestClick c : ad) {
        sorted.add(c.rules());
      }
      String[] computed = rules.labels(sorted, 0, sorted.size());
      for (int i = 0; i < ad.size(); i++) {
        labels.put(ad.get(i).id, computed[i]);
      }
    }
    return labels;
  }

  private static void accumulate(ClickTrafficLabels f, ClickTrafficLabels.Acc acc, TestClick c) {
    f.accumulate(acc, c.traffic, c.user, c.ip, c.ts, c.id, R, W, K);
  }

  /** The aggregate as a batch OVER runs it: per row, a fresh accumulator of its frame. */
  static Map<String, String> overBatch(List<TestClick> clicks) {
    ClickTrafficLabels f = new ClickTrafficLabels();
    Map<String, String> labels = new HashMap<>();
    for (TestClick row : clicks) {
      ClickTrafficLabels.Acc acc = f.createAccumulator();
      for (TestClick other : clicks) {
        if (other.ad.equals(row.ad) && other.ts <= row.ts && other.ts >= row.ts - RANGE_MS) {
          accumulate(f, acc, other);
        }
      }
      labels.put(row.id, f.getValue(acc).get(row.id));
    }
    return labels;
  }

  /**
   * The aggregate as the streaming OVER runs it: per ad and per event time in order, the rows
   * of that time accumulated, those out of the range retracted, one value for all the peers.
   */
  static Map<String, String> overStreaming(List<TestClick> clicks) {
    ClickTrafficLabels f = new ClickTrafficLabels();
    Map<String, String> labels = new HashMap<>();
    Map<String, TreeMap<Long, List<TestClick>>> byAd = new TreeMap<>();
    for (TestClick c : clicks) {
      byAd.computeIfAbsent(c.ad, a -> new TreeMap<>())
          .computeIfAbsent(c.ts, t -> new ArrayList<>()).add(c);
    }
    for (TreeMap<Long, List<TestClick>> ad : byAd.values()) {
      ClickTrafficLabels.Acc acc = f.createAccumulator();
      List<TestClick> inWindow = new ArrayList<>();
      for (Map.Entry<Long, List<TestClick>> time : ad.entrySet()) {
        for (TestClick c : time.getValue()) {
          accumulate(f, acc, c);
          inWindow.add(c);
        }
        for (TestClick old : new ArrayList<>(inWindow)) {
          if (old.ts < time.getKey() - RANGE_MS) {
            f.retract(acc, old.traffic, old.user, old.ip, old.ts, old.id, R, W, K);
            inWindow.remove(old);
          }
        }
        Map<String, String> value = f.getValue(acc);
        assertEquals(time.getValue().size(), value.size(), "one label per peer");
        for (TestClick c : time.getValue()) {
          labels.put(c.id, value.get(c.id));
        }
      }
    }
    return labels;
  }

  /** The labels of clicks of one ad, each checked the three ways. */
  private static Map<String, String> labels(TestClick... clicks) {
    List<TestClick> all = List.of(clicks);
    Map<String, String> expected = expected(all);
    assertEquals(expected, overBatch(all));
    assertEquals(expected, overStreaming(all));
    return expected;
  }

  @Test
  void aRepeatIsLessThanTheRepeatWindowAfterTheSameUsersClick() {
    Map<String, String> labels = labels(
        click("a1", 0, "u1", "10.0.0.1"),
        click("a2", 9_999, "u1", "10.0.0.2"),
        click("b1", 100_000, "u2", "10.0.0.3"),
        click("b2", 110_000, "u2", "10.0.0.4"));
    assertEquals(ClickRules.VALID, labels.get("a1"));
    assertEquals(ClickRules.REPEAT_CLICK, labels.get("a2"));
    assertEquals(ClickRules.VALID, labels.get("b1"));
    assertEquals(ClickRules.VALID, labels.get("b2"));
  }

  @Test
  void clicksOfOneTimeAreOrderedByTheirIds() {
    Map<String, String> labels = labels(
        click("z", 5_000, "u1", "10.0.0.1"),
        click("m", 5_000, "u1", "10.0.0.2"),
        click("a", 5_000, "u1", "10.0.0.3"));
    assertEquals(Map.of("a", ClickRules.VALID, "m", ClickRules.REPEAT_CLICK,
        "z", ClickRules.REPEAT_CLICK), labels);
  }

  @Test
  void theFourthClickOfAnIpKeyWithinTheIpWindowIsIpFrequency() {
    Map<String, String> labels = labels(
        click("c1", 0, "u1", "192.0.2.7"),
        click("c2", 60_000, "u2", "192.0.2.7"),
        click("c3", 120_000, "u3", "192.0.2.7"),
        click("c4", 180_000, "u4", "192.0.2.7"),
        click("c5", 190_000, "u5", "192.0.2.8"));
    assertEquals(ClickRules.VALID, labels.get("c3"));
    assertEquals(ClickRules.IP_FREQUENCY, labels.get("c4"));
    assertEquals(ClickRules.VALID, labels.get("c5"));
  }

  @Test
  void anIpv6Slash64IsOneIpKey() {
    Map<String, String> labels = labels(
        click("c1", 0, "u1", "2001:db8:1:2::1"),
        click("c2", 1_000, "u2", "2001:db8:1:2:aaaa:bbbb:cccc:dddd"),
        click("c3", 2_000, "u3", "2001:DB8:1:2:ffff::9"),
        click("c4", 3_000, "u4", "2001:db8:1:2::ffff:1.2.3.4"),
        click("c5", 4_000, "u5", "2001:db8:1:3::1"));
    assertEquals(ClickRules.IP_FREQUENCY, labels.get("c4"));
    assertEquals(ClickRules.VALID, labels.get("c5")); // another /64
  }

  @Test
  void aClickTheIpWindowBeforeIsNotCounted() {
    Map<String, String> labels = labels(
        click("c1", 0, "u1", "192.0.2.7"),
        click("c2", 60_000, "u2", "192.0.2.7"),
        click("c3", 120_000, "u3", "192.0.2.7"),
        click("c4", W, "u4", "192.0.2.7"),
        click("c5", W + 1, "u5", "192.0.2.7"));
    assertEquals(ClickRules.VALID, labels.get("c4")); // c2, c3 only
    assertEquals(ClickRules.IP_FREQUENCY, labels.get("c5")); // c2, c3, c4
  }

  @Test
  void theStatelessLabelWinsAndABotsClickStillCounts() {
    Map<String, String> labels = labels(
        click("a", 0, "u1", "10.0.0.1"),
        click("b", 1_000, "u1", "10.0.0.1", "bot_user_agent"),
        click("c", 20_000, "u2", "10.0.0.2", "datacenter_ip"),
        click("d", 25_000, "u2", "10.0.0.3"),
        click("e", 26_000, "u3", "10.0.0.1"),
        click("f", 27_000, "u4", "10.0.0.1"));
    assertEquals(ClickRules.VALID, labels.get("a"));
    assertEquals("bot_user_agent", labels.get("b")); // a repeat too
    assertEquals("datacenter_ip", labels.get("c"));
    assertEquals(ClickRules.REPEAT_CLICK, labels.get("d")); // after c, a datacenter click
    assertEquals(ClickRules.VALID, labels.get("e")); // a, b: two
    assertEquals(ClickRules.IP_FREQUENCY, labels.get("f")); // a, b, e
  }

  @Test
  void aRepeatBeatsIpFrequency() {
    Map<String, String> labels = labels(
        click("a", 0, "u1", "10.0.0.1"),
        click("b", 1_000, "u2", "10.0.0.1"),
        click("c", 2_000, "u3", "10.0.0.1"),
        click("d", 3_000, "u3", "10.0.0.1"));
    assertEquals(ClickRules.REPEAT_CLICK, labels.get("d"));
  }

  @Test
  void theValueLabelsOnlyTheNewestRowsAndIgnoresRowsBeyondTheLookback() {
    ClickTrafficLabels f = new ClickTrafficLabels();
    ClickTrafficLabels.Acc acc = f.createAccumulator();
    assertEquals(Map.of(), f.getValue(acc));
    for (TestClick c : List.of(click("old", 2_000 - W, "u1", "10.0.0.1"),
        click("x", 1_000, "u9", "10.0.0.1"), click("x2", 1_500, "u8", "10.0.0.1"),
        click("y", 2_000, "u9", "10.0.0.2"), click("new", 2_000, "u1", "10.0.0.1"))) {
      accumulate(f, acc, c);
    }
    // "old" is W before the newest rows: in the OVER's range, not in the rules' window (with
    // it, "new" would have 3 clicks of its ip before it). "new" comes before "y".
    assertEquals(Map.of("y", ClickRules.REPEAT_CLICK, "new", ClickRules.VALID), f.getValue(acc));
    f.retract(acc, null, "u9", "10.0.0.1", T0 + 2_000, "y", R, W, K);
    assertEquals(Map.of("new", ClickRules.VALID), f.getValue(acc));
    f.resetAccumulator(acc);
    assertEquals(Map.of(), f.getValue(acc));
  }

  @Test
  void theParametersComeFromTheCall() {
    ClickTrafficLabels f = new ClickTrafficLabels();
    ClickTrafficLabels.Acc acc = f.createAccumulator();
    f.accumulate(acc, null, "u1", "10.0.0.1", T0, "a", 30_000L, W, 1);
    f.accumulate(acc, null, "u1", "10.0.0.2", T0 + 20_000, "b", 30_000L, W, 1);
    assertEquals(Map.of("b", ClickRules.REPEAT_CLICK), f.getValue(acc));
    f.accumulate(acc, null, "u2", "10.0.0.2", T0 + 40_000, "c", 30_000L, W, 1);
    assertEquals(Map.of("c", ClickRules.IP_FREQUENCY), f.getValue(acc)); // K = 1
  }

  /**
   * Random clicks over 12 minutes on 2 ads with few users and ip keys, ties and bursts: many
   * of each label.
   */
  static List<TestClick> randomClicks(long seed, int count) {
    Random random = new Random(seed);
    String[] users = {"u1", "u2", "u3", "u4", "u5", "u6", "u7", "u8"};
    String[] ips = {"10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6",
        "10.0.0.7", "10.0.0.8", "10.0.0.9", "10.0.0.10", "10.0.0.11", "10.0.0.12",
        "2001:db8::1", "2001:db8::2", "2001:db8:0:1::1", "not-an-ip"};
    Set<String> ids = new HashSet<>();
    List<TestClick> clicks = new ArrayList<>();
    for (int i = 0; i < count; i++) {
      String id;
      do {
        id = String.format("e%05d", random.nextInt(100_000));
      } while (!ids.add(id));
      long ts;
      if (!clicks.isEmpty() && random.nextInt(4) == 0) {
        TestClick near = clicks.get(random.nextInt(clicks.size()));
        ts = near.ts + (random.nextBoolean() ? 0 : random.nextInt(15_000));
      } else {
        ts = T0 + random.nextInt(12 * 60_000);
      }
      ts = Math.min(ts, T0 + 12 * 60_000 - 1);
      int t = random.nextInt(20);
      String traffic = t == 0 ? "bot_user_agent" : t == 1 ? "datacenter_ip" : null;
      clicks.add(new TestClick(random.nextInt(3) == 0 ? "ad-2" : "ad-1", id, ts,
          users[random.nextInt(users.length)], ips[random.nextInt(ips.length)], traffic));
    }
    return clicks;
  }

  @Test
  void theAggregateAsAnOverWindowLabelsAsTheRulesOverTheSortedClicks() {
    for (long seed = 1; seed <= 5; seed++) {
      List<TestClick> clicks = randomClicks(seed, 200);
      Map<String, String> expected = expected(clicks);
      assertEquals(expected, overBatch(clicks), "seed " + seed);
      assertEquals(expected, overStreaming(clicks), "seed " + seed);
      assertTrue(new HashSet<>(expected.values()).containsAll(List.of(ClickRules.VALID,
          ClickRules.REPEAT_CLICK, ClickRules.IP_FREQUENCY, "bot_user_agent")),
          "all labels occur: " + expected.values());
    }
  }

  /** The rules' sliding windows give what the definition gives, click by click. */
  @Test
  void theSlidingWindowsAreTheDefinition() {
    ClickRules rules = ClickRules.defaults();
    for (long seed = 11; seed <= 15; seed++) {
      List<TestClick> clicks = randomClicks(seed, 200);
      clicks.removeIf(c -> !c.ad.equals("ad-1"));
      clicks.sort(ORDER);
      List<ClickRules.Click> sorted = new ArrayList<>();
      for (TestClick c : clicks) {
        sorted.add(c.rules());
      }
      for (int i = 0; i < sorted.size(); i++) {
        ClickRules.Click c = sorted.get(i);
        boolean repeat = false;
        int sameIp = 0;
        for (int j = 0; j < i; j++) {
          ClickRules.Click e = sorted.get(j);
          repeat |= e.user.equals(c.user) && c.ts - e.ts < R;
          sameIp += e.ipKey.equals(c.ipKey) && c.ts - e.ts < W ? 1 : 0;
        }
        String label = c.traffic != null ? c.traffic.toString() : repeat ? ClickRules.REPEAT_CLICK
            : sameIp >= K ? ClickRules.IP_FREQUENCY : ClickRules.VALID;
        assertEquals(label, rules.label(sorted, i), c.toString());
      }
      // A run in the middle labelled at once is labelled as click by click.
      String[] run = rules.labels(sorted, 20, 40);
      for (int i = 20; i < 40; i++) {
        assertEquals(rules.label(sorted, i), run[i - 20]);
      }
    }
  }
}
