package adclick.flink;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import org.apache.flink.table.data.StringData;
import org.junit.jupiter.api.Test;

/**
 * The click table's own promises: a click is found by its fingerprint with its attributes
 * (ad_id, country, device, traffic) and time while alive (the clock less than the retention
 * past its click time), twins are refused, rebuilds drop expired clicks without mixing up
 * attributes, the dictionary's codes stay, and a table rebuilt from its entries and attributes
 * (a restore) holds exactly the alive clicks, also from a dictionary written before the
 * traffic labels (read as valid).
 */
class ClickTableTest {

  private static final long RETENTION_MS = 1_000_000;
  private static final String[] LABELS =
      {"valid", "bot_user_agent", "datacenter_ip", "repeat_click", "ip_frequency"};

  /** A click: its id's fingerprint, attributes and time. */
  private static final class Click {
    final String id;
    final long hi;
    final long lo;
    final String adId;
    final String country;
    final String device;
    final String traffic;
    final long clickMs;

    Click(String id, String adId, String country, String device, long clickMs) {
      this(id, adId, country, device, "valid", clickMs);
    }

    Click(String id, String adId, String country, String device, String traffic,
          long clickMs) {
      EventKey key = new EventKey();
      key.of(id);
      this.id = id;
      this.hi = key.hi;
      this.lo = key.lo;
      this.adId = adId;
      this.country = country;
      this.device = device;
      this.traffic = traffic;
      this.clickMs = clickMs;
    }

    boolean addTo(ClickTable table, long nowMs) {
      return table.add(hi, lo, StringData.fromString(adId), StringData.fromString(country),
          StringData.fromString(device), StringData.fromString(traffic), clickMs, nowMs,
          RETENTION_MS);
    }

    boolean aliveAt(long nowMs) {
      return nowMs - clickMs < RETENTION_MS;
    }
  }

  /** Asserts the click is in the table at nowMs with its attributes and time. */
  private static void assertHeld(ClickTable table, Click click, long nowMs) {
    int slot = table.find(click.hi, click.lo, nowMs, RETENTION_MS);
    assertTrue(slot >= 0, click.id + " not found at " + nowMs);
    StringData[] attributes = table.attributes(slot);
    assertEquals(4, attributes.length);
    assertEquals(click.adId, attributes[0].toString(), click.id);
    assertEquals(click.country, attributes[1].toString(), click.id);
    assertEquals(click.device, attributes[2].toString(), click.id);
    assertEquals(click.traffic, attributes[3] == null ? null : attributes[3].toString(),
        click.id);
    assertEquals(click.clickMs, table.clickMs(slot), click.id);
  }

  @Test
  void anAddedClickIsFoundWithItsAttributesAndTime() {
    ClickTable table = new ClickTable();
    Click a = new Click("a", "ad-1", "FR", "mobile", 5000);
    Click b = new Click("b", "ad-2", "DE", "desktop", 6000);
    assertTrue(a.addTo(table, 6000));
    assertTrue(b.addTo(table, 6000));
    assertHeld(table, a, 6000);
    assertHeld(table, b, 6000);
    Click absent = new Click("c", "ad-1", "FR", "mobile", 5000);
    assertEquals(-1, table.find(absent.hi, absent.lo, 6000, RETENTION_MS));
    assertEquals(2, table.alive(6000, RETENTION_MS));
    assertEquals(2, table.dictionarySize());
  }

  @Test
  void clicksOfTheSameAttributesShareOneCode() {
    ClickTable table = new ClickTable();
    for (int i = 0; i < 10; i++) {
      assertTrue(new Click("id-" + i, "ad-" + (i % 3), "FR", "mobile", 0).addTo(table, 0));
    }
    assertEquals(3, table.dictionarySize());
    assertEquals(10, table.alive(0, RETENTION_MS));
  }

  @Test
  void aTwinFingerprintIsRefusedWhileTheFirstIsAlive() {
    ClickTable table = new ClickTable();
    Click first = new Click("a", "ad-1", "FR", "mobile", 1000);
    assertTrue(first.addTo(table, 1000));
    // Another click of the same fingerprint: refused, the first one stays as it was.
    assertFalse(table.add(first.hi, first.lo, StringData.fromString("ad-9"),
        StringData.fromString("US"), StringData.fromString("tv"), StringData.fromString("valid"),
        2000, 2000, RETENTION_MS));
    assertHeld(table, first, 2000);
    // 96 bits: the low 32 bits of lo are not kept, so a fingerprint differing only there is a
    // twin too; one differing in the bits kept is not.
    assertFalse(table.add(first.hi, first.lo ^ 0xFFFF_FFFFL, StringData.fromString("ad-9"),
        StringData.fromString("US"), StringData.fromString("tv"),
        StringData.fromString("bot_user_agent"), 2000, 2000, RETENTION_MS));
    assertTrue(table.add(first.hi, first.lo ^ (1L << 40), StringData.fromString("ad-9"),
        StringData.fromString("US"), StringData.fromString("tv"),
        StringData.fromString("valid"), 2000, 2000, RETENTION_MS));
    assertHeld(table, first, 2000);
    assertEquals(2, table.alive(2000, RETENTION_MS));
  }

  @Test
  void aTwinIsKeptOnceTheFirstHasExpired() {
    ClickTable table = new ClickTable();
    Click first = new Click("a", "ad-1", "FR", "mobile", 1000);
    assertTrue(first.addTo(table, 1000));
    long expiredAt = 1000 + RETENTION_MS;
    Click again = new Click("a", "ad-2", "DE", "desktop", expiredAt);
    assertFalse(again.addTo(table, expiredAt - 1));
    assertTrue(again.addTo(table, expiredAt));
    assertHeld(table, again, expiredAt);
  }

  @Test
  void aClickExpiresExactlyAtTheRetention() {
    ClickTable table = new ClickTable();
    Click click = new Click("a", "ad-1", "FR", "mobile", 10_000);
    assertTrue(click.addTo(table, 0));
    assertHeld(table, click, 10_000);
    assertHeld(table, click, 10_000 + RETENTION_MS - 1);
    assertEquals(1, table.alive(10_000 + RETENTION_MS - 1, RETENTION_MS));
    assertEquals(-1, table.find(click.hi, click.lo, 10_000 + RETENTION_MS, RETENTION_MS));
    assertEquals(0, table.alive(10_000 + RETENTION_MS, RETENTION_MS));
  }

  @Test
  void attributesAndTimesSurviveManyRebuilds() {
    // 300 steps of 200 clicks, 25 steps a retention: the table is rebuilt many times, dropping
    // the expired clicks and renumbering the dictionary (whose attributes change over time:
    // the ads of a step are new every 10 steps).
    ClickTable table = new ClickTable();
    long stepMs = RETENTION_MS / 25;
    List<Click> all = new ArrayList<>();
    Set<String> combinations = new HashSet<>();
    Set<Integer> capacities = new HashSet<>();
    int steps = 300;
    for (int step = 0; step < steps; step++) {
      long nowMs = step * stepMs;
      for (int i = 0; i < 200; i++) {
        int n = step * 200 + i;
        Click click = new Click("click-" + n, "ad-" + (step / 10) + "-" + (n % 7),
            "C" + (n % 5), n % 3 == 0 ? "mobile" : "desktop", LABELS[n % 13 % LABELS.length],
            nowMs - (n % 11) * 1000);
        assertTrue(click.addTo(table, nowMs), click.id);
        all.add(click);
        combinations.add(click.adId + "/" + click.country + "/" + click.device + "/"
            + click.traffic);
      }
      capacities.add(table.capacity());
      if (step % 37 == 0) {
        for (Click click : all) {
          if (click.aliveAt(nowMs)) {
            assertHeld(table, click, nowMs);
          }
        }
      }
    }
    long nowMs = (steps - 1) * stepMs;
    int alive = 0;
    for (Click click : all) {
      if (click.aliveAt(nowMs)) {
        alive++;
        assertHeld(table, click, nowMs);
      } else {
        assertEquals(-1, table.find(click.hi, click.lo, nowMs, RETENTION_MS), click.id);
      }
    }
    assertEquals(alive, table.alive(nowMs, RETENTION_MS));
    assertTrue(alive > 4000 && alive < 6000, "alive " + alive);
    // Memory follows the live clicks: at most 4 slots a live click (rebuilt to load 1/2 at 3/4).
    assertTrue(table.capacity() <= 4 * alive, "capacity " + table.capacity());
    assertTrue(capacities.size() > 1, "never rebuilt: " + capacities);
    // A code stays valid in the checkpointed segments: one per combination ever seen.
    assertEquals(combinations.size(), table.dictionarySize());
  }

  @Test
  void aRebuildDropsTheExpiredClicksAndKeepsEveryCode() {
    ClickTable table = new ClickTable();
    List<Click> old = new ArrayList<>();
    for (int i = 0; i < 100; i++) {
      Click click = new Click("old-" + i, "ad-old-" + i, "FR", "mobile", 0);
      assertTrue(click.addTo(table, 0));
      old.add(click);
    }
    // All old clicks expired: the next rebuild drops them; their codes stay.
    long nowMs = RETENTION_MS;
    List<Click> fresh = new ArrayList<>();
    int capacityBefore = table.capacity();
    for (int i = 0; i < 4 * capacityBefore; i++) {
      Click click = new Click("new-" + i, "ad-new-" + (i % 3), "DE", "desktop", nowMs);
      assertTrue(click.addTo(table, nowMs));
      fresh.add(click);
    }
    assertEquals(103, table.dictionarySize());
    for (Click click : fresh) {
      assertHeld(table, click, nowMs);
    }
    for (Click click : old) {
      // Not there at all any more: not found even at a time it would still be alive at.
      assertEquals(-1, table.find(click.hi, click.lo, 0, RETENTION_MS), click.id);
    }
  }

  /** The entry the table holds for a click, three longs, as a checkpoint's segment has it. */
  private static long[] entry(ClickTable table, Click click) {
    int code = table.codeOf(StringData.fromString(click.adId),
        StringData.fromString(click.country), StringData.fromString(click.device),
        StringData.fromString(click.traffic));
    return new long[] {ClickTable.high(click.hi), ClickTable.rest(click.lo, code),
        click.clickMs};
  }

  /** What newAttributes writes, read back into another table. */
  private static void copyAttributes(ClickTable from, ClickTable to) throws Exception {
    ByteArrayOutputStream bytes = new ByteArrayOutputStream();
    try (DataOutputStream out = new DataOutputStream(bytes)) {
      assertTrue(from.newAttributes(out));
    }
    DataInputStream in = new DataInputStream(new ByteArrayInputStream(bytes.toByteArray()));
    to.restoreAttributes(in);
    assertEquals(-1, in.read(), "read everything written");
  }

  @Test
  void aTableRebuiltFromItsEntriesHoldsExactlyTheAliveClicks() throws Exception {
    ClickTable table = new ClickTable();
    List<Click> clicks = new ArrayList<>();
    List<long[]> entries = new ArrayList<>();
    for (int i = 0; i < 500; i++) {
      // Times from 0 to 499,000: at the restore those before 100,000 have expired.
      Click click = new Click("c-" + i, "ad-" + (i % 13), i % 2 == 0 ? "FR" : "ES",
          i % 3 == 0 ? "mobile" : "desktop", i * 1000L);
      assertTrue(click.addTo(table, i * 1000L));
      clicks.add(click);
      entries.add(entry(table, click));
    }
    long nowMs = 100_000 + RETENTION_MS - 1;
    ClickTable restored = new ClickTable();
    copyAttributes(table, restored);
    for (long[] entry : entries) {
      restored.merge(entry[0], entry[1], entry[2], nowMs, RETENTION_MS);
    }
    assertEquals(400, restored.alive(nowMs, RETENTION_MS));
    // Nothing expired was taken: counted even at a time all would be alive, 400 are there.
    assertEquals(400, restored.alive(0, RETENTION_MS));
    for (Click click : clicks) {
      if (click.aliveAt(nowMs)) {
        assertHeld(restored, click, nowMs);
      } else {
        assertEquals(-1, restored.find(click.hi, click.lo, click.clickMs, RETENTION_MS),
            click.id);
      }
    }
    // An entry merged twice (an id in two segments) is held once.
    long[] again = entries.get(450);
    restored.merge(again[0], again[1], again[2], nowMs, RETENTION_MS);
    assertEquals(400, restored.alive(nowMs, RETENTION_MS));
    // The restored table goes on: a twin is refused, a new click is added.
    Click twin = clicks.get(499);
    assertFalse(twin.addTo(restored, nowMs));
    Click fresh = new Click("fresh", "ad-new", "IT", "tv", nowMs);
    assertTrue(fresh.addTo(restored, nowMs));
    assertHeld(restored, fresh, nowMs);
    assertHeld(restored, clicks.get(250), nowMs);
  }

  @Test
  void eachCodeIsWrittenOnceAfterItIsNew() throws Exception {
    ClickTable table = new ClickTable();
    ByteArrayOutputStream bytes = new ByteArrayOutputStream();
    DataOutputStream out = new DataOutputStream(bytes);
    assertFalse(table.newAttributes(out), "an empty table has no new codes");
    assertTrue(new Click("a", "ad-1", "FR", "mobile", 0).addTo(table, 0));
    assertTrue(new Click("b", "ad-1", "FR", "mobile", 0).addTo(table, 0));
    assertTrue(table.newAttributes(out));
    int once = bytes.size();
    assertFalse(table.newAttributes(out), "ad-1/FR/mobile was written already");
    assertEquals(once, bytes.size());
    assertTrue(new Click("c", "ad-2", "DE", "desktop", 0).addTo(table, 0));
    assertTrue(table.newAttributes(out));
    // A table restored from both writes knows both codes, as the first table numbered them.
    ClickTable restored = new ClickTable();
    DataInputStream in = new DataInputStream(new ByteArrayInputStream(bytes.toByteArray()));
    restored.restoreAttributes(in);
    restored.restoreAttributes(in);
    assertEquals(2, restored.dictionarySize());
    assertFalse(restored.newAttributes(out), "restored codes are written already");
    Click c = new Click("c", "ad-2", "DE", "desktop", 0);
    long[] e = entry(table, c);
    restored.merge(e[0], e[1], e[2], 0, RETENTION_MS);
    assertHeld(restored, c, 0);
  }

  @Test
  void clicksOfOneAdCountryAndDeviceKeepTheirOwnLabels() throws Exception {
    ClickTable table = new ClickTable();
    List<Click> clicks = new ArrayList<>();
    for (int i = 0; i < 50; i++) {
      Click click = new Click("c-" + i, "ad-1", "FR", "mobile", LABELS[i % LABELS.length],
          i * 1000L);
      assertTrue(click.addTo(table, 0));
      clicks.add(click);
    }
    // One code per label: the label adds dictionary entries, never bytes to a click.
    assertEquals(LABELS.length, table.dictionarySize());
    for (Click click : clicks) {
      assertHeld(table, click, 0);
    }
    // Restored from its entries and attributes, each click has its label still.
    ClickTable restored = new ClickTable();
    copyAttributes(table, restored);
    for (Click click : clicks) {
      long[] e = entry(table, click);
      restored.merge(e[0], e[1], e[2], 0, RETENTION_MS);
    }
    assertEquals(LABELS.length, restored.dictionarySize());
    for (Click click : clicks) {
      assertHeld(restored, click, 0);
    }
  }

  @Test
  void aClickWithoutALabelIsKeptWithoutOne() throws Exception {
    ClickTable table = new ClickTable();
    Click unlabelled = new Click("a", "ad-1", "FR", "mobile", null, 0);
    Click valid = new Click("b", "ad-1", "FR", "mobile", "valid", 0);
    assertTrue(unlabelled.addTo(table, 0));
    assertTrue(valid.addTo(table, 0));
    assertTrue(new Click("c", "ad-1", "FR", "mobile", null, 0).addTo(table, 0));
    assertEquals(2, table.dictionarySize());
    assertHeld(table, unlabelled, 0);
    assertHeld(table, valid, 0);
    ClickTable restored = new ClickTable();
    copyAttributes(table, restored);
    for (Click click : List.of(unlabelled, valid)) {
      long[] e = entry(table, click);
      restored.merge(e[0], e[1], e[2], 0, RETENTION_MS);
      assertHeld(restored, click, 0);
    }
    // The restored null is the code of a new click without a label too.
    assertTrue(new Click("d", "ad-1", "FR", "mobile", null, 0).addTo(restored, 0));
    assertEquals(2, restored.dictionarySize());
  }

  /**
   * Writes the codes of these clicks, numbered in their order, as newAttributes did before the
   * traffic labels (what a checkpoint of an earlier release holds): their count, then each code
   * and its three strings, ad_id, country, device.
   */
  private static byte[] firstFormat(List<Click> clicks, int firstCode) throws Exception {
    List<String> seen = new ArrayList<>();
    ByteArrayOutputStream codes = new ByteArrayOutputStream();
    DataOutputStream data = new DataOutputStream(codes);
    for (Click click : clicks) {
      String key = click.adId + "/" + click.country + "/" + click.device;
      if (!seen.contains(key)) {
        data.writeInt(firstCode + seen.size());
        data.writeUTF(click.adId);
        data.writeUTF(click.country);
        data.writeUTF(click.device);
        seen.add(key);
      }
    }
    data.flush();
    ByteArrayOutputStream bytes = new ByteArrayOutputStream();
    DataOutputStream out = new DataOutputStream(bytes);
    out.writeInt(seen.size());
    out.write(codes.toByteArray());
    out.flush();
    return bytes.toByteArray();
  }

  @Test
  void aDictionaryOfTheFirstFormatIsReadAsValidClicks() throws Exception {
    // Before the labels: two segments of the first format, codes 0-1 then 2, and the entries.
    List<Click> before = List.of(
        new Click("a", "ad-1", "FR", "mobile", 0), new Click("b", "ad-2", "DE", "desktop", 0),
        new Click("c", "ad-1", "FR", "mobile", 0));
    Click third = new Click("d", "ad-3", "ES", "tv", 0);
    byte[] first = firstFormat(before, 0);
    byte[] second = firstFormat(List.of(third), 2);
    long[][] entries = new long[4][];
    int n = 0;
    for (Click click : List.of(before.get(0), before.get(1), before.get(2), third)) {
      int code = click == third ? 2 : click.adId.equals("ad-1") ? 0 : 1;
      entries[n++] = new long[] {ClickTable.high(click.hi), ClickTable.rest(click.lo, code),
          click.clickMs};
    }

    ClickTable restored = new ClickTable();
    for (byte[] segment : List.of(first, second)) {
      DataInputStream in = new DataInputStream(new ByteArrayInputStream(segment));
      restored.restoreAttributes(in);
      assertEquals(-1, in.read(), "read everything written");
    }
    for (long[] e : entries) {
      restored.merge(e[0], e[1], e[2], 0, RETENTION_MS);
    }
    assertEquals(3, restored.dictionarySize());
    // Every click counted before the labels was valid.
    for (Click click : List.of(before.get(0), before.get(1), before.get(2), third)) {
      assertHeld(restored, click, 0);
    }
    ByteArrayOutputStream bytes = new ByteArrayOutputStream();
    DataOutputStream out = new DataOutputStream(bytes);
    assertFalse(restored.newAttributes(out), "the restored codes are written already");

    // A valid click of a known ad takes its code; a bot's gets a new one, written in the
    // labelled format only.
    Click valid = new Click("e", "ad-2", "DE", "desktop", "valid", 0);
    Click bot = new Click("f", "ad-2", "DE", "desktop", "bot_user_agent", 0);
    assertTrue(valid.addTo(restored, 0));
    assertTrue(bot.addTo(restored, 0));
    assertEquals(4, restored.dictionarySize());
    assertTrue(restored.newAttributes(out));
    out.flush();
    byte[] labelled = bytes.toByteArray();
    assertEquals(ClickTable.FORMAT_FOUR_STRINGS,
        new DataInputStream(new ByteArrayInputStream(labelled)).readInt());

    // A later restore reads both formats, in the order written.
    ClickTable again = new ClickTable();
    for (byte[] segment : List.of(first, second, labelled)) {
      DataInputStream in = new DataInputStream(new ByteArrayInputStream(segment));
      again.restoreAttributes(in);
      assertEquals(-1, in.read(), "read everything written");
    }
    assertEquals(4, again.dictionarySize());
    for (long[] e : entries) {
      again.merge(e[0], e[1], e[2], 0, RETENTION_MS);
    }
    for (Click click : List.of(valid, bot)) {
      long[] e = entry(restored, click);
      again.merge(e[0], e[1], e[2], 0, RETENTION_MS);
    }
    for (Click click : List.of(before.get(0), before.get(1), before.get(2), third, valid, bot)) {
      assertHeld(again, click, 0);
    }
    assertEquals(entry(restored, valid)[1], entry(again, valid)[1]);
    assertEquals(4, again.dictionarySize());
  }

  @Test
  void aDictionaryOfAnUnknownFormatIsRefused() {
    byte[] bytes = {(byte) 0xFF, (byte) 0xFF, (byte) 0xFF, (byte) 0xF0, 0, 0, 0, 0};
    assertThrows(java.io.IOException.class, () -> new ClickTable().restoreAttributes(
        new DataInputStream(new ByteArrayInputStream(bytes))));
  }
}
