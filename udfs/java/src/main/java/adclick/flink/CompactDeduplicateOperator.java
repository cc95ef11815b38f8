package adclick.flink;

import org.apache.flink.runtime.state.KeyGroupRangeAssignment;
import org.apache.flink.runtime.state.KeyGroupStatePartitionStreamProvider;
import org.apache.flink.runtime.state.KeyedStateCheckpointOutputStream;
import org.apache.flink.runtime.state.StateInitializationContext;
import org.apache.flink.runtime.state.StateSnapshotContext;
import org.apache.flink.streaming.api.operators.AbstractStreamOperator;
import org.apache.flink.streaming.api.operators.OneInputStreamOperator;
import org.apache.flink.streaming.runtime.streamrecord.StreamRecord;
import org.apache.flink.table.data.RowData;

/**
 * Keeps the first row of each key seen within the horizon (processing time) and drops the
 * rest: what Flink SQL's {@code ROW_NUMBER() ... ORDER BY proc_time ASC} = 1 with a state TTL
 * does, for keys made of a 128-bit fingerprint (two BIGINTs, EventKey) and maybe more columns.
 *
 * <p>The ids seen are held per key group, each group's in one {@link FingerprintSet}, and are
 * checkpointed as Flink's raw keyed state, group by group: a checkpoint, a restore and a
 * rescaling (key groups moving between subtasks) are Flink's, as for managed keyed state, and
 * the rows still reach this operator through the planner's keyBy. Rows and watermarks are
 * passed on unchanged, so the operator stands in for the planner's own in the same plan
 * (CompactDeduplicate.install).
 */
public final class CompactDeduplicateOperator extends AbstractStreamOperator<RowData>
    implements OneInputStreamOperator<RowData, RowData> {

  private static final long serialVersionUID = 1L;

  private final long horizonS;
  private final int hiField;
  private final int loField;
  // Key fields besides the fingerprint (the event type): mixed into it.
  private final int[] otherFields;

  private transient FingerprintSet[] sets;
  private transient int maxParallelism;

  /**
   * @param horizonS how long (seconds) an id is remembered after it was first seen
   * @param hiField the key's field holding the fingerprint's high 64 bits
   * @param loField the key's field holding its low 64 bits
   * @param otherFields the key's other fields, each a STRING
   */
  public CompactDeduplicateOperator(long horizonS, int hiField, int loField, int[] otherFields) {
    if (horizonS <= 0) {
      throw new IllegalArgumentException("the horizon must be positive: " + horizonS);
    }
    this.horizonS = horizonS;
    this.hiField = hiField;
    this.loField = loField;
    this.otherFields = otherFields.clone();
  }

  @Override
  public void initializeState(StateInitializationContext context) throws Exception {
    super.initializeState(context);
    maxParallelism = getRuntimeContext().getTaskInfo().getMaxNumberOfParallelSubtasks();
    sets = new FingerprintSet[maxParallelism];
    for (KeyGroupStatePartitionStreamProvider group : context.getRawKeyedStateInputs()) {
      setOf(group.getKeyGroupId()).read(group.getStream());
    }
  }

  /** The raw keyed state is this operator's sets (Flink's timers are not written there). */
  @Override
  protected boolean isUsingCustomRawKeyedState() {
    return true;
  }

  /** How long (seconds) an id is remembered after it was first seen. */
  public long getHorizonS() {
    return horizonS;
  }

  @Override
  public void processElement(StreamRecord<RowData> element) {
    RowData key = (RowData) getCurrentKey();
    long hi = key.isNullAt(hiField) ? 0 : key.getLong(hiField);
    long lo = key.isNullAt(loField) ? 0 : key.getLong(loField);
    for (int field : otherFields) {
      // String.hashCode is fixed by the Java spec (Flink's own string hash is not promised to
      // stay): the sets in a savepoint must match after an upgrade.
      hi ^= mix(key.isNullAt(field) ? 0 : key.getString(field).toString().hashCode() + 1L);
    }
    int group = KeyGroupRangeAssignment.assignToKeyGroup(key, maxParallelism);
    if (setOf(group).add(hi, lo, nowS(), horizonS)) {
      output.collect(element);
    }
  }

  @Override
  public void snapshotState(StateSnapshotContext context) throws Exception {
    super.snapshotState(context);
    KeyedStateCheckpointOutputStream out = context.getRawKeyedOperatorStateOutput();
    long nowS = nowS();
    for (int group : out.getKeyGroupList()) {
      out.startNewKeyGroup(group);
      setOf(group).write(out, nowS, horizonS);
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

  private long nowS() {
    return getProcessingTimeService().getCurrentProcessingTime() / 1000;
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
