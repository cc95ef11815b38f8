package adclick.flink;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/** The set's own promises: memory follows the live ids, a checkpoint holds 16 bytes each. */
class FingerprintSetTest {

  private static final long HORIZON_S = 60;

  @Test
  void memoryFollowsTheIdsAliveNotAllIdsEverSeen() {
    FingerprintSet set = new FingerprintSet();
    SplittableRandom random = new SplittableRandom(7);
    // 1,000 new ids a second for 20 horizons: 60,000 alive at a time, 1.2 M seen.
    for (long second = 0; second < 20 * HORIZON_S; second++) {
      for (int i = 0; i < 1000; i++) {
        assertTrue(set.add(random.nextLong(), random.nextLong(), second + HORIZON_S, second));
      }
    }
    assertEquals(60_000, set.alive(20 * HORIZON_S - 1));
    // Rebuilt at 3/4 full to twice the live ids: at most 4 slots per live id (a power of two).
    assertTrue(set.capacity() <= 262_144, "capacity " + set.capacity());
  }

  @Test
  void aCheckpointWritesTheLiveEntriesOnly16BytesEach() throws Exception {
    FingerprintSet set = new FingerprintSet();
    for (long id = 1; id <= 100; id++) {
      set.add(id * 0x9E3779B97F4A7C15L, id, (id < 40 ? 0 : 30) + HORIZON_S, id < 40 ? 0 : 30);
    }
    ByteArrayOutputStream out = new ByteArrayOutputStream();
    set.write(out, HORIZON_S + 1); // the 39 first seen at 0 have expired
    assertEquals(Integer.BYTES + 61 * FingerprintSet.BYTES_PER_ENTRY, out.size());
    FingerprintSet restored = new FingerprintSet();
    restored.read(new ByteArrayInputStream(out.toByteArray()));
    assertEquals(61, restored.alive(HORIZON_S + 1));
    long now = HORIZON_S + 1;
    assertFalse(restored.add(50 * 0x9E3779B97F4A7C15L, 50, now + HORIZON_S, now));
    assertTrue(restored.add(5 * 0x9E3779B97F4A7C15L, 5, now + HORIZON_S, now));
  }

  @Test
  void anEntryStampedAheadOfTheClockLivesFromItsStamp() {
    FingerprintSet set = new FingerprintSet();
    assertTrue(set.add(1, 1, 100 + HORIZON_S, 40)); // an event 60 s ahead of the clock
    assertFalse(set.add(1, 1, 100 + HORIZON_S, 100 + HORIZON_S - 1));
    assertTrue(set.add(1, 1, 200 + HORIZON_S, 100 + HORIZON_S)); // expired: stamped anew
    assertFalse(set.add(1, 1, 200 + HORIZON_S, 200));
  }

  @Test
  void idsOfDifferentHorizonsShareATableEachExpiringAtItsOwnSecond() {
    FingerprintSet set = new FingerprintSet();
    assertTrue(set.add(1, 1, 100 + 3600, 100)); // a click: an hour
    assertTrue(set.add(2, 2, 100 + 600, 100)); // an impression: ten minutes
    assertFalse(set.add(2, 2, 699 + 600, 699));
    assertTrue(set.add(2, 2, 700 + 600, 700)); // expired at 700: first again
    assertFalse(set.add(1, 1, 700 + 3600, 700)); // the click's id is still held
    assertEquals(2, set.alive(700));
    assertEquals(1, set.alive(1300));
  }

  @Test
  void aStateOfStampsIsReadAsExpiriesWhenTheHorizonIsAdded() throws Exception {
    FingerprintSet stamps = new FingerprintSet();
    stamps.add(1, 1, 100, 0); // as the former format held it: the stamp, 100
    ByteArrayOutputStream out = new ByteArrayOutputStream();
    stamps.write(out, 0);
    java.io.DataInputStream in =
        new java.io.DataInputStream(new ByteArrayInputStream(out.toByteArray()));
    FingerprintSet restored = new FingerprintSet();
    restored.read(in, in.readInt(), HORIZON_S);
    assertFalse(restored.add(1, 1, 200 + HORIZON_S, 100 + HORIZON_S - 1));
    assertTrue(restored.add(1, 1, 200 + HORIZON_S, 100 + HORIZON_S));
  }

  @Test
  void aFingerprintOfZeroIsAnIdLikeAnother() {
    FingerprintSet set = new FingerprintSet();
    assertTrue(set.add(0, 0, 0 + HORIZON_S, 0));
    assertFalse(set.add(0, 0, 1 + HORIZON_S, 1));
    assertTrue(set.add(0, 1L << 32, 1 + HORIZON_S, 1));
  }
}
