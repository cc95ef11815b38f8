package adclick.flink;

import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import org.apache.flink.table.data.StringData;

/**
 * The counted clicks one key group of the attribution keeps for conversions to find: 96 bits
 * of each click_id's fingerprint, the click's time in milliseconds and a code for its (ad_id,
 * country, device, traffic), in one open-addressing table (linear probing) of primitive longs,
 * 24 bytes a slot; the codes' attributes in a dictionary beside it. traffic is the click's
 * invalid-traffic label ("valid", "bot_user_agent", ...): a label only adds dictionary entries,
 * never bytes to a click.
 *
 * <p>Why this layout: Flink SQL's regular join kept each click as a state entry of its own
 * (the row, its key and the TTL's timestamp: about 154 bytes per click checkpointed, and most
 * of the job's CPU, measured in docs/bench/). A click here is 24 bytes, checkpointed as such
 * (once: CompactAttributionOperator writes the clicks added since the last checkpoint); the
 * attributes of a click are one of few (ads x countries x devices x labels, the invalid
 * labels on a small share of them), each written once per key group, when its code is new.
 *
 * <p>A click is kept until the clock (event time, see CompactAttributionOperator) is the
 * retention past its time; expired clicks are dropped in bulk when the table fills and is
 * rebuilt. The dictionary only grows (a code stays valid in the checkpointed segments): by the
 * (ad, country, device, traffic) combinations a key group has seen, which new ads add to.
 *
 * <p>The dictionary's checkpointed form (newAttributes, restoreAttributes): a segment starts
 * with an int, the number of codes that follow in the first format (three strings a code: the
 * state of a release before the labels, whose counted clicks were all valid: read with traffic
 * "valid"), or a negative format tag: {@link #FORMAT_FOUR_STRINGS}, then the number of codes,
 * each four strings that may be null. Only the latter is written.
 *
 * <p>96 bits: a conversion finds another click than the one it names only if both ids share a
 * fingerprint, about n / 2^96 per conversion for n clicks held (below 1e-18 for 3.5e10, a week
 * at 50,000 clicks/s).
 *
 * <p>Slot i holds {@code slots[3i]}: the fingerprint's high 64 bits (never 0: 0 marks an empty
 * slot), {@code slots[3i + 1]}: the low 64 bits' upper half, then the attributes' code as an
 * unsigned 32-bit number, and {@code slots[3i + 2]}: the click's time. Not thread-safe: one per
 * key group of one operator.
 */
final class ClickTable {

  static final int BYTES_PER_CLICK = 24;
  /**
   * The tag a dictionary segment of four strings a code starts with; a segment of the first
   * format starts with its count of codes instead, never negative.
   */
  static final int FORMAT_FOUR_STRINGS = -4;
  /** The label of a click restored from a dictionary of the first format (no labels yet). */
  static final String VALID = "valid";
  /** The strings of a code: ad_id, country, device, traffic. */
  static final int ATTRIBUTES = 4;
  private static final int MIN_CAPACITY = 16;
  private static final long LOW_HALF = 0xFFFF_FFFFL;
  private static final long HIGH_HALF = ~LOW_HALF;

  private long[] slots = new long[3 * MIN_CAPACITY];
  // Occupied slots, expired ones included (dropped at the next rebuild).
  private int used;
  // The dictionary: a code is an index into attributes; codes finds a code by its key.
  private final List<StringData[]> attributes = new ArrayList<>();
  private final Map<Attributes, Integer> codes = new HashMap<>();
  // Looks a row's attributes up without copying them (only a new code's are copied).
  private final Attributes probe = new Attributes();
  // The entry's second long of the click add() kept last.
  private long lastRest;
  // Codes below this are in a checkpoint's segment already (newAttributes).
  private int written;

  /**
   * Keeps a click unless it is past the retention already, or one with this fingerprint is
   * held and alive (its first copy stays: the dedup upstream lets only one through, so a
   * second is a fingerprint's twin).
   *
   * @return whether the click was added
   */
  boolean add(long hi, long lo, StringData adId, StringData country, StringData device,
              StringData traffic, long clickMs, long nowMs, long retentionMs) {
    if (!alive(clickMs, nowMs, retentionMs) || find(hi, lo, nowMs, retentionMs) >= 0) {
      return false;
    }
    if (4L * (used + 1) > 3L * capacity()) {
      rebuild(nowMs, retentionMs);
    }
    lastRest = rest(lo, code(adId, country, device, traffic));
    put(high(hi), lastRest, clickMs);
    return true;
  }

  /** The slot of the click alive at nowMs with this fingerprint, or -1. */
  int find(long hi, long lo, long nowMs, long retentionMs) {
    long high = high(hi);
    long lowHalf = lo & HIGH_HALF;
    int mask = capacity() - 1;
    for (int i = slotOf(high, mask); ; i = (i + 1) & mask) {
      long slotHigh = slots[3 * i];
      if (slotHigh == 0) {
        return -1;
      }
      if (slotHigh == high && (slots[3 * i + 1] & HIGH_HALF) == lowHalf
          && alive(slots[3 * i + 2], nowMs, retentionMs)) {
        return i;
      }
    }
  }

  /** The time (epoch milliseconds) of the click in this slot. */
  long clickMs(int slot) {
    return slots[3 * slot + 2];
  }

  /**
   * The ad_id, country, device and traffic of the click in this slot, in this order (not to be
   * changed; each as added, null if it was).
   */
  StringData[] attributes(int slot) {
    return attributes.get((int) (slots[3 * slot + 1] & LOW_HALF));
  }

  /** Clicks kept less than the retention before nowMs. */
  int alive(long nowMs, long retentionMs) {
    int alive = 0;
    for (int i = 0; i < capacity(); i++) {
      if (slots[3 * i] != 0 && alive(slots[3 * i + 2], nowMs, retentionMs)) {
        alive++;
      }
    }
    return alive;
  }

  /** Codes in the dictionary. */
  int dictionarySize() {
    return attributes.size();
  }

  /** Slots held on the heap (each 24 bytes), free ones included. */
  int capacity() {
    return slots.length / 3;
  }

  /**
   * Adds a click read back from a checkpoint (the three longs of an entry, as add() stored
   * them: see high, rest) unless it is past the retention at nowMs or held already.
   */
  void merge(long high, long rest, long clickMs, long nowMs, long retentionMs) {
    if (!alive(clickMs, nowMs, retentionMs)
        || find(high, rest, nowMs, retentionMs) >= 0) {
      return;
    }
    if (4L * (used + 1) > 3L * capacity()) {
      rebuild(nowMs, retentionMs);
    }
    put(high, rest, clickMs);
  }

  /**
   * Sets the codes' attributes read back from a checkpoint's segment: what newAttributes wrote,
   * or what it wrote before the labels (three strings a code, read with traffic "valid").
   */
  void restoreAttributes(DataInputStream in) throws IOException {
    int head = in.readInt();
    boolean labelled = head < 0;
    if (labelled && head != FORMAT_FOUR_STRINGS) {
      throw new IOException("unknown format of the clicks' attributes: " + head);
    }
    int count = labelled ? in.readInt() : head;
    for (int n = 0; n < count; n++) {
      int code = in.readInt();
      StringData[] value = new StringData[ATTRIBUTES];
      if (labelled) {
        for (int i = 0; i < ATTRIBUTES; i++) {
          value[i] = in.readBoolean() ? StringData.fromString(in.readUTF()) : null;
        }
      } else {
        for (int i = 0; i < ATTRIBUTES - 1; i++) {
          value[i] = StringData.fromString(in.readUTF());
        }
        value[ATTRIBUTES - 1] = StringData.fromString(VALID);
      }
      while (attributes.size() <= code) {
        attributes.add(null);
      }
      attributes.set(code, value);
      codes.put(new Attributes(value), code);
    }
    written = attributes.size();
  }

  /**
   * Writes the codes added since the last call for a checkpoint's segment: the tag
   * FORMAT_FOUR_STRINGS, their count, then each code and its four strings (each a boolean,
   * whether it is there, then its modified UTF-8 if so); false if there were none.
   */
  boolean newAttributes(DataOutputStream out) throws IOException {
    if (written == attributes.size()) {
      return false;
    }
    out.writeInt(FORMAT_FOUR_STRINGS);
    out.writeInt(attributes.size() - written);
    for (int code = written; code < attributes.size(); code++) {
      out.writeInt(code);
      for (StringData text : attributes.get(code)) {
        out.writeBoolean(text != null);
        if (text != null) {
          out.writeUTF(text.toString());
        }
      }
    }
    written = attributes.size();
    return true;
  }

  /** The first long of the entry add() stores for this fingerprint. */
  static long high(long hi) {
    return hi == 0 ? 1 : hi;
  }

  /** The second long of the entry for this fingerprint and attributes' code. */
  static long rest(long lo, int code) {
    return (lo & HIGH_HALF) | (code & LOW_HALF);
  }

  /** The code of these attributes, added to the dictionary if new. */
  int codeOf(StringData adId, StringData country, StringData device, StringData traffic) {
    return code(adId, country, device, traffic);
  }

  /** The second long of the entry of the click add() added last (see rest). */
  long lastRest() {
    return lastRest;
  }

  private int code(StringData adId, StringData country, StringData device, StringData traffic) {
    Integer code = codes.get(probe.of(adId, country, device, traffic));
    if (code == null) {
      code = attributes.size();
      // Copies: the row's strings may point into a buffer the next row reuses.
      StringData[] value = {copy(adId), copy(country), copy(device), copy(traffic)};
      attributes.add(value);
      codes.put(new Attributes(value), code);
    }
    return code;
  }

  /** A copy of a row's string that does not share its bytes (null stays null). */
  private static StringData copy(StringData text) {
    return text == null ? null : StringData.fromString(text.toString());
  }

  /**
   * A dictionary key: the four strings compared as bytes, hashed by their own (murmur) hash:
   * the strings of an (ad_id, country, device, traffic) key differ in few characters, and
   * Java's string hash put so many in one bucket that the map kept trees of them (measured: 2 %
   * of the job). A null (a click without a label, say) is a value of its own.
   */
  private static final class Attributes {
    private StringData adId;
    private StringData country;
    private StringData device;
    private StringData traffic;

    Attributes() {}

    Attributes(StringData[] value) {
      of(value[0], value[1], value[2], value[3]);
    }

    Attributes of(StringData adId, StringData country, StringData device, StringData traffic) {
      this.adId = adId;
      this.country = country;
      this.device = device;
      this.traffic = traffic;
      return this;
    }

    @Override
    public int hashCode() {
      return 31 * (31 * (31 * Objects.hashCode(adId) + Objects.hashCode(country))
          + Objects.hashCode(device)) + Objects.hashCode(traffic);
    }

    @Override
    public boolean equals(Object other) {
      if (!(other instanceof Attributes)) {
        return false;
      }
      Attributes that = (Attributes) other;
      return Objects.equals(adId, that.adId) && Objects.equals(country, that.country)
          && Objects.equals(device, that.device) && Objects.equals(traffic, that.traffic);
    }
  }

  private static boolean alive(long clickMs, long nowMs, long retentionMs) {
    return nowMs - clickMs < retentionMs;
  }

  private static int slotOf(long high, int mask) {
    // The fingerprint is MD5's: its bits are already uniform.
    return (int) (high ^ (high >>> 32)) & mask;
  }

  /** Drops the expired clicks; sizes the table to twice the live ones (load 1/2). */
  private void rebuild(long nowMs, long retentionMs) {
    rehash(capacityFor(alive(nowMs, retentionMs) + 1), nowMs, retentionMs);
  }

  /** Moves the clicks alive at nowMs into a table of this capacity. */
  private void rehash(int capacity, long nowMs, long retentionMs) {
    long[] old = slots;
    slots = new long[3 * capacity];
    used = 0;
    for (int i = 0; i < old.length; i += 3) {
      if (old[i] != 0 && alive(old[i + 2], nowMs, retentionMs)) {
        put(old[i], old[i + 1], old[i + 2]);
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

  /** Stores a click known to be absent. */
  private void put(long high, long rest, long clickMs) {
    int mask = capacity() - 1;
    int i = slotOf(high, mask);
    while (slots[3 * i] != 0) {
      i = (i + 1) & mask;
    }
    slots[3 * i] = high;
    slots[3 * i + 1] = rest;
    slots[3 * i + 2] = clickMs;
    used++;
  }
}
