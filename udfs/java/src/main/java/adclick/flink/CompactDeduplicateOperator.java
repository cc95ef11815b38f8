package adclick.flink;

import java.io.DataInputStream;
import java.nio.ByteBuffer;
import java.util.List;
import java.util.Map;
import org.apache.flink.api.common.state.ListState;
import org.apache.flink.api.common.state.ListStateDescriptor;
import org.apache.flink.api.common.typeutils.base.LongSerializer;
import org.apache.flink.runtime.state.KeyGroupRangeAssignment;
import org.apache.flink.runtime.state.KeyGroupStatePartitionStreamProvider;
import org.apache.flink.runtime.state.StateInitializationContext;
import org.apache.flink.runtime.state.StateSnapshotContext;
import org.apache.flink.streaming.api.operators.AbstractStreamOperator;
import org.apache.flink.streaming.api.operators.OneInputStreamOperator;
import org.apache.flink.streaming.api.watermark.Watermark;
import org.apache.flink.streaming.runtime.streamrecord.StreamRecord;
import org.apache.flink.table.data.RowData;
import org.apache.flink.table.data.StringData;
import org.apache.flink.table.types.logical.RowType;

/**
 * Keeps the first row of each key seen within the horizon and drops the rest: what Flink SQL's
 * {@code ROW_NUMBER() ... ORDER BY proc_time ASC} = 1 with a state TTL does, for keys made of
 * a 128-bit fingerprint (two BIGINTs, EventKey) and maybe more columns, but with the horizon
 * measured in event time, never on the wall clock.
 *
 * <p>The clock is the input's watermark (for an input with a rowtime: clicks and impressions),
 * or else the newest event time seen, held back to the processing time (conversions, which
 * have no watermark: a producer's fast clock cannot expire everyone's ids). Either clock
 * stands still while the job is down, and both are checkpointed, so a backlog read after a
 * long outage finds the ids it saw before it (a wall clock would have expired them all). An
 * id is stamped with its event time, or the clock if that is later, and forgotten once the
 * clock is the horizon past its stamp: by then any copy of it is older than the watermark by
 * more than the allowed lateness (with the horizon above it), so it is too late to count. The
 * horizon may differ by the key's first column besides the fingerprint (the event type:
 * impressions, twenty times as many as clicks and never billed twice by a resend hours later,
 * are remembered for minutes); each id is held with the second it expires at.
 *
 * <p>The ids seen are held per key group, each group's in one {@link FingerprintSet}. They are
 * checkpointed as what changed ({@link KeyGroupSegments}): the ids added since the last
 * checkpoint, 16 bytes each, as a new segment of the key group in Flink's managed keyed state,
 * and a segment removed once its ids have all expired; so a checkpoint, a restore and a
 * rescaling (key groups moving between subtasks) are Flink's, and with RocksDB's incremental
 * checkpoints one uploads the ids that came since the last. The rows still reach this operator
 * through the planner's keyBy. Rows and watermarks are
 * passed on unchanged, so the operator stands in for the planner's own in the same plan
 * (CompactDeduplicate.install).
 *
 * <p>One addition: the watermark passed on is checkpointed too, and after a restore it is
 * passed on again before any row, and never a lower one. The job classes each row on time or
 * late against the watermark right after this operator (CURRENT_WATERMARK), and the event-time
 * window downstream restores the watermark it had (Flink's WindowAggOperator does): without
 * this, the rows read between a restore and the first new watermark would be classed on time
 * against no watermark at all, and the window would drop those of a minute it had fired.
 */
public final class CompactDeduplicateOperator extends AbstractStreamOperator<RowData>
    implements OneInputStreamOperator<RowData, RowData> {

  private static final long serialVersionUID = 1L;

  private final long horizonS;
  // The horizons that differ from horizonS, by the value of the key's first other field.
  private final String[] horizonKeys;
  private final long[] horizonValues;
  private final int hiField;
  private final int loField;
  // Key fields besides the fingerprint (the event type): mixed into it.
  private final int[] otherFields;
  // The row's event time: a rowtime (TIMESTAMP_LTZ, the clock is the watermark) or epoch
  // milliseconds (BIGINT, the clock is the newest event time, held to the processing time).
  private final int timeField;
  private final boolean watermarkClock;
  private final RowType keyType;

  private transient FingerprintSet[] sets;
  private transient KeyGroupSegments segments;
  private transient StringData[] horizonKeyData;
  private transient int maxParallelism;
  // Seconds: the clock as it was restored (the newest of the key groups'), and as it moved.
  private transient long restoredS;
  private transient long clockS;
  // Milliseconds: the watermark passed on (checkpointed), and the one restored.
  private transient ListState<Long> watermarkState;
  private transient long restoredWatermark;
  private transient long passedWatermark;

  /**
   * @param horizonS how long (seconds) an id is remembered after it was first seen
   * @param horizonsByKey other horizons, for keys whose first field of otherFields holds the
   *     map's key (empty: one horizon for all)
   * @param hiField the key's field holding the fingerprint's high 64 bits
   * @param loField the key's field holding its low 64 bits
   * @param otherFields the key's other fields, each a STRING
   * @param timeField the row's field holding its event time
   * @param watermarkClock whether that field is a rowtime (a TIMESTAMP_LTZ with watermarks),
   *     else epoch milliseconds (a BIGINT)
   * @param keyType the type of the keys the operator is keyed by (KeyGroupSegments makes keys
   *     of it)
   */
  public CompactDeduplicateOperator(long horizonS, Map<String, Long> horizonsByKey, int hiField,
                                    int loField, int[] otherFields, int timeField,
                                    boolean watermarkClock, RowType keyType) {
    if (horizonS <= 0 || horizonsByKey.values().stream().anyMatch(h -> h <= 0)) {
      throw new IllegalArgumentException(
          "every horizon must be positive: " + horizonS + ", " + horizonsByKey);
    }
    if (!horizonsByKey.isEmpty() && otherFields.length == 0) {
      throw new IllegalArgumentException("horizons by key need a key column to tell them by");
    }
    this.horizonS = horizonS;
    this.horizonKeys = horizonsByKey.keySet().toArray(new String[0]);
    this.horizonValues = new long[horizonKeys.length];
    for (int i = 0; i < horizonKeys.length; i++) {
      horizonValues[i] = horizonsByKey.get(horizonKeys[i]);
    }
    this.hiField = hiField;
    this.loField = loField;
    this.otherFields = otherFields.clone();
    this.timeField = timeField;
    this.watermarkClock = watermarkClock;
    this.keyType = keyType;
  }

  @Override
  public void initializeState(StateInitializationContext context) throws Exception {
    super.initializeState(context);
    maxParallelism = getRuntimeContext().getTaskInfo().getMaxNumberOfParallelSubtasks();
    sets = new FingerprintSet[maxParallelism];
    segments = new KeyGroupSegments("compact-deduplicate-segments", 2);
    horizonKeyData = new StringData[horizonKeys.length];
    for (int i = 0; i < horizonKeys.length; i++) {
      horizonKeyData[i] = StringData.fromString(horizonKeys[i]);
    }
    long longestS = horizonS;
    for (long value : horizonValues) {
      longestS = Math.max(longestS, value);
    }
    restoredS = 0;
    clockS = 0;
    watermarkState = context.getOperatorStateStore().getUnionListState(
        new ListStateDescriptor<>("compact-deduplicate-watermark", LongSerializer.INSTANCE));
    // The lowest of all subtasks' (a union: after rescaling, one subtask's rows came from any):
    // never above what any window downstream restored, which read from all of them.
    // A drained savepoint's end-of-time watermark is not carried: the upgrade procedure
    // starts the next job from one without the windows' state, and it would class every
    // event too late.
    restoredWatermark = Long.MIN_VALUE;
    if (context.isRestored()) {
      long lowest = Long.MAX_VALUE;
      for (Long watermark : watermarkState.get()) {
        lowest = Math.min(lowest, watermark);
      }
      restoredWatermark = lowest == Long.MAX_VALUE ? Long.MIN_VALUE : lowest;
    }
    passedWatermark = Long.MIN_VALUE;
    segments.open(this, keyType);
    // A state written before the segments: raw keyed state, whole sets of stamps (not
    // expiries: kept for the longest horizon). Its ids go into the first checkpoint's segments.
    for (KeyGroupStatePartitionStreamProvider group : context.getRawKeyedStateInputs()) {
      DataInputStream in = new DataInputStream(group.getStream());
      int first = in.readInt();
      int count = first;
      if (first == FORMAT_WITH_CLOCK) {
        restoredS = Math.max(restoredS, in.readLong());
        count = in.readInt();
      } // else a state of the first format: its count came first, stamped on the wall clock
      FingerprintSet set = setOf(group.getKeyGroupId());
      set.read(in, count, longestS);
      long[] entries = set.entries(Long.MIN_VALUE);
      for (int i = 0; i < entries.length; i += 2) {
        segments.add(group.getKeyGroupId(), FingerprintSet.expiryOf(entries[i + 1]),
            entries[i], entries[i + 1]);
      }
    }
    segments.restore((group, id, bytes) -> {
      ByteBuffer buffer = ByteBuffer.wrap(bytes);
      if (id == CLOCK_SLOT) {
        restoredS = Math.max(restoredS, buffer.getLong());
        return;
      }
      FingerprintSet set = setOf(group);
      long latestS = Long.MIN_VALUE;
      while (buffer.hasRemaining()) {
        long high = buffer.getLong();
        long rest = buffer.getLong();
        set.merge(high, rest, Long.MIN_VALUE); // expired ones go at the next rebuild
        latestS = Math.max(latestS, FingerprintSet.expiryOf(rest));
      }
      segments.expiresAt(group, id, latestS);
    });
  }

  // The clock's slot among a key group's segments.
  static final long CLOCK_SLOT = -1;
  // A raw key group state of the former format started with this, then the clock, the set.
  static final int FORMAT_WITH_CLOCK = -2;

  /**
   * The raw keyed state is this operator's former checkpoints, read only (and Flink's timers
   * are not written there: the job keeps them in RocksDB).
   */
  @Override
  protected boolean isUsingCustomRawKeyedState() {
    return true;
  }

  /** Whether the clock is the watermark (else the newest event time, held to the wall clock). */
  public boolean usesWatermarkClock() {
    return watermarkClock;
  }

  /** How long (seconds of event time) an id is remembered after its stamp. */
  public long getHorizonS() {
    return horizonS;
  }

  /** The same, for ids whose key's first other field holds this value. */
  public long getHorizonS(String key) {
    for (int i = 0; i < horizonKeys.length; i++) {
      if (horizonKeys[i].equals(key)) {
        return horizonValues[i];
      }
    }
    return horizonS;
  }

  @Override
  public void processElement(StreamRecord<RowData> element) throws Exception {
    RowData key = (RowData) getCurrentKey();
    long hi = key.isNullAt(hiField) ? 0 : key.getLong(hiField);
    long lo = key.isNullAt(loField) ? 0 : key.getLong(loField);
    for (int field : otherFields) {
      // String.hashCode is fixed by the Java spec (Flink's own string hash is not promised to
      // stay): the sets in a savepoint must match after an upgrade.
      hi ^= mix(key.isNullAt(field) ? 0 : key.getString(field).toString().hashCode() + 1L);
    }
    int group = KeyGroupRangeAssignment.assignToKeyGroup(key, maxParallelism);
    long eventS = eventS(element.getValue());
    if (!watermarkClock && eventS != Long.MIN_VALUE) {
      long processingS = getProcessingTimeService().getCurrentProcessingTime() / 1000;
      clockS = Math.max(clockS, Math.min(eventS, processingS));
    }
    long nowS = nowS();
    long expiryS = Math.max(eventS, nowS) + horizonOf(key);
    if (setOf(group).add(hi, lo, expiryS, nowS)) {
      segments.add(group, expiryS, FingerprintSet.high(hi), FingerprintSet.rest(lo, expiryS));
      if (passedWatermark < restoredWatermark) {
        passWatermark(restoredWatermark);
      }
      output.collect(element);
    }
  }

  private long horizonOf(RowData key) {
    if (horizonKeyData.length > 0 && !key.isNullAt(otherFields[0])) {
      StringData value = key.getString(otherFields[0]);
      for (int i = 0; i < horizonKeyData.length; i++) {
        if (horizonKeyData[i].equals(value)) {
          return horizonValues[i];
        }
      }
    }
    return horizonS;
  }

  @Override
  public void processWatermark(Watermark mark) throws Exception {
    if (watermarkClock) {
      clockS = Math.max(clockS, Math.floorDiv(mark.getTimestamp(), 1000L));
    }
    // After a restore the inputs start again from none: pass on only what moves it forward.
    if (Math.max(mark.getTimestamp(), restoredWatermark) > passedWatermark) {
      passWatermark(Math.max(mark.getTimestamp(), restoredWatermark));
    }
  }

  private void passWatermark(long timestamp) throws Exception {
    passedWatermark = timestamp;
    super.processWatermark(new Watermark(timestamp));
  }

  /** The row's event time in seconds, or Long.MIN_VALUE if it has none. */
  private long eventS(RowData row) {
    if (row.isNullAt(timeField)) {
      return Long.MIN_VALUE;
    }
    long millis = watermarkClock ? row.getTimestamp(timeField, 3).getMillisecond()
        : row.getLong(timeField);
    return Math.floorDiv(millis, 1000L);
  }

  /**
   * Writes, per key group, the ids added since the last checkpoint as a new segment and the
   * clock, and removes the segments whose ids have all expired (KeyGroupSegments): the
   * backend's snapshot that follows carries them.
   */
  @Override
  public void snapshotState(StateSnapshotContext context) throws Exception {
    super.snapshotState(context);
    watermarkState.update(List.of(Math.max(passedWatermark, restoredWatermark)));
    long nowS = nowS();
    byte[] clock = ByteBuffer.allocate(Long.BYTES).putLong(nowS).array();
    for (int group = 0; group < maxParallelism; group++) {
      if (!segments.holds(group)) {
        continue;
      }
      segments.appendAdded(group);
      segments.put(group, CLOCK_SLOT, clock);
      segments.dropExpired(group, nowS);
    }
  }

  private FingerprintSet setOf(int group) {
    FingerprintSet set = sets[group];
    if (set == null) {
      set = new FingerprintSet();
      sets[group] = set;
    }
    return set;
  }

  /** The clock in seconds of event time; 0 (1970) until it has read anything. */
  long nowS() {
    return Math.max(restoredS, clockS);
  }

  /** A 32-bit hash spread over 64 bits (MurmurHash3's finalizer). */
  private static long mix(long value) {
    long h = value;
    h ^= h >>> 33;
    h *= 0xff51afd7ed558ccdL;
    h ^= h >>> 33;
    h *= 0xc4ceb9fe1a85ec53L;
    h ^= h >>> 33;
    return h;
  }
}
