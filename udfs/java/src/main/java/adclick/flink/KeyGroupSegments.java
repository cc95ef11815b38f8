package adclick.flink;

import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import org.apache.flink.api.common.TaskInfo;
import org.apache.flink.api.common.state.MapState;
import org.apache.flink.api.common.state.MapStateDescriptor;
import org.apache.flink.api.common.typeutils.base.LongSerializer;
import org.apache.flink.api.common.typeutils.base.array.BytePrimitiveArraySerializer;
import org.apache.flink.runtime.state.KeyGroupRange;
import org.apache.flink.runtime.state.KeyGroupRangeAssignment;
import org.apache.flink.streaming.api.operators.AbstractStreamOperator;
import org.apache.flink.table.data.GenericRowData;
import org.apache.flink.table.data.RowData;
import org.apache.flink.table.data.StringData;
import org.apache.flink.table.runtime.typeutils.RowDataSerializer;
import org.apache.flink.table.types.logical.LogicalType;
import org.apache.flink.table.types.logical.LogicalTypeRoot;
import org.apache.flink.table.types.logical.RowType;

/**
 * The checkpointed form of an operator that keeps its own tables per key group (the compact
 * dedup and attribution), laid out so that a checkpoint carries what changed: per key group,
 * the entries added since the last checkpoint become one segment, a byte array under a new id
 * in a MapState of Flink's managed keyed state, and a segment is removed once every entry in
 * it has expired. On RocksDB with incremental checkpoints (the cluster's configuration) a
 * checkpoint then uploads the segments written since the last one, and what RocksDB's
 * compaction rewrote; on the heap backend a checkpoint still copies every segment, but in the
 * background (the tables themselves were written synchronously before).
 *
 * <p>Managed keyed state belongs to a key; a segment belongs to a key group. So each key group
 * of the subtask gets a key of the operator's key type that Flink places in that group, found
 * by trying keys made of a counter and built in the key serializer's binary form, the form a
 * restored key has (a generic row hashes and compares otherwise, and would not find it).
 * Restores and rescaling move the segments with their key groups, as Flink moves any state.
 *
 * <p>Ids below 0 are the operator's own slots (a clock, a small table rewritten whole), never
 * dropped; segments take ids from 0 up, per key group. Not thread-safe: one per operator.
 */
final class KeyGroupSegments {

  /** Reads one stored entry of a key group: a segment (id >= 0) or a slot (id < 0). */
  interface Reader {
    void read(int keyGroup, long id, byte[] bytes) throws Exception;
  }

  private final MapStateDescriptor<Long, byte[]> descriptor;
  private final int longsPerEntry;
  private AbstractStreamOperator<?> operator;
  private MapState<Long, byte[]> state;
  private KeyGroupRange range;
  private RowData[] keys;
  private long[] nextId;
  // Per key group of the range: each segment's id and the latest expiry of its entries.
  private List<TreeMap<Long, Long>> expiries;
  // Per key group of the range: the entries added since the last checkpoint, and their latest
  // expiry.
  private long[][] added;
  private int[] addedLongs;
  private long[] addedLatest;

  /** Segments of entries of longsPerEntry longs each (add), or of bytes (append). */
  KeyGroupSegments(String name, int longsPerEntry) {
    descriptor = new MapStateDescriptor<>(
        name, LongSerializer.INSTANCE, BytePrimitiveArraySerializer.INSTANCE);
    this.longsPerEntry = longsPerEntry;
  }

  /** Binds to the operator's keyed state; call from initializeState. */
  void open(AbstractStreamOperator<?> operator, RowType keyType) throws Exception {
    this.operator = operator;
    this.state = operator.getKeyedStateStore().getMapState(descriptor);
    TaskInfo task = operator.getRuntimeContext().getTaskInfo();
    int maxParallelism = task.getMaxNumberOfParallelSubtasks();
    this.range = KeyGroupRangeAssignment.computeKeyGroupRangeForOperatorIndex(
        maxParallelism, task.getNumberOfParallelSubtasks(), task.getIndexOfThisSubtask());
    int groups = range.getNumberOfKeyGroups();
    keys = new RowData[groups];
    nextId = new long[groups];
    expiries = new ArrayList<>(groups);
    for (int i = 0; i < groups; i++) {
      expiries.add(new TreeMap<>());
    }
    added = new long[groups][];
    addedLongs = new int[groups];
    addedLatest = new long[groups];
    Arrays.fill(addedLatest, Long.MIN_VALUE);
    RowDataSerializer serializer = new RowDataSerializer(keyType);
    int found = 0;
    for (long n = 0; found < groups; n++) {
      RowData key = serializer.toBinaryRow(keyOf(keyType, n)).copy();
      int group = KeyGroupRangeAssignment.assignToKeyGroup(key, maxParallelism);
      if (range.contains(group) && keys[group - range.getStartKeyGroup()] == null) {
        keys[group - range.getStartKeyGroup()] = key;
        found++;
      }
    }
  }

  /**
   * Reads every entry of every key group of this subtask, segments in the order written. Then
   * call {@link #expiresAt} for each segment, to have it dropped once it has expired.
   */
  void restore(Reader reader) throws Exception {
    for (int group = range.getStartKeyGroup(); group <= range.getEndKeyGroup(); group++) {
      select(group);
      TreeMap<Long, byte[]> entries = new TreeMap<>();
      for (Map.Entry<Long, byte[]> entry : state.entries()) {
        entries.put(entry.getKey(), entry.getValue());
      }
      for (Map.Entry<Long, byte[]> entry : entries.entrySet()) {
        long id = entry.getKey();
        if (id >= 0) {
          nextId[group - range.getStartKeyGroup()] =
              Math.max(nextId[group - range.getStartKeyGroup()], id + 1);
        }
        reader.read(group, id, entry.getValue());
      }
    }
  }

  /** Whether the key group belongs to this subtask. */
  boolean holds(int group) {
    return range.contains(group);
  }

  /** Notes that the segment's entries have all expired once the clock reaches expiry. */
  void expiresAt(int group, long id, long expiry) {
    expiries.get(group - range.getStartKeyGroup()).put(id, expiry);
  }

  /** Keeps an entry of two longs, added since the last checkpoint, for the next segment. */
  void add(int group, long expiry, long first, long second) {
    long[] list = room(group, 2);
    int index = group - range.getStartKeyGroup();
    list[addedLongs[index]++] = first;
    list[addedLongs[index]++] = second;
    addedLatest[index] = Math.max(addedLatest[index], expiry);
  }

  /** Keeps an entry of three longs, added since the last checkpoint, for the next segment. */
  void add(int group, long expiry, long first, long second, long third) {
    long[] list = room(group, 3);
    int index = group - range.getStartKeyGroup();
    list[addedLongs[index]++] = first;
    list[addedLongs[index]++] = second;
    list[addedLongs[index]++] = third;
    addedLatest[index] = Math.max(addedLatest[index], expiry);
  }

  private long[] room(int group, int longs) {
    if (longs != longsPerEntry) {
      throw new IllegalArgumentException(
          "entries of " + longsPerEntry + " longs here, not " + longs);
    }
    int index = group - range.getStartKeyGroup();
    long[] list = added[index];
    if (list == null || addedLongs[index] + longs > list.length) {
      list = list == null ? new long[32 * longs] : Arrays.copyOf(list, 2 * list.length);
      added[index] = list;
    }
    return list;
  }

  /**
   * Writes the entries added to the key group since the last call as a new segment (longs, big
   * endian), if there were any; call from snapshotState.
   */
  void appendAdded(int group) throws Exception {
    int index = group - range.getStartKeyGroup();
    int longs = addedLongs[index];
    if (longs == 0) {
      return;
    }
    ByteBuffer bytes = ByteBuffer.allocate(longs * Long.BYTES);
    bytes.asLongBuffer().put(added[index], 0, longs);
    append(group, bytes.array(), addedLatest[index]);
    addedLongs[index] = 0;
    addedLatest[index] = Long.MIN_VALUE;
    if (added[index].length > 2048 * longsPerEntry) {
      added[index] = null; // a burst's buffer is not kept
    }
  }

  /** Writes a new segment of the key group, all of whose entries expire by latestExpiry. */
  void append(int group, byte[] bytes, long latestExpiry) throws Exception {
    int index = group - range.getStartKeyGroup();
    long id = nextId[index]++;
    select(group);
    state.put(id, bytes);
    expiries.get(index).put(id, latestExpiry);
  }

  /** Writes one of the operator's own slots (id below 0), replacing what it held. */
  void put(int group, long slot, byte[] bytes) throws Exception {
    if (slot >= 0) {
      throw new IllegalArgumentException("a slot's id is below 0: " + slot);
    }
    select(group);
    state.put(slot, bytes);
  }

  /** Removes the key group's segments whose entries have all expired at now. */
  void dropExpired(int group, long now) throws Exception {
    Iterator<Map.Entry<Long, Long>> it =
        expiries.get(group - range.getStartKeyGroup()).entrySet().iterator();
    boolean selected = false;
    while (it.hasNext()) {
      Map.Entry<Long, Long> segment = it.next();
      if (segment.getValue() <= now) {
        if (!selected) {
          select(group);
          selected = true;
        }
        state.remove(segment.getKey());
        it.remove();
      }
    }
  }

  /** Segments of the key group held now. */
  int segments(int group) {
    return expiries.get(group - range.getStartKeyGroup()).size();
  }

  private void select(int group) {
    operator.setCurrentKey(keys[group - range.getStartKeyGroup()]);
  }

  /** A key of this type made of n: its numbers n, its strings "~segments-n". */
  private static RowData keyOf(RowType keyType, long n) {
    GenericRowData key = new GenericRowData(keyType.getFieldCount());
    for (int i = 0; i < keyType.getFieldCount(); i++) {
      LogicalType type = keyType.getTypeAt(i);
      if (type.is(LogicalTypeRoot.BIGINT)) {
        key.setField(i, n);
      } else if (type.is(LogicalTypeRoot.INTEGER)) {
        key.setField(i, (int) n);
      } else if (type.is(LogicalTypeRoot.VARCHAR) || type.is(LogicalTypeRoot.CHAR)) {
        key.setField(i, StringData.fromString("~segments-" + n));
      } else {
        throw new IllegalArgumentException("cannot make a key of " + keyType);
      }
    }
    return key;
  }
}
