package adclick.flink;

import java.io.BufferedOutputStream;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import org.apache.flink.core.memory.DataInputDeserializer;
import org.apache.flink.core.memory.DataOutputSerializer;
import org.apache.flink.runtime.state.KeyGroupRangeAssignment;
import org.apache.flink.runtime.state.KeyGroupStatePartitionStreamProvider;
import org.apache.flink.runtime.state.KeyedStateCheckpointOutputStream;
import org.apache.flink.runtime.state.StateInitializationContext;
import org.apache.flink.runtime.state.StateSnapshotContext;
import org.apache.flink.streaming.api.operators.AbstractStreamOperator;
import org.apache.flink.streaming.api.operators.TwoInputStreamOperator;
import org.apache.flink.streaming.api.watermark.Watermark;
import org.apache.flink.streaming.runtime.streamrecord.StreamRecord;
import org.apache.flink.table.data.GenericRowData;
import org.apache.flink.table.data.RowData;
import org.apache.flink.table.data.StringData;
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
 * coded), waiting conversions as their serialized rows (few: a conversion usually follows its
 * click). Both are checkpointed as Flink's raw keyed state, group by group, so checkpoints,
 * restores and rescaling are Flink's, and rows reach this operator through the planner's
 * keyBy on click_id (CompactAttribution.install).
 */
public final class CompactAttributionOperator extends AbstractStreamOperator<RowData>
    implements TwoInputStreamOperator<RowData, RowData, RowData> {

  private static final long serialVersionUID = 1L;
  // A key group's state starts with this, then the clock, the clicks, the waiting conversions.
  static final int FORMAT = 1;
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
  private final int clickTs;

  private transient ClickTable[] tables;
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
   * @param clickArity the clicks' row's arity (input 2); its fields: click_id, ad_id, country,
   *     device (STRING) and the click time (BIGINT epoch milliseconds)
   */
  public CompactAttributionOperator(long retentionS, long waitS, RowType conversionType,
                                    int conversionClickId, int conversionTs, int clickArity,
                                    int clickId, int clickAd, int clickCountry, int clickDevice,
                                    int clickTs) {
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
    this.clickTs = clickTs;
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
    for (KeyGroupStatePartitionStreamProvider group : context.getRawKeyedStateInputs()) {
      DataInputStream in = new DataInputStream(group.getStream());
      int format = in.readInt();
      if (format != FORMAT) {
        throw new IllegalStateException("unknown attribution state format " + format);
      }
      restoredMs = Math.max(restoredMs, in.readLong());
      int id = group.getKeyGroupId();
      tableOf(id).read(in);
      int count = in.readInt();
      for (int n = 0; n < count; n++) {
        long hi = in.readLong();
        long lo = in.readLong();
        long conversionMs = in.readLong();
        byte[] row = new byte[in.readInt()];
        in.readFully(row);
        waitingOf(id).computeIfAbsent(hi, k -> new ArrayList<>())
            .add(new Waiting(hi, lo, conversionMs, row));
      }
    }
    nextSweepMs = 0;
  }

  /** The raw keyed state is this operator's tables (Flink's timers are not written there). */
  @Override
  protected boolean isUsingCustomRawKeyedState() {
    return true;
  }

  /** A unique conversion: emitted with its click if that is held, else it waits for it. */
  @Override
  public void processElement1(StreamRecord<RowData> element) throws Exception {
    RowData conversion = element.getValue();
    if (conversion.isNullAt(conversionClickId)) {
      return; // an inner join never matches a null key
    }
    StringData id = conversion.getString(conversionClickId);
    fingerprint.of(id.toString());
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
    fingerprint.of(id.toString());
    int group = group();
    long nowMs = nowMs();
    ClickTable table = tableOf(group);
    if (!table.add(fingerprint.hi, fingerprint.lo, click.getString(clickAd),
        click.getString(clickCountry), click.getString(clickDevice), click.getLong(clickTs),
        nowMs, retentionMs)) {
      return;
    }
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

  @Override
  public void snapshotState(StateSnapshotContext context) throws Exception {
    super.snapshotState(context);
    KeyedStateCheckpointOutputStream out = context.getRawKeyedOperatorStateOutput();
    long nowMs = nowMs();
    for (int group : out.getKeyGroupList()) {
      out.startNewKeyGroup(group);
      // Not closed (Flink closes the stream); flushed before the next group starts.
      DataOutputStream data = new DataOutputStream(new BufferedOutputStream(out, 1 << 16));
      data.writeInt(FORMAT);
      data.writeLong(nowMs);
      tableOf(group).write(data, nowMs, retentionMs);
      List<Waiting> alive = new ArrayList<>();
      Map<Long, List<Waiting>> waitingHere = waiting.get(group);
      if (waitingHere != null) {
        for (List<Waiting> list : waitingHere.values()) {
          for (Waiting conversion : list) {
            if (!expired(conversion.conversionMs, nowMs)) {
              alive.add(conversion);
            }
          }
        }
      }
      data.writeInt(alive.size());
      for (Waiting conversion : alive) {
        data.writeLong(conversion.hi);
        data.writeLong(conversion.lo);
        data.writeLong(conversion.conversionMs);
        data.writeInt(conversion.row.length);
        data.write(conversion.row);
      }
      data.flush();
    }
  }

  private void emit(RowData conversion, StringData id, ClickTable table, int slot) {
    GenericRowData click = new GenericRowData(clickArity);
    StringData[] attributes = table.attributes(slot);
    click.setField(clickId, id);
    click.setField(clickAd, attributes[0]);
    click.setField(clickCountry, attributes[1]);
    click.setField(clickDevice, attributes[2]);
    click.setField(clickTs, table.clickMs(slot));
    joined.replace(conversion, click);
    joined.setRowKind(RowKind.INSERT);
    output.collect(record.replace(joined));
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
