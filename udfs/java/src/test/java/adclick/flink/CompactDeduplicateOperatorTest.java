package adclick.flink;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import org.apache.flink.api.java.functions.KeySelector;
import org.apache.flink.runtime.checkpoint.OperatorSubtaskState;
import org.apache.flink.runtime.state.KeyGroupRangeAssignment;
import org.apache.flink.runtime.state.KeyedStateCheckpointOutputStream;
import org.apache.flink.runtime.state.KeyedStateHandle;
import org.apache.flink.runtime.state.StateSnapshotContext;
import org.apache.flink.streaming.api.operators.AbstractStreamOperator;
import org.apache.flink.streaming.api.operators.OneInputStreamOperator;
import org.apache.flink.streaming.api.watermark.Watermark;
import org.apache.flink.streaming.runtime.streamrecord.StreamRecord;
import org.apache.flink.streaming.util.AbstractStreamOperatorTestHarness;
import org.apache.flink.streaming.util.KeyedOneInputStreamOperatorTestHarness;
import org.apache.flink.table.data.GenericRowData;
import org.apache.flink.table.data.RowData;
import org.apache.flink.table.data.StringData;
import org.apache.flink.table.data.TimestampData;
import org.apache.flink.table.runtime.typeutils.InternalTypeInfo;
import org.apache.flink.table.runtime.typeutils.RowDataSerializer;
import org.apache.flink.table.types.logical.BigIntType;
import org.apache.flink.table.types.logical.LocalZonedTimestampType;
import org.apache.flink.table.types.logical.RowType;
import org.apache.flink.table.types.logical.VarCharType;
import org.junit.jupiter.api.Test;

/**
 * The compact dedup as Flink runs it (its operator test harness: keyed input, watermarks,
 * checkpoints, restores and rescaling), against what the planner's keep-first-row dedup does
 * with its horizon measured in event time: the first row of a key within the horizon passes,
 * the others are dropped, and the horizon's clock is the watermark, never the wall clock.
 *
 * <p>Rows here are (event, id, key_hi, key_lo, event_time), keyed as the job's events are: by
 * the event type and the id's fingerprint, with the event type first, as the planner orders
 * the key.
 */
class CompactDeduplicateOperatorTest {

  private static final long HORIZON_S = 3600;
  private static final int MAX_PARALLELISM = 128;
  private static final long T0 = 1_767_225_600_000L; // 2026-01-01T00:00:00Z
  private static final long HOUR = 3_600_000L;

  private static final KeySelector<RowData, RowData> KEY =
      row -> GenericRowData.of(row.getString(0), row.getLong(2), row.getLong(3));
  private static final InternalTypeInfo<RowData> KEY_TYPE =
      InternalTypeInfo.ofFields(new VarCharType(VarCharType.MAX_LENGTH), new BigIntType(),
          new BigIntType());
  private static final RowType KEY_ROW = (RowType) KEY_TYPE.toLogicalType();

  private static RowData event(String event, String id, long eventMs) {
    EventKey key = new EventKey();
    key.of(id);
    return GenericRowData.of(StringData.fromString(event), StringData.fromString(id), key.hi,
        key.lo, TimestampData.fromEpochMillis(eventMs));
  }

  private static RowData click(String id, long eventMs) {
    return event("click", id, eventMs);
  }

  private static RowData click(String id) {
    return click(id, T0);
  }

  private static KeyedOneInputStreamOperatorTestHarness<RowData, RowData, RowData> harness(
      int parallelism, int subtask) throws Exception {
    return harness(new CompactDeduplicateOperator(HORIZON_S, Map.of(), 1, 2, new int[] {0}, 4,
        true, KEY_ROW), parallelism, subtask);
  }

  private static KeyedOneInputStreamOperatorTestHarness<RowData, RowData, RowData> harness(
      CompactDeduplicateOperator operator, int parallelism, int subtask) throws Exception {
    var h = new KeyedOneInputStreamOperatorTestHarness<RowData, RowData, RowData>(
        operator, KEY, KEY_TYPE, MAX_PARALLELISM, parallelism, subtask);
    h.setup(new RowDataSerializer(new VarCharType(VarCharType.MAX_LENGTH),
        new VarCharType(VarCharType.MAX_LENGTH), new BigIntType(), new BigIntType(),
        new LocalZonedTimestampType(3)));
    return h;
  }

  private static KeyedOneInputStreamOperatorTestHarness<RowData, RowData, RowData> started(
      OperatorSubtaskState state) throws Exception {
    KeyedOneInputStreamOperatorTestHarness<RowData, RowData, RowData> h = harness(1, 0);
    h.setProcessingTime(T0);
    h.initializeState(state);
    h.open();
    return h;
  }

  /** The ids of the rows the operator let through, in order. */
  private static List<String> passed(
      KeyedOneInputStreamOperatorTestHarness<RowData, RowData, RowData> h) {
    List<String> ids = new ArrayList<>();
    for (RowData row : h.extractOutputValues()) {
      ids.add(row.getString(0) + ":" + row.getString(1));
    }
    return ids;
  }

  private static void feed(KeyedOneInputStreamOperatorTestHarness<RowData, RowData, RowData> h,
                           RowData... rows) throws Exception {
    for (RowData row : rows) {
      h.processElement(new StreamRecord<>(row, 0));
    }
  }

  @Test
  void theFirstOfEachIdPassesItsRepeatsDoNot() throws Exception {
    try (var h = started(null)) {
      feed(h, click("a"), click("b"), click("a"), click("c"), click("b"), click("a"));
      assertEquals(List.of("click:a", "click:b", "click:c"), passed(h));
    }
  }

  @Test
  void aClickAndAnImpressionMayShareAnId() throws Exception {
    try (var h = started(null)) {
      feed(h, click("x"), event("impression", "x", T0), event("impression", "x", T0),
          click("x"));
      assertEquals(List.of("click:x", "impression:x"), passed(h));
    }
  }

  @Test
  void rowsAndWatermarksPassUnchangedAndInOrder() throws Exception {
    try (var h = started(null)) {
      RowData first = click("w");
      h.processElement(new StreamRecord<>(first, 42));
      h.processWatermark(new Watermark(1000));
      feed(h, click("w"));
      h.processWatermark(new Watermark(2000));
      List<Object> output = new ArrayList<>(h.getOutput());
      assertEquals(3, output.size());
      assertEquals(new StreamRecord<>(first, 42), output.get(0));
      assertEquals(new Watermark(1000), output.get(1));
      assertEquals(new Watermark(2000), output.get(2));
    }
  }

  @Test
  void aRestoredWatermarkIsPassedOnBeforeAnyRowAndNeverALowerOne() throws Exception {
    // The window after the classifier restores its watermark: a row read after a restore must
    // be classed against at least that one, not against none.
    OperatorSubtaskState state;
    try (var h = started(null)) {
      h.processWatermark(new Watermark(T0 + 90_000));
      state = h.snapshot(1, T0);
    }
    try (var h = started(state)) {
      h.processWatermark(new Watermark(T0 + 1_000)); // an input that starts again from behind
      RowData row = click("late", T0 + 30_000);
      h.processElement(new StreamRecord<>(row, 7));
      h.processWatermark(new Watermark(T0 + 50_000));
      h.processWatermark(new Watermark(T0 + 95_000));
      assertEquals(List.of(new Watermark(T0 + 90_000), new StreamRecord<>(row, 7),
          new Watermark(T0 + 95_000)), new ArrayList<>(h.getOutput()));
      // Checkpointed again before anything moved it: the restored one is kept.
      state = h.snapshot(2, T0);
    }
    try (var h = started(state)) {
      feed(h, click("next", T0 + 96_000));
      assertEquals(new Watermark(T0 + 95_000), h.getOutput().peek());
    }
  }

  @Test
  void aDrainedSavepointsEndOfTimeWatermarkIsNotCarried() throws Exception {
    OperatorSubtaskState state;
    try (var h = started(null)) {
      h.processWatermark(Watermark.MAX_WATERMARK); // what `flink stop --drain` sends
      state = h.snapshot(1, T0);
    }
    try (var h = started(state)) {
      RowData row = click("after-the-upgrade", T0);
      h.processElement(new StreamRecord<>(row, 3));
      h.processWatermark(new Watermark(T0));
      assertEquals(List.of(new StreamRecord<>(row, 3), new Watermark(T0)),
          new ArrayList<>(h.getOutput()));
    }
  }

  @Test
  void afterRescalingTheLowestRestoredWatermarkIsPassedOn() throws Exception {
    OperatorSubtaskState[] states = new OperatorSubtaskState[2];
    for (int i = 0; i < 2; i++) {
      try (var h = harness(2, i)) {
        h.setProcessingTime(T0);
        h.initializeState((OperatorSubtaskState) null);
        h.open();
        h.processWatermark(new Watermark(T0 + (i + 1) * 60_000L));
        states[i] = h.snapshot(1, T0);
      }
    }
    OperatorSubtaskState both = AbstractStreamOperatorTestHarness.repackageState(states);
    try (var h = harness(1, 0)) {
      h.setProcessingTime(T0);
      h.initializeState(AbstractStreamOperatorTestHarness.repartitionOperatorState(
          both, MAX_PARALLELISM, 2, 1, 0));
      h.open();
      h.processWatermark(new Watermark(Long.MIN_VALUE + 1));
      assertEquals(List.of(new Watermark(T0 + 60_000)), new ArrayList<>(h.getOutput()));
    }
  }

  @Test
  void aRepeatIsDroppedHoweverManyIdsCameBetween() throws Exception {
    // The set is rebuilt many times as it grows (expired entries dropped, live ones kept), and
    // the watermark moves on: a repeat within the horizon is still found.
    try (var h = started(null)) {
      feed(h, click("early"));
      for (int i = 0; i < 200_000; i++) {
        long at = T0 + i / 20_000 * 300_000L; // 5 minutes per 20,000 ids
        if (i % 20_000 == 0) {
          h.processWatermark(new Watermark(at));
        }
        feed(h, click("id-" + i, at));
      }
      h.processWatermark(new Watermark(T0 + (HORIZON_S - 1) * 1000));
      feed(h, click("early"), click("id-0"), click("id-199999"), click("late"));
      List<String> passed = passed(h);
      assertEquals(200_002, passed.size());
      assertEquals("click:late", passed.get(passed.size() - 1));
    }
  }

  @Test
  void impressionsMayHaveAShorterHorizonThanClicksInTheSameSets() throws Exception {
    var operator = new CompactDeduplicateOperator(
        HORIZON_S, Map.of("impression", 600L), 1, 2, new int[] {0}, 4, true, KEY_ROW);
    OperatorSubtaskState checkpoint;
    try (var h = harness(operator, 1, 0)) {
      h.open();
      feed(h, click("a"), event("impression", "a", T0));
      h.processWatermark(new Watermark(T0 + 599_999));
      feed(h, click("a"), event("impression", "a", T0));
      assertEquals(List.of("click:a", "impression:a"), passed(h));
      checkpoint = h.snapshot(1, T0);
    }
    var restored = harness(new CompactDeduplicateOperator(HORIZON_S, Map.of("impression", 600L),
        1, 2, new int[] {0}, 4, true, KEY_ROW), 1, 0);
    try (restored) {
      restored.initializeState(checkpoint);
      restored.open();
      restored.processWatermark(new Watermark(T0 + 600_000));
      // Ten minutes on, the impression's id has expired, the click's (an hour) has not.
      feed(restored, click("a"), event("impression", "a", T0));
      assertEquals(List.of("impression:a"), passed(restored));
    }
    assertEquals(600, operator.getHorizonS("impression"));
    assertEquals(HORIZON_S, operator.getHorizonS("click"));
  }

  @Test
  void anIdIsForgottenWhenTheWatermarkIsTheHorizonPastIt() throws Exception {
    try (var h = started(null)) {
      feed(h, click("a"));
      h.processWatermark(new Watermark(T0 + HORIZON_S * 1000 - 1));
      feed(h, click("a"));
      assertEquals(List.of("click:a"), passed(h));
      h.processWatermark(new Watermark(T0 + HORIZON_S * 1000));
      feed(h, click("a"));
      assertEquals(List.of("click:a", "click:a"), passed(h));
      // Passed again, it is stamped with the clock now: dropped for another horizon.
      h.processWatermark(new Watermark(T0 + 2 * HORIZON_S * 1000 - 1));
      feed(h, click("a"));
      assertEquals(2, passed(h).size());
    }
  }

  @Test
  void theWallClockNeverExpiresAnId() throws Exception {
    // The job stood still for ten horizons (processing time ran on, the watermark did not):
    // the ids seen before are all still remembered.
    try (var h = started(null)) {
      h.processWatermark(new Watermark(T0 - 5000));
      feed(h, click("a"), click("b"));
      h.setProcessingTime(T0 + 10 * HORIZON_S * 1000);
      feed(h, click("a"), click("b"), click("c"));
      assertEquals(List.of("click:a", "click:b", "click:c"), passed(h));
    }
  }

  @Test
  void aRestoreAfterALongOutageRemembersEveryIdOfTheCheckpoint() throws Exception {
    // Down for longer than the horizon: the backlog's watermark starts over behind the
    // restored clock, and resends of the ids before the outage are dropped.
    OperatorSubtaskState checkpoint;
    try (var h = started(null)) {
      h.processWatermark(new Watermark(T0 + 50 * 60_000));
      feed(h, click("a", T0 + 50 * 60_000), click("b", T0 + 55 * 60_000));
      checkpoint = h.snapshot(1, T0);
    }
    try (var h = harness(1, 0)) {
      h.setProcessingTime(T0 + 5 * HOUR); // five hours later on the wall clock
      h.initializeState(checkpoint);
      h.open();
      feed(h, click("a", T0 + 50 * 60_000), click("b", T0 + 55 * 60_000), click("c"));
      h.processWatermark(new Watermark(T0 + 56 * 60_000));
      feed(h, click("a", T0 + 50 * 60_000));
      assertEquals(List.of("click:c"), passed(h));
    }
  }

  @Test
  void anIdIsStampedWithItsEventTimeOrTheClockIfLater() throws Exception {
    try (var h = started(null)) {
      h.processWatermark(new Watermark(T0));
      // An event half an hour ahead of the watermark lives from its own time; one an hour
      // behind it lives from the clock (never less than a horizon of the clock's progress).
      feed(h, click("ahead", T0 + 30 * 60_000), click("behind", T0 - HOUR));
      h.processWatermark(new Watermark(T0 + HORIZON_S * 1000));
      feed(h, click("ahead", T0 + 30 * 60_000), click("behind", T0 - HOUR));
      assertEquals(List.of("click:ahead", "click:behind", "click:behind"), passed(h));
      h.processWatermark(new Watermark(T0 + HORIZON_S * 1000 + 30 * 60_000));
      feed(h, click("ahead", T0 + 30 * 60_000));
      assertEquals(4, passed(h).size());
    }
  }

  @Test
  void withoutWatermarksTheClockIsTheNewestEventTimeUpToTheWallClock() throws Exception {
    // Conversions: epoch milliseconds in a BIGINT, no watermark. A producer with a clock an
    // hour fast cannot expire the others' ids; the wall clock alone does not either.
    KeySelector<RowData, RowData> key = row -> GenericRowData.of(row.getLong(1), row.getLong(2));
    var h = new KeyedOneInputStreamOperatorTestHarness<RowData, RowData, RowData>(
        new CompactDeduplicateOperator(HORIZON_S, Map.of(), 0, 1, new int[0], 3, false,
            RowType.of(new BigIntType(), new BigIntType())), key,
        InternalTypeInfo.ofFields(new BigIntType(), new BigIntType()), MAX_PARALLELISM, 1, 0);
    h.setup(new RowDataSerializer(new VarCharType(VarCharType.MAX_LENGTH), new BigIntType(),
        new BigIntType(), new BigIntType()));
    h.setProcessingTime(T0);
    h.initializeState((OperatorSubtaskState) null);
    h.open();
    try (h) {
      h.processElement(new StreamRecord<>(conversion("v1", T0 - 1000), 0));
      h.processElement(new StreamRecord<>(conversion("fast", T0 + 2 * HOUR), 0));
      h.processElement(new StreamRecord<>(conversion("v1", T0 - 1000), 0));
      h.setProcessingTime(T0 + 10 * HOUR);
      h.processElement(new StreamRecord<>(conversion("v1", T0 - 1000), 0));
      assertEquals(2, h.extractOutputValues().size());
      h.processElement(new StreamRecord<>(conversion("later", T0 + 2 * HOUR), 0));
      h.processElement(new StreamRecord<>(conversion("v1", T0 - 1000), 0));
      assertEquals(4, h.extractOutputValues().size()); // the clock is 2 h past v1 now
    }
  }

  private static RowData conversion(String id, long eventMs) {
    EventKey key = new EventKey();
    key.of(id);
    return GenericRowData.of(StringData.fromString(id), key.hi, key.lo, eventMs);
  }

  @Test
  void aRestoreRemembersTheIdsOfTheCheckpointOnly() throws Exception {
    OperatorSubtaskState checkpoint;
    try (var h = started(null)) {
      feed(h, click("a"), click("b"));
      checkpoint = h.snapshot(1, T0);
      feed(h, click("c")); // after the checkpoint: replayed from Kafka after a restore
    }
    try (var h = started(checkpoint)) {
      feed(h, click("a"), click("c"), click("b"), click("c"), click("d"));
      assertEquals(List.of("click:c", "click:d"), passed(h));
    }
  }

  @Test
  void aCheckpointHoldsOnlyTheIdsAliveInTheHorizon() throws Exception {
    OperatorSubtaskState checkpoint;
    try (var h = started(null)) {
      feed(h, click("old", T0));
      h.processWatermark(new Watermark(T0 + 1800_000));
      feed(h, click("new", T0 + 1800_000));
      h.processWatermark(new Watermark(T0 + HORIZON_S * 1000));
      checkpoint = h.snapshot(1, T0);
    }
    try (var h = started(checkpoint)) {
      feed(h, click("old", T0), click("new", T0 + 1800_000));
      assertEquals(List.of("click:old"), passed(h));
    }
  }

  @Test
  void aCheckpointAddsTheIdsSinceTheLastAndDropsExpiredSegments() throws Exception {
    // A checkpoint's state grows by the ids added since the last one, 16 bytes each and a
    // segment's overhead per key group (what RocksDB's incremental checkpoints upload), not
    // by every id held; a segment whose ids have all expired is removed.
    OperatorSubtaskState first;
    OperatorSubtaskState second;
    OperatorSubtaskState third;
    try (var h = started(null)) {
      h.processWatermark(new Watermark(T0));
      feed(h, click("old", T0));
      first = h.snapshot(1, T0);
      for (int i = 0; i < 30_000; i++) {
        feed(h, click("new-" + i, T0 + 1800_000));
      }
      second = h.snapshot(2, T0);
      h.processWatermark(new Watermark(T0 + HORIZON_S * 1000));
      third = h.snapshot(3, T0);
    }
    long added = managedKeyedBytes(second) - managedKeyedBytes(first);
    assertTrue(added >= 30_000 * FingerprintSet.BYTES_PER_ENTRY, "added " + added);
    assertTrue(added < 2 * 30_000 * FingerprintSet.BYTES_PER_ENTRY, "added " + added);
    long dropped = managedKeyedBytes(second) - managedKeyedBytes(third);
    assertTrue(dropped >= FingerprintSet.BYTES_PER_ENTRY, "dropped " + dropped);
    try (var h = started(third)) {
      h.processWatermark(new Watermark(T0 + HORIZON_S * 1000));
      feed(h, click("old", T0), click("new-7", T0 + 1800_000));
      assertEquals(List.of("click:old"), passed(h));
    }
  }

  private static long managedKeyedBytes(OperatorSubtaskState state) {
    long bytes = 0;
    for (KeyedStateHandle handle : state.getManagedKeyedState()) {
      bytes += handle.getStateSize();
    }
    return bytes;
  }

  /**
   * Writes a key group's ids as the operator did before its segments: raw keyed state, the
   * format tag, the clock and the set of stamps (what a savepoint of an earlier release has).
   */
  private static final class FormerOperator extends AbstractStreamOperator<RowData>
      implements OneInputStreamOperator<RowData, RowData> {
    private final FingerprintSet[] sets = new FingerprintSet[MAX_PARALLELISM];

    @Override
    protected boolean isUsingCustomRawKeyedState() {
      return true;
    }

    @Override
    public void processElement(StreamRecord<RowData> element) {
      RowData key = (RowData) getCurrentKey();
      long hi = key.getLong(1) ^ mix(key.getString(0).toString().hashCode() + 1L);
      int group = KeyGroupRangeAssignment.assignToKeyGroup(key, MAX_PARALLELISM);
      if (sets[group] == null) {
        sets[group] = new FingerprintSet();
      }
      sets[group].add(hi, key.getLong(2), T0 / 1000, T0 / 1000); // the stamp where expiry is
    }

    @Override
    public void snapshotState(StateSnapshotContext context) throws Exception {
      super.snapshotState(context);
      KeyedStateCheckpointOutputStream out = context.getRawKeyedOperatorStateOutput();
      java.io.DataOutputStream data = new java.io.DataOutputStream(out);
      for (int group : out.getKeyGroupList()) {
        out.startNewKeyGroup(group);
        data.writeInt(CompactDeduplicateOperator.FORMAT_WITH_CLOCK);
        data.writeLong(T0 / 1000);
        data.flush();
        (sets[group] == null ? new FingerprintSet() : sets[group]).write(out, Long.MIN_VALUE);
      }
    }

    private static long mix(long value) { // the operator's, as it was
      long h = value;
      h ^= h >>> 33;
      h *= 0xff51afd7ed558ccdL;
      h ^= h >>> 33;
      h *= 0xc4ceb9fe1a85ec53L;
      h ^= h >>> 33;
      return h;
    }
  }

  @Test
  void aStateOfTheFormerRawFormatIsRestoredAndMovedIntoSegments() throws Exception {
    OperatorSubtaskState former;
    var h = new KeyedOneInputStreamOperatorTestHarness<RowData, RowData, RowData>(
        new FormerOperator(), KEY, KEY_TYPE, MAX_PARALLELISM, 1, 0);
    try (h) {
      h.setup(new RowDataSerializer(new VarCharType(VarCharType.MAX_LENGTH),
          new VarCharType(VarCharType.MAX_LENGTH), new BigIntType(), new BigIntType(),
          new LocalZonedTimestampType(3)));
      h.open();
      feed(h, click("a"), click("b"), event("impression", "a", T0));
      former = h.snapshot(1, T0);
    }
    OperatorSubtaskState moved;
    try (var restored = started(former)) {
      // Its ids are held, for the horizon after their stamps; its clock is restored.
      restored.processWatermark(new Watermark(T0 + HORIZON_S * 1000 - 1));
      feed(restored, click("a"), click("b"), event("impression", "a", T0), click("c"));
      assertEquals(List.of("click:c"), passed(restored));
      moved = restored.snapshot(2, T0);
    }
    // The next checkpoint carries them in segments: restored from it, they are still held.
    try (var again = started(moved)) {
      feed(again, click("a"), event("impression", "a", T0), click("c"), click("d"));
      assertEquals(List.of("click:d"), passed(again));
    }
  }

  @Test
  void rescalingMovesEachIdWithItsKeyGroup() throws Exception {
    List<RowData> seen = new ArrayList<>();
    for (int i = 0; i < 2000; i++) {
      seen.add(click("seen-" + i));
    }
    OperatorSubtaskState atTwo = run(2, null, 0, seen, new HashSet<>());
    // From 2 subtasks to 3, then to 1: every id seen before is dropped wherever it lands now,
    // and new ids pass.
    List<RowData> again = new ArrayList<>(seen);
    for (int i = 0; i < 500; i++) {
      again.add(click("new-" + i));
    }
    Set<String> passedAtThree = new HashSet<>();
    OperatorSubtaskState atThree = run(3, atTwo, 2, again, passedAtThree);
    Set<String> expected = new HashSet<>();
    for (int i = 0; i < 500; i++) {
      expected.add("click:new-" + i);
    }
    assertEquals(expected, passedAtThree);
    Set<String> passedAtOne = new HashSet<>();
    run(1, atThree, 3, again, passedAtOne);
    assertEquals(Set.of(), passedAtOne);
  }

  /**
   * Runs the operator at this parallelism from the state (taken at stateParallelism), each row
   * on the subtask its key goes to; adds the ids let through to passed; returns all subtasks'
   * state.
   */
  private static OperatorSubtaskState run(int parallelism, OperatorSubtaskState state,
                                          int stateParallelism, List<RowData> rows,
                                          Set<String> passed)
      throws Exception {
    List<KeyedOneInputStreamOperatorTestHarness<RowData, RowData, RowData>> subtasks =
        new ArrayList<>();
    for (int i = 0; i < parallelism; i++) {
      var h = harness(parallelism, i);
      h.setProcessingTime(T0);
      h.initializeState(state == null ? null
          : AbstractStreamOperatorTestHarness.repartitionOperatorState(
              state, MAX_PARALLELISM, stateParallelism, parallelism, i));
      h.open();
      h.processWatermark(new Watermark(T0));
      subtasks.add(h);
    }
    for (RowData row : rows) {
      int subtask = KeyGroupRangeAssignment.assignKeyToParallelOperator(
          KEY.getKey(row), MAX_PARALLELISM, parallelism);
      feed(subtasks.get(subtask), row);
    }
    OperatorSubtaskState[] states = new OperatorSubtaskState[parallelism];
    for (int i = 0; i < parallelism; i++) {
      passed.addAll(passed(subtasks.get(i)));
      states[i] = subtasks.get(i).snapshot(1, T0);
      subtasks.get(i).close();
    }
    return AbstractStreamOperatorTestHarness.repackageState(states);
  }

  @Test
  void theHorizonMustBePositive() {
    assertThrows(IllegalArgumentException.class,
        () -> new CompactDeduplicateOperator(0, Map.of(), 1, 2, new int[0], 3, true, KEY_ROW));
  }
}
