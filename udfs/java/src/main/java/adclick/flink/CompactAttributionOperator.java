package adclick.flink;

import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import org.apache.flink.core.memory.DataInputDeserializer;
import org.apache.flink.core.memory.DataOutputSerializer;
import org.apache.flink.runtime.state.KeyGroupRangeAssignment;
import org.apache.flink.runtime.state.StateInitializationContext;
import org.apache.flink.runtime.state.StateSnapshotContext;
import org.apache.flink.streaming.api.operators.AbstractStreamOperator;
import org.apache.flink.streaming.api.operators.TwoInputStreamOperator;
import org.apache.flink.streaming.api.watermark.Watermark;
import org.apache.flink.streaming.runtime.streamrecord.StreamRecord;
import org.apache.flink.table.data.GenericRowData;
import org.apache.flink.table.data.RowData;
import org.apache.flink.table.data.StringData;
import org.apache.flink.table.data.binary.BinaryStringData;
import org.apache.flink.table.data.utils.JoinedRowData;
import org.apache.flink.table.runtime.typeutils.RowDataSerializer;
import org.apache.flink.table.types.logical.RowType;
import org.apache.flink.types.RowKind;

/**
 * Meets each unique conversion (input 1) with the counted click it names (input 2), in either
 * order, and emits the pair as the planner's inner join on click_id does (the conversion's
 * columns, then the click's), with the times the join's state TTL stood for measured in event
 * time instead of on the wall clock.
 *
 * <p>The clock is the clicks' watermark. A click is kept until the clock is the retention (the
 * attribution window plus the conversion wait) past its click time: a conversion of it that
 * comes later than that stays unattributed. A conversion whose click is not there waits until
 * the clock is the conversion wait past its conversion time: a click counted after that has a
 * later click time (its minute would otherwise be too late to count, with the wait above the
 * allowed lateness plus a minute), so it could only have been before_click. The clock stands
 * still while the job is down and is checkpointed: after an outage the clicks are there for
 * the backlog of conversions.
 *
 * <p>Clicks are held per key group in a {@link ClickTable} (24 bytes a click, their attributes
 * coded: ad_id, country, device and the traffic label, which the click's side of the output
 * carries as it came in), waiting conversions as their serialized rows (few: a conversion
 * usually follows its click). They are checkpointed as what changed ({@link
 * KeyGroupSegments}, Flink's managed keyed state): per key group, the clicks added since the
 * last checkpoint as a new segment, 24 bytes each, the attribute codes added, the clock and
 * the waiting conversions; a segment is removed once its clicks have all expired. So
 * checkpoints, restores and rescaling are Flink's, and rows reach this operator through the
 * planner's keyBy on click_id (CompactAttribution.install).
 */
public final class CompactAttributionOperator extends AbstractStreamOperator<RowData>
    implements TwoInputStreamOperator<RowData, RowData, RowData> {

  private static final long serialVersionUID = 1L;
  // How often (event time) the waiting conversions are swept for expired ones.
  private static final long SWEEP_MS = 60_000;

  private final long retentionMs;
  private final long waitMs;
  private final RowType conversionType;
  private final int conversionClickId;
  private final int conversionTs;
  private final int clickArity;
  private final int clickId;
  private final int clickAd;
  private final int clickCountry;
  private final int clickDevice;
  private final int clickTraffic;
  private final int clickTs;

  private final RowType keyType;

  private transient ClickTable[] tables;
  private transient KeyGroupSegments clicks;
  private transient KeyGroupSegments dictionary;
  private transient List<Map<Long, List<Waiting>>> waiting;
  private transient int maxParallelism;
  private transient EventKey fingerprint;
  private transient RowDataSerializer conversions;
  private transient DataOutputSerializer buffer;
  private transient JoinedRowData joined;
  private transient StreamRecord<RowData> record;
  // Milliseconds: the clock as restored (the newest of the key groups') and as it moved.
  private transient long restoredMs;
  private transient long watermarkMs;
  private transient long nextSweepMs;

  /** A conversion waiting for its click: its click_id's fingerprint, time and row. */
  private static final class Waiting {
    final long hi;
    final long lo;
    final long conversionMs;
    final byte[] row;

    Waiting(long hi, long lo, long conversionMs, byte[] row) {
      this.hi = hi;
      this.lo = lo;
      this.conversionMs = conversionMs;
      this.row = row;
    }
  }

  /**
   * @param retentionS how long (seconds of event time) a click is kept after its click time
   * @param waitS how long a conversion waits for its click after its conversion time
   * @param conversionType the conversions' row (input 1)
   * @param conversionClickId its click_id field
   * @param conversionTs its conversion time field (BIGINT epoch milliseconds)
   * @param clickArity the clicks' row's arity (input 2); its fields, where given: click_id,
   *     ad_id, country, device, traffic (STRING; the click's invalid-traffic label, kept as is,
   *     null too) and the click time (BIGINT epoch milliseconds)
   * @param keyType the type of the keys the operator is keyed by (one STRING, the click_id)
   */
  public CompactAttributionOperator(long retentionS, long waitS, RowType conversionType,
                                    int conversionClickId, int conversionTs, int clickArity,
                                    int clickId, int clickAd, int clickCountry, int clickDevice,
                                    int clickTraffic, int clickTs, RowType keyType) {
    if (retentionS <= 0 || waitS <= 0) {
      throw new IllegalArgumentException("the retention and the wait must be positive");
    }
    this.retentionMs = retentionS * 1000;
    this.waitMs = waitS * 1000;
    this.conversionType = conversionType;
    this.conversionClickId = conversionClickId;
    this.conversionTs = conversionTs;
    this.clickArity = clickArity;
    this.clickId = clickId;
    this.clickAd = clickAd;
    this.clickCountry = clickCountry;
    this.clickDevice = clickDevice;
    this.clickTraffic = clickTraffic;
    this.clickTs = clickTs;
    this.keyType = keyType;
  }

  /** How long (seconds of event time) a click is kept after its click time. */
  public long getRetentionS() {
    return retentionMs / 1000;
  }

  /** How long (seconds of event time) a conversion waits for its click. */
  public long getWaitS() {
    return waitMs / 1000;
  }

  @Override
  public void initializeState(StateInitializationContext context) throws Exception {
    super.initializeState(context);
    maxParallelism = getRuntimeContext().getTaskInfo().getMaxNumberOfParallelSubtasks();
    tables = new ClickTable[maxParallelism];
    waiting = new ArrayList<>(maxParallelism);
    for (int group = 0; group < maxParallelism; group++) {
      waiting.add(null);
    }
    fingerprint = new EventKey();
    conversions = new RowDataSerializer(conversionType);
    buffer = new DataOutputSerializer(256);
    joined = new JoinedRowData();
    record = new StreamRecord<>(null);
    restoredMs = 0;
    watermarkMs = 0;
    clicks = new KeyGroupSegments("compact-attribution-clicks", 3);
    clicks.open(this, keyType);
    dictionary = new KeyGroupSegments("compact-attribution-attributes", 0);
    dictionary.open(this, keyType);
    dictionary.restore((group, id, bytes) -> tableOf(group).restoreAttributes(
        new DataInputStream(new ByteArrayInputStream(bytes))));
    // Per key group: the waiting conversions' slot, then the clock's, then the segments.
    clicks.restore((group, id, bytes) -> {
      ByteBuffer buffer = ByteBuffer.wrap(bytes);
      if (id == CLOCK_SLOT) {
        restoredMs = Math.max(restoredMs, buffer.getLong());
      } else if (id == WAITING_SLOT) {
        while (buffer.hasRemaining()) {
          long hi = buffer.getLong();
          long lo = buffer.getLong();
          long conversionMs = buffer.getLong();
          byte[] row = new byte[buffer.getInt()];
          buffer.get(row);
          waitingOf(group).computeIfAbsent(hi, k -> new ArrayList<>())
              .add(new Waiting(hi, lo, conversionMs, row));
        }
      } else {
        ClickTable table = tableOf(group);
        long latestMs = Long.MIN_VALUE;
        while (buffer.hasRemaining()) {
          long high = buffer.getLong();
          long rest = buffer.getLong();
          long clickMs = buffer.getLong();
          table.merge(high, rest, clickMs, restoredMs, retentionMs);
          latestMs = Math.max(latestMs, clickMs);
        }
        clicks.expiresAt(group, id, latestMs + retentionMs);
      }
    });
    nextSweepMs = 0;
  }

  // The slots of a key group's checkpointed state besides its segments of clicks.
  static final long CLOCK_SLOT = -1;
  static final long WAITING_SLOT = -2;

  /** A unique conversion: emitted with its click if that is held, else it waits for it. */
  @Override
  public void processElement1(StreamRecord<RowData> element) throws Exception {
    RowData conversion = element.getValue();
    if (conversion.isNullAt(conversionClickId)) {
      return; // an inner join never matches a null key
    }
    StringData id = conversion.getString(conversionClickId);
    fingerprint.of(((BinaryStringData) id).toBytes());
    int group = group();
    long nowMs = nowMs();
    ClickTable table = tableOf(group);
    int slot = table.find(fingerprint.hi, fingerprint.lo, nowMs, retentionMs);
    if (slot >= 0) {
      emit(conversion, id, table, slot);
      return;
    }
    long conversionMs = conversion.isNullAt(conversionTs) ? Long.MAX_VALUE
        : conversion.getLong(conversionTs);
    if (!expired(conversionMs, nowMs)) {
      buffer.clear();
      conversions.serialize(conversion, buffer);
      waitingOf(group).computeIfAbsent(fingerprint.hi, k -> new ArrayList<>())
          .add(new Waiting(fingerprint.hi, fingerprint.lo, conversionMs, buffer.getCopyOfBuffer()));
    }
  }

  /** A counted click: kept for its conversions, and emitted with those waiting for it. */
  @Override
  public void processElement2(StreamRecord<RowData> element) throws Exception {
    RowData click = element.getValue();
    if (click.isNullAt(clickId)) {
      return;
    }
    StringData id = click.getString(clickId);
    fingerprint.of(((BinaryStringData) id).toBytes());
    int group = group();
    long nowMs = nowMs();
    ClickTable table = tableOf(group);
    long clickMs = click.getLong(clickTs);
    if (!table.add(fingerprint.hi, fingerprint.lo, string(click, clickAd),
        string(click, clickCountry), string(click, clickDevice), string(click, clickTraffic),
        clickMs, nowMs, retentionMs)) {
      return;
    }
    clicks.add(group, clickMs + retentionMs, ClickTable.high(fingerprint.hi), table.lastRest(),
        clickMs);
    Map<Long, List<Waiting>> waitingHere = waiting.get(group);
    List<Waiting> candidates = waitingHere == null ? null : waitingHere.get(fingerprint.hi);
    if (candidates == null) {
      return;
    }
    int slot = table.find(fingerprint.hi, fingerprint.lo, nowMs, retentionMs);
    for (Iterator<Waiting> it = candidates.iterator(); it.hasNext(); ) {
      Waiting conversion = it.next();
      if (conversion.lo == fingerprint.lo) {
        it.remove();
        // The sweep runs once a minute of event time: one that waited its time is dropped here.
        if (!expired(conversion.conversionMs, nowMs)) {
          emit(conversions.deserialize(new DataInputDeserializer(conversion.row)), id, table,
              slot);
        }
      }
    }
    if (candidates.isEmpty()) {
      waitingHere.remove(fingerprint.hi);
    }
  }

  /**
   * The clicks' watermark is the clock; the waiting conversions are swept as it moves. The
   * last watermark of a bounded input says no click will come, not that a week has passed:
   * the clock stays, so conversions read after it still find their clicks.
   */
  @Override
  public void processWatermark2(Watermark mark) throws Exception {
    if (mark.getTimestamp() != Long.MAX_VALUE) {
      watermarkMs = Math.max(watermarkMs, mark.getTimestamp());
    }
    long nowMs = nowMs();
    if (nowMs >= nextSweepMs) {
      for (Map<Long, List<Waiting>> waitingHere : waiting) {
        if (waitingHere != null) {
          waitingHere.values().removeIf(list -> {
            list.removeIf(conversion -> expired(conversion.conversionMs, nowMs));
            return list.isEmpty();
          });
        }
      }
      nextSweepMs = nowMs + SWEEP_MS;
    }
    super.processWatermark2(mark);
  }

  /**
   * Writes, per key group, the clicks added since the last checkpoint as a new segment (24
   * bytes each), the attribute codes added, the clock and the waiting conversions, and removes
   * the segments whose clicks have all expired (KeyGroupSegments): the backend's snapshot that
   * follows carries them.
   */
  @Override
  public void snapshotState(StateSnapshotContext context) throws Exception {
    super.snapshotState(context);
    long nowMs = nowMs();
    byte[] clock = ByteBuffer.allocate(Long.BYTES).putLong(nowMs).array();
    ByteArrayOutputStream bytes = new ByteArrayOutputStream();
    DataOutputStream data = new DataOutputStream(bytes);
    for (int group = 0; group < maxParallelism; group++) {
      if (!clicks.holds(group)) {
        continue;
      }
      bytes.reset();
      if (tables[group] != null && tables[group].newAttributes(data)) {
        data.flush();
        dictionary.append(group, bytes.toByteArray(), Long.MAX_VALUE);
      }
      clicks.appendAdded(group);
      clicks.put(group, CLOCK_SLOT, clock);
      Map<Long, List<Waiting>> waitingHere = waiting.get(group);
      if (waitingHere != null) {
        bytes.reset();
        for (List<Waiting> list : waitingHere.values()) {
          for (Waiting conversion : list) {
            if (!expired(conversion.conversionMs, nowMs)) {
              data.writeLong(conversion.hi);
              data.writeLong(conversion.lo);
              data.writeLong(conversion.conversionMs);
              data.writeInt(conversion.row.length);
              data.write(conversion.row);
            }
          }
        }
        data.flush();
        clicks.put(group, WAITING_SLOT, bytes.toByteArray());
      }
      clicks.dropExpired(group, nowMs);
    }
  }

  private void emit(RowData conversion, StringData id, ClickTable table, int slot) {
    GenericRowData click = new GenericRowData(clickArity);
    StringData[] attributes = table.attributes(slot);
    click.setField(clickId, id);
    click.setField(clickAd, attributes[0]);
    click.setField(clickCountry, attributes[1]);
    click.setField(clickDevice, attributes[2]);
    click.setField(clickTraffic, attributes[3]);
    click.setField(clickTs, table.clickMs(slot));
    joined.replace(conversion, click);
    joined.setRowKind(RowKind.INSERT);
    output.collect(record.replace(joined));
  }

  /** The row's string in this field, or null (kept as such: a value of its own). */
  private static StringData string(RowData row, int field) {
    return row.isNullAt(field) ? null : row.getString(field);
  }

  /** Whether a conversion of this time waited long enough for its click at nowMs. */
  private boolean expired(long conversionMs, long nowMs) {
    return nowMs - conversionMs >= waitMs; // a conversion without a time (MAX) never expires
  }

  private int group() {
    return KeyGroupRangeAssignment.assignToKeyGroup(getCurrentKey(), maxParallelism);
  }

  private ClickTable tableOf(int group) {
    ClickTable table = tables[group];
    if (table == null) {
      table = new ClickTable();
      tables[group] = table;
    }
    return table;
  }

  private Map<Long, List<Waiting>> waitingOf(int group) {
    Map<Long, List<Waiting>> waitingHere = waiting.get(group);
    if (waitingHere == null) {
      waitingHere = new HashMap<>();
      waiting.set(group, waitingHere);
    }
    return waitingHere;
  }

  /** The clock in epoch milliseconds of event time; 0 (1970) before any watermark. */
  long nowMs() {
    return Math.max(restoredMs, watermarkMs);
  }
}
