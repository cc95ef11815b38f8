package adclick.flink;

import java.io.DataInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.nio.ByteBuffer;

/**
 * The event ids one key group of the dedup has seen within their horizon: 96 bits of each id's
 * fingerprint and the event-time second it expires at (its stamp plus its event type's
 * horizon, see CompactDeduplicateOperator), in one open-addressing table (linear probing) of
 * primitive longs, 16 bytes a slot.
 *
 * <p>Why this layout: Flink SQL's dedup keeps one state entry per id, with a TTL that Flink
 * checks and cleans up entry by entry (38-50 checkpointed bytes per id, and most of the job's
 * time, measured). Here a lookup is one probe sequence in one array, an entry's expiry is
 * compared with the clock (so ids of different horizons share the table), and expired entries are dropped in bulk when the table is
 * rebuilt, which it is when it fills (so memory follows the ids alive in the horizon, not all
 * ids ever seen). A checkpoint writes the live entries only, 16 bytes each.
 *
 * <p>96 bits: two different ids share a fingerprint only by chance, about n^2 / 2^97 for n ids
 * alive in the horizon, below 1e-12 for 180 million (an hour at 50,000 clicks/s).
 *
 * <p>Slot i holds {@code slots[2i]}: the fingerprint's high 64 bits (never 0: 0 marks an
 * empty slot), and {@code slots[2i + 1]}: the low 64 bits' upper half, then the expiry (a
 * second) as an unsigned 32-bit number (good until 2106). Not thread-safe: one per key group of
 * one operator.
 */
final class FingerprintSet {

  static final int BYTES_PER_ENTRY = 16;
  private static final int WRITE_CHUNK_BYTES = 1 << 16;
  private static final int MIN_CAPACITY = 16;
  private static final long LOW_HALF = 0xFFFF_FFFFL;
  private static final long HIGH_HALF = ~LOW_HALF;

  private long[] slots = new long[2 * MIN_CAPACITY];
  // Occupied slots, expired ones included (they are reused or dropped at the next rebuild).
  private int used;

  /**
   * Whether an event with this fingerprint, seen when the clock reads nowS (seconds), is the
   * first within its horizon: true if none is held, or the one held expired at nowS or before
   * (this one then takes its place, expiring at expiryS); false for a duplicate.
   */
  boolean add(long hi, long lo, long expiryS, long nowS) {
    if (4L * (used + 1) > 3L * capacity()) {
      rebuild(nowS);
    }
    long high = high(hi);
    long lowHalf = lo & HIGH_HALF;
    int mask = capacity() - 1;
    for (int i = slotOf(high, mask); ; i = (i + 1) & mask) {
      long slotHigh = slots[2 * i];
      if (slotHigh == 0) {
        slots[2 * i] = high;
        slots[2 * i + 1] = lowHalf | (expiryS & LOW_HALF);
        used++;
        return true;
      }
      long rest = slots[2 * i + 1];
      if (slotHigh == high && (rest & HIGH_HALF) == lowHalf) {
        if (alive(rest, nowS)) {
          return false;
        }
        slots[2 * i + 1] = lowHalf | (expiryS & LOW_HALF);
        return true;
      }
    }
  }

  /** Entries expiring after nowS. */
  int alive(long nowS) {
    int alive = 0;
    for (int i = 0; i < capacity(); i++) {
      if (slots[2 * i] != 0 && alive(slots[2 * i + 1], nowS)) {
        alive++;
      }
    }
    return alive;
  }

  /** Slots held on the heap (each 16 bytes), free ones included. */
  int capacity() {
    return slots.length / 2;
  }

  /** Writes the entries alive at nowS: their count, then 16 bytes each. */
  void write(OutputStream out, long nowS) throws IOException {
    ByteBuffer buffer = ByteBuffer.allocate(WRITE_CHUNK_BYTES);
    buffer.putInt(alive(nowS));
    for (int i = 0; i < capacity(); i++) {
      if (slots[2 * i] != 0 && alive(slots[2 * i + 1], nowS)) {
        if (buffer.remaining() < BYTES_PER_ENTRY) {
          out.write(buffer.array(), 0, buffer.position());
          buffer.clear();
        }
        buffer.putLong(slots[2 * i]).putLong(slots[2 * i + 1]);
      }
    }
    out.write(buffer.array(), 0, buffer.position());
  }

  /** Adds the entries write() wrote (this set must not hold any of them yet). */
  void read(InputStream in) throws IOException {
    DataInputStream data = new DataInputStream(in);
    read(data, data.readInt(), 0);
  }

  /**
   * Adds count entries of write()'s, whose count the caller has read, each one's second moved
   * by addS (a state written with stamps instead of expiries: addS is the horizon).
   */
  void read(DataInputStream data, int count, long addS) throws IOException {
    byte[] bytes = new byte[count * BYTES_PER_ENTRY];
    data.readFully(bytes);
    ByteBuffer buffer = ByteBuffer.wrap(bytes);
    grow(used + count);
    for (int n = 0; n < count; n++) {
      long high = buffer.getLong();
      long rest = buffer.getLong();
      put(high, (rest & HIGH_HALF) | (((rest & LOW_HALF) + addS) & LOW_HALF));
    }
  }

  /**
   * Adds an entry read back from a checkpoint (high and rest as entries() gives them) unless it
   * expired at nowS; an entry of the same fingerprint already held keeps the later expiry (an
   * id seen again after it expired is in two segments, the old one not yet dropped).
   */
  void merge(long high, long rest, long nowS) {
    if (!alive(rest, nowS)) {
      return;
    }
    grow(used + 1);
    int mask = capacity() - 1;
    for (int i = slotOf(high, mask); ; i = (i + 1) & mask) {
      long slotHigh = slots[2 * i];
      if (slotHigh == 0) {
        slots[2 * i] = high;
        slots[2 * i + 1] = rest;
        used++;
        return;
      }
      if (slotHigh == high && (slots[2 * i + 1] & HIGH_HALF) == (rest & HIGH_HALF)) {
        if ((rest & LOW_HALF) > (slots[2 * i + 1] & LOW_HALF)) {
          slots[2 * i + 1] = rest;
        }
        return;
      }
    }
  }

  /** The first long of an entry add() stores for this fingerprint. */
  static long high(long hi) {
    return hi == 0 ? 1 : hi;
  }

  /** The second long of an entry add() stores for this fingerprint and expiry. */
  static long rest(long lo, long expiryS) {
    return (lo & HIGH_HALF) | (expiryS & LOW_HALF);
  }

  /** The expiry (a second) an entry's second long holds. */
  static long expiryOf(long rest) {
    return rest & LOW_HALF;
  }

  /** The entries alive at nowS, two longs each (high, rest), as merge() takes them. */
  long[] entries(long nowS) {
    long[] out = new long[2 * alive(nowS)];
    int n = 0;
    for (int i = 0; i < capacity(); i++) {
      if (slots[2 * i] != 0 && alive(slots[2 * i + 1], nowS)) {
        out[n++] = slots[2 * i];
        out[n++] = slots[2 * i + 1];
      }
    }
    return out;
  }

  private static boolean alive(long rest, long nowS) {
    return (rest & LOW_HALF) > nowS;
  }

  private static int slotOf(long high, int mask) {
    // The fingerprint is MD5's: its bits are already uniform.
    return (int) (high ^ (high >>> 32)) & mask;
  }

  /** Drops the expired entries; sizes the table to twice the live ones (load 1/2). */
  private void rebuild(long nowS) {
    rehash(capacityFor(alive(nowS) + 1), nowS);
  }

  /** Makes room for entries without dropping any. */
  private void grow(int entries) {
    if (4L * entries > 3L * capacity()) {
      rehash(capacityFor(entries), Long.MIN_VALUE); // every entry is alive then
    }
  }

  /** Moves the entries alive at nowS into a table of this capacity. */
  private void rehash(int capacity, long nowS) {
    long[] old = slots;
    slots = new long[2 * capacity];
    used = 0;
    for (int i = 0; i < old.length; i += 2) {
      if (old[i] != 0 && alive(old[i + 1], nowS)) {
        put(old[i], old[i + 1]);
      }
    }
  }

  private static int capacityFor(int entries) {
    int capacity = MIN_CAPACITY;
    while (capacity < 2L * entries) {
      capacity *= 2;
    }
    return capacity;
  }

  /** Stores an entry known to be absent. */
  private void put(long high, long rest) {
    int mask = capacity() - 1;
    int i = slotOf(high, mask);
    while (slots[2 * i] != 0) {
      i = (i + 1) & mask;
    }
    slots[2 * i] = high;
    slots[2 * i + 1] = rest;
    used++;
  }
}
