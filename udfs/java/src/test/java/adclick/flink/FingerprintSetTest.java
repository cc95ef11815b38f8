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
        assertTrue(set.add(random.nextLong(), random.nextLong(), second, second, HORIZON_S));
      }
    }
    assertEquals(60_000, set.alive(20 * HORIZON_S - 1, HORIZON_S));
    // Rebuilt at 3/4 full to twice the live ids: at most 4 slots per live id (a power of two).
    assertTrue(set.capacity() <= 262_144, "capacity " + set.capacity());
  }

  @Test
  void aCheckpointWritesTheLiveEntriesOnly16BytesEach() throws Exception {
    FingerprintSet set = new FingerprintSet();
    for (long id = 1; id <= 100; id++) {
      set.add(id * 0x9E3779B97F4A7C15L, id, id < 40 ? 0 : 30, id < 40 ? 0 : 30, HORIZON_S);
    }
    ByteArrayOutputStream out = new ByteArrayOutputStream();
    set.write(out, HORIZON_S + 1, HORIZON_S); // the 39 first seen at 0 have expired
    assertEquals(Integer.BYTES + 61 * FingerprintSet.BYTES_PER_ENTRY, out.size());
    FingerprintSet restored = new FingerprintSet();
    restored.read(new ByteArrayInputStream(out.toByteArray()));
    assertEquals(61, restored.alive(HORIZON_S + 1, HORIZON_S));
    long now = HORIZON_S + 1;
    assertFalse(restored.add(50 * 0x9E3779B97F4A7C15L, 50, now, now, HORIZON_S));
    assertTrue(restored.add(5 * 0x9E3779B97F4A7C15L, 5, now, now, HORIZON_S));
  }

  @Test
  void anEntryStampedAheadOfTheClockLivesFromItsStamp() {
    FingerprintSet set = new FingerprintSet();
    assertTrue(set.add(1, 1, 100, 40, HORIZON_S)); // an event 60 s ahead of the clock
    assertFalse(set.add(1, 1, 100, 100 + HORIZON_S - 1, HORIZON_S));
    assertTrue(set.add(1, 1, 200, 100 + HORIZON_S, HORIZON_S)); // expired: stamped anew
    assertFalse(set.add(1, 1, 200, 200, HORIZON_S));
  }

  @Test
  void aFingerprintOfZeroIsAnIdLikeAnother() {
    FingerprintSet set = new FingerprintSet();
    assertTrue(set.add(0, 0, 0, 0, HORIZON_S));
    assertFalse(set.add(0, 0, 1, 1, HORIZON_S));
    assertTrue(set.add(0, 1L << 32, 1, 1, HORIZON_S));
  }
}
