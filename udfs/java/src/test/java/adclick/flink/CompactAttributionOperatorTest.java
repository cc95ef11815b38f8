package adclick.flink;

import static org.junit.jupiter.api.Assertions.assertDoesNotThrow;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.io.DataOutputStream;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.apache.flink.api.java.functions.KeySelector;
import org.apache.flink.runtime.checkpoint.OperatorSubtaskState;
import org.apache.flink.runtime.state.KeyGroupRangeAssignment;
import org.apache.flink.runtime.state.KeyedStateHandle;
import org.apache.flink.runtime.state.StateInitializationContext;
import org.apache.flink.runtime.state.StateSnapshotContext;
import org.apache.flink.streaming.api.operators.AbstractStreamOperator;
import org.apache.flink.streaming.api.operators.TwoInputStreamOperator;
import org.apache.flink.streaming.api.watermark.Watermark;
import org.apache.flink.streaming.runtime.streamrecord.StreamRecord;
import org.apache.flink.streaming.util.AbstractStreamOperatorTestHarness;
import org.apache.flink.streaming.util.KeyedTwoInputStreamOperatorTestHarness;
import org.apache.flink.table.data.GenericRowData;
import org.apache.flink.table.data.RowData;
import org.apache.flink.table.data.StringData;
import org.apache.flink.table.data.TimestampData;
import org.apache.flink.table.data.binary.BinaryStringData;
import org.apache.flink.table.runtime.typeutils.InternalTypeInfo;
import org.apache.flink.table.runtime.typeutils.RowDataSerializer;
import org.apache.flink.table.types.logical.BigIntType;
import org.apache.flink.table.types.logical.LocalZonedTimestampType;
import org.apache.flink.table.types.logical.LogicalType;
import org.apache.flink.table.types.logical.RowType;
import org.apache.flink.table.types.logical.VarCharType;
import org.apache.flink.types.RowKind;
import org.junit.jupiter.api.Test;

/**
 * The compact attribution as Flink runs it (its keyed two-input test harness: watermarks,
 * checkpoints, restores and rescaling), against what the planner's inner join on click_id does
 * with its state's times measured in event time: each conversion is emitted with its click, in
 * either order of arrival; a click is kept the retention past its click time and a waiting
 * conversion the wait past its conversion time, both on the clicks' watermark's clock, never
 * the wall clock.
 *
 * <p>Rows are the job's: conversions (conversion_id, click_id, conversion_ts_ms, type,
 * value_micros, conversion_minute) on input 1, counted clicks (click_id, ad_id, country,
 * device, traffic, click_ts_ms) on input 2, both keyed by click_id. A click's traffic label
 * comes out with it as it came in, whatever the other clicks of its (ad, country, device) had.
 */
class CompactAttributionOperatorTest {

  private static final long WAIT_S = 3600;
  private static final long RETENTION_S = 7 * 24 * 3600 + WAIT_S;
  private static final long WAIT_MS = WAIT_S * 1000;
  private static final long RETENTION_MS = RETENTION_S * 1000;
  private static final int MAX_PARALLELISM = 128;
  private static final long T0 = 1_767_225_600_000L; // 2026-01-01T00:00:00Z
  private static final long MINUTE = 60_000L;
  private static final long DAY = 24 * 3_600_000L;

  private static final VarCharType STRING = new VarCharType(VarCharType.MAX_LENGTH);
  private static final List<LogicalType> CONVERSION_FIELDS = List.of(STRING, STRING,
      new BigIntType(), STRING, new BigIntType(), new LocalZonedTimestampType(3));
  private static final RowType CONVERSION_TYPE = RowType.of(
      CONVERSION_FIELDS.toArray(new LogicalType[0]),
      new String[] {"conversion_id", "click_id", "conversion_ts_ms", "type", "value_micros",
          "conversion_minute"});
  private static final List<LogicalType> CLICK_FIELDS =
      List.of(STRING, STRING, STRING, STRING, STRING, new BigIntType());
  // The joined row's traffic: after the conversion's six columns and the click's first four.
  private static final int OUTPUT_TRAFFIC = 10;
  private static final String[] LABELS =
      {"valid", "bot_user_agent", "datacenter_ip", "repeat_click", "ip_frequency"};
  private static final List<LogicalType> OUTPUT_FIELDS = concat(CONVERSION_FIELDS, CLICK_FIELDS);

  private static final KeySelector<RowData, RowData> CONVERSION_KEY =
      row -> GenericRowData.of(row.getString(1));
  private static final KeySelector<RowData, RowData> CLICK_KEY =
      row -> GenericRowData.of(row.getString(0));
  private static final InternalTypeInfo<RowData> KEY_TYPE = InternalTypeInfo.ofFields(STRING);
  private static final RowType KEY_ROW = (RowType) KEY_TYPE.toLogicalType();

  private static <T> List<T> concat(List<T> first, List<T> second) {
    List<T> all = new ArrayList<>(first);
    all.addAll(second);
    return all;
  }

  private static RowData conversion(String conversionId, String clickId, long conversionMs) {
    return GenericRowData.of(StringData.fromString(conversionId),
        clickId == null ? null : StringData.fromString(clickId), conversionMs,
        StringData.fromString("purchase"), 1_990_000L,
        TimestampData.fromEpochMillis(conversionMs / MINUTE * MINUTE));
  }

  private static RowData click(String clickId, String adId, String country, String device,
                               String traffic, long clickMs) {
    return GenericRowData.of(StringData.fromString(clickId), StringData.fromString(adId),
        StringData.fromString(country), StringData.fromString(device),
        StringData.fromString(traffic), clickMs);
  }

  /** A valid click. */
  private static RowData click(String clickId, String adId, String country, String device,
                               long clickMs) {
    return click(clickId, adId, country, device, "valid", clickMs);
  }

  /** A click whose attributes and label follow from its id. */
  private static RowData click(String clickId, long clickMs) {
    int n = Math.abs(clickId.hashCode());
    return click(clickId, "ad-" + n % 17, new String[] {"FR", "DE", "ES", "US"}[n % 4],
        n % 2 == 0 ? "mobile" : "desktop", LABELS[n / 2 % LABELS.length], clickMs);
  }

  /** A row's values through the getters of its types (strings as Java strings). */
  private static List<Object> values(RowData row, List<LogicalType> types) {
    assertEquals(types.size(), row.getArity());
    List<Object> values = new ArrayList<>();
    for (int i = 0; i < types.size(); i++) {
      if (row.isNullAt(i)) {
        values.add(null);
        continue;
      }
      switch (types.get(i).getTypeRoot()) {
        case VARCHAR:
          values.add(row.getString(i).toString());
          break;
        case BIGINT:
          values.add(row.getLong(i));
          break;
        case TIMESTAMP_WITH_LOCAL_TIME_ZONE:
          values.add(row.getTimestamp(i, 3));
          break;
        default:
          throw new IllegalArgumentException(types.get(i).toString());
      }
    }
    return values;
  }

  /** The join's row of this conversion and click: the conversion's columns, then the click's. */
  private static List<Object> joined(RowData conversion, RowData click) {
    return concat(values(conversion, CONVERSION_FIELDS), values(click, CLICK_FIELDS));
  }

  /** Rows in a stable order, to compare outputs whose order is not promised. */
  private static List<List<Object>> sorted(List<List<Object>> rows) {
    List<List<Object>> copy = new ArrayList<>(rows);
    copy.sort(Comparator.comparing(Object::toString));
    return copy;
  }

  /** The operator as install() builds it for the job's conversions and clicks. */
  private static CompactAttributionOperator operator() {
    return new CompactAttributionOperator(RETENTION_S, WAIT_S, CONVERSION_TYPE, 1, 2, 6, 0, 1,
        2, 3, 4, 5, KEY_ROW);
  }

  private static final class Harness
      extends KeyedTwoInputStreamOperatorTestHarness<RowData, RowData, RowData, RowData> {

    Harness(int parallelism, int subtask) throws Exception {
      super(operator(), CONVERSION_KEY, CLICK_KEY, KEY_TYPE, MAX_PARALLELISM, parallelism,
          subtask);
      setup(new RowDataSerializer(OUTPUT_FIELDS.toArray(new LogicalType[0])));
    }

    CompactAttributionOperator attribution() {
      return (CompactAttributionOperator) getOperator();
    }

    void conversions(RowData... rows) throws Exception {
      for (RowData row : rows) {
        processElement1(new StreamRecord<>(row, 0));
      }
    }

    void clicks(RowData... rows) throws Exception {
      for (RowData row : rows) {
        processElement2(new StreamRecord<>(row, 0));
      }
    }

    /** Moves the clicks' watermark: the operator's clock. */
    void clock(long ms) throws Exception {
      processWatermark2(new Watermark(ms));
    }

    /** The joined rows emitted so far, as lists of 12 values. */
    List<List<Object>> joined() {
      List<List<Object>> rows = new ArrayList<>();
      for (RowData row : extractOutputValues()) {
        assertEquals(RowKind.INSERT, row.getRowKind());
        rows.add(values(row, OUTPUT_FIELDS));
      }
      return rows;
    }
  }

  private static Harness started(OperatorSubtaskState state) throws Exception {
    Harness h = new Harness(1, 0);
    h.setProcessingTime(T0);
    h.initializeState(state);
    h.open();
    return h;
  }

  @Test
  void aClickThenItsConversionEmitTheJoinedRow() throws Exception {
    try (Harness h = started(null)) {
      h.clock(T0);
      RowData click = click("k1", "ad-7", "FR", "mobile", "datacenter_ip", T0 - 5 * MINUTE);
      h.clicks(click);
      assertEquals(List.of(), h.joined());
      RowData conversion = conversion("v1", "k1", T0 + MINUTE);
      h.conversions(conversion);
      List<List<Object>> out = h.joined();
      assertEquals(1, out.size());
      assertEquals(12, out.get(0).size());
      assertEquals(joined(conversion, click), out.get(0));
      assertEquals(Arrays.asList("v1", "k1", T0 + MINUTE, "purchase", 1_990_000L,
          TimestampData.fromEpochMillis(T0 + MINUTE), "k1", "ad-7", "FR", "mobile",
          "datacenter_ip", T0 - 5 * MINUTE), out.get(0));
    }
  }

  @Test
  void aConversionBeforeItsClickIsEmittedWhenTheClickComesOnce() throws Exception {
    try (Harness h = started(null)) {
      h.clock(T0);
      RowData first = conversion("v1", "k1", T0);
      h.conversions(first);
      assertEquals(List.of(), h.joined());
      RowData click = click("k1", "ad-3", "DE", "desktop", T0 - MINUTE);
      h.clicks(click);
      assertEquals(List.of(joined(first, click)), h.joined());
      // The same click again (a fingerprint's twin): the conversion is not emitted twice.
      h.clicks(click, click("k1", "ad-9", "US", "tv", "bot_user_agent", T0));
      assertEquals(1, h.joined().size());
      // Another conversion of the click: emitted with it, its attributes the first copy's.
      RowData second = conversion("v2", "k1", T0 + 2 * MINUTE);
      h.conversions(second);
      assertEquals(List.of(joined(first, click), joined(second, click)), h.joined());
    }
  }

  @Test
  void allConversionsWaitingForAClickAreEmittedWithIt() throws Exception {
    try (Harness h = started(null)) {
      h.clock(T0);
      RowData v1 = conversion("v1", "k", T0);
      RowData v2 = conversion("v2", "k", T0 + 1000);
      RowData v3 = conversion("v3", "k", T0 + 2000);
      RowData other = conversion("w1", "other", T0);
      h.conversions(v1, other, v2, v3);
      assertEquals(List.of(), h.joined());
      RowData click = click("k", T0 - MINUTE);
      h.clicks(click);
      assertEquals(sorted(List.of(joined(v1, click), joined(v2, click), joined(v3, click))),
          sorted(h.joined()));
      // They were emitted, not kept waiting: a twin of the click emits nothing more.
      h.clicks(click);
      assertEquals(3, h.joined().size());
      RowData otherClick = click("other", T0);
      h.clicks(otherClick);
      assertEquals(4, h.joined().size());
      assertEquals(joined(other, otherClick), h.joined().get(3));
    }
  }

  @Test
  void aConversionWaitsForItsClickUntilTheClockIsTheWaitPastIt() throws Exception {
    try (Harness h = started(null)) {
      h.clock(T0);
      RowData old = conversion("old", "a", T0);
      RowData young = conversion("young", "b", T0 + 1);
      // Already the wait behind the clock when it comes: not kept at all.
      RowData stale = conversion("stale", "c", T0 - WAIT_MS);
      h.conversions(old, young, stale);
      h.clock(T0 + WAIT_MS);
      RowData clickB = click("b", T0 - MINUTE);
      h.clicks(click("a", T0 - MINUTE), clickB, click("c", T0 - 2 * WAIT_MS));
      assertEquals(List.of(joined(young, clickB)), h.joined());
    }
  }

  @Test
  void aConversionIsDroppedAsSoonAsTheCreepingClockIsTheWaitPastIt() throws Exception {
    // Watermarks come often and move little (every 10 s here): the conversion at T0 + 25 s
    // has waited its hour at T0 + 25 s + 1 h, the one at T0 + 35 s has not.
    try (Harness h = started(null)) {
      h.clock(T0);
      RowData old = conversion("old", "a", T0 + 25_000);
      RowData young = conversion("young", "b", T0 + 35_000);
      h.conversions(old, young);
      for (long at = T0 + 10_000; at <= T0 + 25_000 + WAIT_MS; at += 5_000) {
        h.clock(at);
      }
      RowData clickB = click("b", T0);
      h.clicks(click("a", T0), clickB);
      assertEquals(List.of(joined(young, clickB)), h.joined());
    }
  }

  @Test
  void aClickIsForgottenOnceTheClockIsTheRetentionPastIt() throws Exception {
    try (Harness h = started(null)) {
      h.clock(T0);
      RowData a = click("a", T0);
      RowData b = click("b", T0 + 1);
      h.clicks(a, b);
      h.clock(T0 + RETENTION_MS - 1);
      RowData first = conversion("v1", "a", T0 + RETENTION_MS - 2000);
      h.conversions(first);
      assertEquals(List.of(joined(first, a)), h.joined());
      h.clock(T0 + RETENTION_MS);
      RowData late = conversion("v2", "a", T0 + RETENTION_MS - 1000);
      RowData ofB = conversion("v3", "b", T0 + RETENTION_MS - 1000);
      h.conversions(late, ofB);
      // a is a retention old now: not found; b is a millisecond younger: found.
      assertEquals(List.of(joined(first, a), joined(ofB, b)), h.joined());
      h.clock(T0 + RETENTION_MS + 1);
      h.conversions(conversion("v4", "b", T0 + RETENTION_MS));
      assertEquals(2, h.joined().size());
    }
  }

  @Test
  void theWallClockNeverExpiresAnything() throws Exception {
    // The job stood still for a month (processing time ran on, the watermark did not).
    try (Harness h = started(null)) {
      h.clock(T0);
      RowData a = click("a", T0);
      RowData waiting = conversion("w", "b", T0);
      h.clicks(a);
      h.conversions(waiting);
      h.setProcessingTime(T0 + 30 * DAY);
      RowData ofA = conversion("v", "a", T0 + MINUTE);
      h.conversions(ofA);
      RowData b = click("b", T0 - MINUTE);
      h.clicks(b);
      assertEquals(List.of(joined(ofA, a), joined(waiting, b)), h.joined());
      assertEquals(T0, h.attribution().nowMs());
    }
  }

  @Test
  void theLastWatermarkOfBoundedClicksDoesNotExpireThem() throws Exception {
    try (Harness h = started(null)) {
      h.clock(T0);
      RowData a = click("a", T0 - 10 * MINUTE);
      RowData waiting = conversion("w", "b", T0);
      h.clicks(a, click("b", T0 - 2 * RETENTION_MS));
      h.conversions(conversion("x", "none", T0));
      h.clock(Long.MAX_VALUE); // the clicks' input has ended
      assertEquals(T0, h.attribution().nowMs());
      // Conversions read after the clicks ended (a backlog) still find their clicks.
      RowData ofA = conversion("v", "a", T0 + 2 * 3_600_000L);
      h.conversions(ofA, waiting);
      assertEquals(List.of(joined(ofA, a)), h.joined());
    }
  }

  @Test
  void aConversionWithoutAClickIdMatchesNothing() throws Exception {
    try (Harness h = started(null)) {
      h.clock(T0);
      RowData a = click("a", T0);
      h.clicks(a);
      h.conversions(conversion("null-1", null, T0), conversion("null-2", null, T0 + 1));
      assertEquals(List.of(), h.joined());
      RowData ofA = conversion("v", "a", T0);
      h.conversions(ofA);
      assertEquals(List.of(joined(ofA, a)), h.joined());
    }
  }

  @Test
  void aClickAlreadyPastTheRetentionMeetsNoConversion() throws Exception {
    // A click a retention older than the clock is expired from the start: a conversion waiting
    // for its id does not meet it (nor does the operator fail).
    try (Harness h = started(null)) {
      h.clock(T0);
      h.conversions(conversion("w", "a", T0));
      assertDoesNotThrow(() -> h.clicks(click("a", T0 - RETENTION_MS)));
      h.conversions(conversion("v", "a", T0));
      assertEquals(List.of(), h.joined());
    }
  }

  @Test
  void aRestoreKeepsTheClicksTheWaitingConversionsAndTheClock() throws Exception {
    RowData a = click("a", T0 - 10 * MINUTE);
    RowData waiting = conversion("waits", "b", T0 + 10 * MINUTE);
    OperatorSubtaskState checkpoint;
    try (Harness h = started(null)) {
      h.clock(T0);
      h.clicks(a);
      h.conversions(waiting);
      h.conversions(conversion("gone", "c", T0 - 5 * MINUTE)); // waited its hour at T0 + 55'
      h.clock(T0 + 55 * MINUTE);
      checkpoint = h.snapshot(1, T0);
      h.clicks(click("d", T0)); // after the checkpoint: replayed from Kafka after a restore
      assertEquals(List.of(), h.joined());
    }
    try (Harness h = new Harness(1, 0)) {
      h.setProcessingTime(T0 + 5 * 3_600_000L); // five hours later on the wall clock
      h.initializeState(checkpoint);
      h.open();
      assertEquals(T0 + 55 * MINUTE, h.attribution().nowMs());
      // No watermark yet: the restored clock expires a conversion an hour behind it.
      RowData ofA = conversion("v", "a", T0 + 20 * MINUTE);
      h.conversions(ofA, conversion("late", "e", T0 - 5 * MINUTE),
          conversion("ofD", "d", T0 + 50 * MINUTE));
      RowData b = click("b", T0 + 5 * MINUTE);
      h.clicks(b, click("c", T0 - 10 * MINUTE), click("e", T0 - 10 * MINUTE));
      assertEquals(List.of(joined(ofA, a), joined(waiting, b)), h.joined());
      // A backlog's watermark behind the restored clock does not move it back.
      h.clock(T0);
      assertEquals(T0 + 55 * MINUTE, h.attribution().nowMs());
    }
  }

  @Test
  void aCheckpointAddsTheNewClicksAndDropsTheExpiredOnes() throws Exception {
    // What a checkpoint holds grows by the clicks added since the last one, 24 bytes each and
    // a segment's overhead per key group (with RocksDB's incremental checkpoints, what one
    // uploads): with 20,000 clicks over 128 key groups (what 50,000 clicks/s bring in 0.4 s;
    // a checkpoint comes every 5 s) that overhead is already below the clicks' bytes. The
    // clicks' attributes are of few codes (3 ads x 2 devices x 2 labels), each written once per
    // key group: the dictionary's entries (about 45 bytes) are a cost of the first checkpoints,
    // not of each click. A segment whose clicks have all expired is removed.
    RowData young = click("young", T0);
    OperatorSubtaskState first;
    OperatorSubtaskState second;
    OperatorSubtaskState third;
    try (Harness h = started(null)) {
      h.clock(T0);
      h.clicks(click("old", T0 - RETENTION_MS + MINUTE));
      first = h.snapshot(1, T0);
      List<RowData> many = new ArrayList<>();
      for (int i = 0; i < 20_000; i++) {
        many.add(click("many-" + i, "ad-" + i % 3, "FR", i % 2 == 0 ? "mobile" : "desktop",
            i % 10 == 9 ? "bot_user_agent" : "valid", T0));
      }
      h.clicks(many.toArray(new RowData[0]));
      h.clicks(young);
      second = h.snapshot(2, T0);
      h.clock(T0 + MINUTE);
      third = h.snapshot(3, T0);
    }
    long added = managedKeyedBytes(second) - managedKeyedBytes(first);
    assertTrue(added >= 20_001 * ClickTable.BYTES_PER_CLICK, "added " + added);
    assertTrue(added < 2 * 20_001 * ClickTable.BYTES_PER_CLICK, "added " + added);
    // The old click's segment is gone: its 24 bytes and the segment's own overhead.
    long dropped = managedKeyedBytes(second) - managedKeyedBytes(third);
    assertTrue(dropped >= ClickTable.BYTES_PER_CLICK, "dropped " + dropped);
    try (Harness h = started(third)) {
      RowData ofOld = conversion("v1", "old", T0 + MINUTE);
      RowData ofYoung = conversion("v2", "young", T0 + MINUTE);
      h.conversions(ofOld, ofYoung);
      assertEquals(List.of(joined(ofYoung, young)), h.joined());
    }
    try (Harness h = started(second)) {
      // Restored before the clock passed it, the old click is still there.
      RowData ofOld = conversion("v1", "old", T0);
      h.conversions(ofOld);
      assertEquals(1, h.joined().size());
    }
  }

  private static long managedKeyedBytes(OperatorSubtaskState state) {
    long bytes = 0;
    for (KeyedStateHandle handle : state.getManagedKeyedState()) {
      bytes += handle.getStateSize();
    }
    return bytes;
  }

  @Test
  void rescalingMovesClicksAndWaitingConversionsWithTheirKeyGroups() throws Exception {
    List<RowData> clicks = new ArrayList<>();
    List<RowData> early = new ArrayList<>(); // conversions before their clicks
    List<RowData> lateClicks = new ArrayList<>();
    for (int i = 0; i < 300; i++) {
      clicks.add(click("k-" + i, T0 - i * 1000L));
    }
    for (int i = 0; i < 60; i++) {
      early.add(conversion("early-" + i, "w-" + i, T0 + i));
      lateClicks.add(click("w-" + i, T0 + MINUTE));
    }
    // At 1 subtask: the clicks, and conversions waiting for clicks not come yet.
    OperatorSubtaskState atOne;
    try (Harness h = started(null)) {
      h.clock(T0);
      h.clicks(clicks.toArray(new RowData[0]));
      h.conversions(early.toArray(new RowData[0]));
      h.clock(T0 + 10 * MINUTE);
      assertEquals(List.of(), h.joined());
      atOne = h.snapshot(1, T0);
    }

    // At 2 subtasks: each conversion on the subtask its click_id goes to finds its click, each
    // late click the conversions that waited for it.
    List<RowData> conversions = new ArrayList<>();
    List<List<Object>> expected = new ArrayList<>();
    for (int i = 0; i < clicks.size(); i++) {
      RowData conversion = conversion("v-" + i, "k-" + i, T0 + 5 * MINUTE);
      conversions.add(conversion);
      expected.add(joined(conversion, clicks.get(i)));
    }
    for (int i = 0; i < early.size(); i++) {
      expected.add(joined(early.get(i), lateClicks.get(i)));
    }
    List<Harness> two = restored(atOne, 1, 2);
    for (Harness h : two) {
      assertEquals(T0 + 10 * MINUTE, h.attribution().nowMs());
    }
    List<List<Object>> out = new ArrayList<>();
    OperatorSubtaskState[] states = joinEachAndClose(two, conversions, lateClicks, out);
    assertEquals(sorted(expected), sorted(out));

    // Back to 1 subtask: all clicks (the late ones too) are there for new conversions.
    List<Harness> one = restored(AbstractStreamOperatorTestHarness.repackageState(states), 2, 1);
    try (Harness h = one.get(0)) {
      List<List<Object>> again = new ArrayList<>();
      List<RowData> all = new ArrayList<>(clicks);
      all.addAll(lateClicks);
      for (RowData click : all) {
        RowData conversion = conversion("again-" + click.getString(0), click.getString(0)
            .toString(), T0 + 20 * MINUTE);
        h.conversions(conversion);
        again.add(joined(conversion, click));
      }
      assertEquals(again, h.joined());
    }
  }

  /** Harnesses of the operator at this parallelism, from state taken at stateParallelism. */
  private static List<Harness> restored(OperatorSubtaskState state, int stateParallelism,
                                        int parallelism) throws Exception {
    List<Harness> subtasks = new ArrayList<>();
    for (int i = 0; i < parallelism; i++) {
      Harness h = new Harness(parallelism, i);
      h.setProcessingTime(T0);
      h.initializeState(AbstractStreamOperatorTestHarness.repartitionOperatorState(
          state, MAX_PARALLELISM, stateParallelism, parallelism, i));
      h.open();
      subtasks.add(h);
    }
    return subtasks;
  }

  /** Feeds each row to the subtask its click_id's key group belongs to. */
  /**
   * Routes the rows to the subtasks that own them, adds each subtask's output to out (each must
   * match something), snapshots and closes them all; returns their states.
   */
  private static OperatorSubtaskState[] joinEachAndClose(List<Harness> subtasks,
      List<RowData> conversions, List<RowData> clicks, List<List<Object>> out) throws Exception {
    OperatorSubtaskState[] states = new OperatorSubtaskState[subtasks.size()];
    try {
      route(subtasks, conversions, clicks);
      for (int i = 0; i < subtasks.size(); i++) {
        List<List<Object>> joined = subtasks.get(i).joined();
        assertTrue(joined.size() > 0, "subtask " + i + " matched nothing");
        out.addAll(joined);
        states[i] = subtasks.get(i).snapshot(2, T0);
      }
    } finally {
      for (Harness h : subtasks) {
        h.close();
      }
    }
    return states;
  }

  private static void route(List<Harness> subtasks, List<RowData> conversions,
                            List<RowData> clicks) throws Exception {
    for (RowData row : conversions) {
      subtasks.get(KeyGroupRangeAssignment.assignKeyToParallelOperator(
          CONVERSION_KEY.getKey(row), MAX_PARALLELISM, subtasks.size())).conversions(row);
    }
    for (RowData row : clicks) {
      subtasks.get(KeyGroupRangeAssignment.assignKeyToParallelOperator(
          CLICK_KEY.getKey(row), MAX_PARALLELISM, subtasks.size())).clicks(row);
    }
  }

  @Test
  void theRetentionAndTheWaitMustBePositive() {
    assertThrows(IllegalArgumentException.class, () -> new CompactAttributionOperator(0, 1,
        CONVERSION_TYPE, 1, 2, 6, 0, 1, 2, 3, 4, 5, KEY_ROW));
    assertThrows(IllegalArgumentException.class, () -> new CompactAttributionOperator(1, 0,
        CONVERSION_TYPE, 1, 2, 6, 0, 1, 2, 3, 4, 5, KEY_ROW));
    CompactAttributionOperator operator = operator();
    assertEquals(RETENTION_S, operator.getRetentionS());
    assertEquals(WAIT_S, operator.getWaitS());
  }

  @Test
  void clicksOfOneAdCountryAndDeviceKeepTheirLabelsThroughRestoresAndRescaling()
      throws Exception {
    // 300 clicks of one (ad, country, device) with the five labels in turn (most key groups
    // hold several of them), and one without a label (kept as such).
    List<RowData> clicks = new ArrayList<>();
    for (int i = 0; i < 300; i++) {
      clicks.add(click("k-" + i, "ad-7", "FR", "mobile", LABELS[i % LABELS.length],
          T0 - i * 1000L));
    }
    clicks.add(click("k-none", "ad-7", "FR", "mobile", null, T0));
    List<RowData> conversions = new ArrayList<>();
    List<List<Object>> expected = new ArrayList<>();
    for (RowData click : clicks) {
      RowData conversion = conversion("v-" + click.getString(0), click.getString(0).toString(),
          T0 + MINUTE);
      conversions.add(conversion);
      expected.add(joined(conversion, click));
    }
    OperatorSubtaskState atOne;
    try (Harness h = started(null)) {
      h.clock(T0);
      h.clicks(clicks.toArray(new RowData[0]));
      // The output row carries the click's own label.
      h.conversions(conversions.get(0), conversions.get(1), conversions.get(300));
      List<List<Object>> out = h.joined();
      assertEquals(List.of(expected.get(0), expected.get(1), expected.get(300)), out);
      assertEquals("valid", out.get(0).get(OUTPUT_TRAFFIC));
      assertEquals("bot_user_agent", out.get(1).get(OUTPUT_TRAFFIC));
      assertEquals(null, out.get(2).get(OUTPUT_TRAFFIC));
      atOne = h.snapshot(1, T0);
    }
    try (Harness h = started(atOne)) {
      h.conversions(conversions.toArray(new RowData[0]));
      assertEquals(expected, h.joined());
    }

    // At 2 subtasks, then back at 1: each click still has its label.
    List<Harness> two = restored(atOne, 1, 2);
    List<List<Object>> out = new ArrayList<>();
    OperatorSubtaskState[] states = joinEachAndClose(two, conversions, List.of(), out);
    assertEquals(sorted(expected), sorted(out));
    List<Harness> one = restored(AbstractStreamOperatorTestHarness.repackageState(states), 2, 1);
    try (Harness h = one.get(0)) {
      h.conversions(conversions.toArray(new RowData[0]));
      assertEquals(expected, h.joined());
    }
  }

  /**
   * Writes clicks (of five columns: click_id, ad_id, country, device, click_ts_ms) into state
   * as the operator did before the traffic labels, a frozen copy of its snapshot: per key
   * group, the clicks' segment (24 bytes a click), the attributes' codes added (their count,
   * then each code and its three strings) and the clock (what a checkpoint of an earlier
   * release holds).
   */
  private static final class FormerOperator extends AbstractStreamOperator<RowData>
      implements TwoInputStreamOperator<RowData, RowData, RowData> {
    private transient KeyGroupSegments clicks;
    private transient KeyGroupSegments dictionary;
    private transient List<Map<List<String>, Integer>> codes;
    private transient int[] written;

    @Override
    public void initializeState(StateInitializationContext context) throws Exception {
      super.initializeState(context);
      codes = new ArrayList<>();
      for (int group = 0; group < MAX_PARALLELISM; group++) {
        codes.add(new LinkedHashMap<>());
      }
      written = new int[MAX_PARALLELISM];
      clicks = new KeyGroupSegments("compact-attribution-clicks", 3);
      clicks.open(this, KEY_ROW);
      dictionary = new KeyGroupSegments("compact-attribution-attributes", 0);
      dictionary.open(this, KEY_ROW);
    }

    @Override
    public void processElement1(StreamRecord<RowData> element) {}

    @Override
    public void processElement2(StreamRecord<RowData> element) {
      RowData click = element.getValue();
      EventKey fingerprint = new EventKey();
      fingerprint.of(((BinaryStringData) click.getString(0)).toBytes());
      int group = KeyGroupRangeAssignment.assignToKeyGroup(getCurrentKey(), MAX_PARALLELISM);
      Map<List<String>, Integer> here = codes.get(group);
      int code = here.computeIfAbsent(List.of(click.getString(1).toString(),
          click.getString(2).toString(), click.getString(3).toString()), k -> here.size());
      long clickMs = click.getLong(4);
      clicks.add(group, clickMs + RETENTION_MS, fingerprint.hi == 0 ? 1 : fingerprint.hi,
          (fingerprint.lo & ~0xFFFF_FFFFL) | (code & 0xFFFF_FFFFL), clickMs);
    }

    @Override
    public void snapshotState(StateSnapshotContext context) throws Exception {
      super.snapshotState(context);
      for (int group = 0; group < MAX_PARALLELISM; group++) {
        if (!clicks.holds(group)) {
          continue;
        }
        List<List<String>> values = new ArrayList<>(codes.get(group).keySet());
        if (written[group] < values.size()) {
          ByteArrayOutputStream bytes = new ByteArrayOutputStream();
          DataOutputStream data = new DataOutputStream(bytes);
          data.writeInt(values.size() - written[group]);
          for (int code = written[group]; code < values.size(); code++) {
            data.writeInt(code);
            for (String text : values.get(code)) {
              data.writeUTF(text);
            }
          }
          data.flush();
          dictionary.append(group, bytes.toByteArray(), Long.MAX_VALUE);
          written[group] = values.size();
        }
        clicks.appendAdded(group);
        clicks.put(group, CompactAttributionOperator.CLOCK_SLOT,
            ByteBuffer.allocate(Long.BYTES).putLong(T0).array());
      }
    }
  }

  @Test
  void aStateOfTheFormerUnlabelledFormatIsRestoredWithItsClicksValid() throws Exception {
    // Before the labels: clicks of five columns, every one counted was valid.
    List<RowData> former = new ArrayList<>();
    List<RowData> asValid = new ArrayList<>();
    for (int i = 0; i < 200; i++) {
      String id = "old-" + i;
      String ad = "ad-" + i % 3;
      String device = i % 2 == 0 ? "mobile" : "desktop";
      former.add(GenericRowData.of(StringData.fromString(id), StringData.fromString(ad),
          StringData.fromString("FR"), StringData.fromString(device), T0 - i * 1000L));
      asValid.add(click(id, ad, "FR", device, "valid", T0 - i * 1000L));
    }
    OperatorSubtaskState formerState;
    try (var h = new KeyedTwoInputStreamOperatorTestHarness<RowData, RowData, RowData, RowData>(
        new FormerOperator(), CONVERSION_KEY, CLICK_KEY, KEY_TYPE, MAX_PARALLELISM, 1, 0)) {
      h.setup(new RowDataSerializer(OUTPUT_FIELDS.toArray(new LogicalType[0])));
      h.open();
      for (RowData row : former) {
        h.processElement2(new StreamRecord<>(row, 0));
      }
      formerState = h.snapshot(1, T0);
    }

    // Restored: the clock, and each click with its attributes and the label valid. New clicks
    // of the same (ad, country, device), valid or not, come out with their own labels.
    List<RowData> fresh = new ArrayList<>();
    for (int i = 0; i < 100; i++) {
      fresh.add(click("new-" + i, "ad-" + i % 3, "FR", i % 2 == 0 ? "mobile" : "desktop",
          LABELS[i % LABELS.length], T0 + i * 1000L));
    }
    List<RowData> all = new ArrayList<>(asValid);
    all.addAll(fresh);
    List<RowData> conversions = new ArrayList<>();
    List<List<Object>> expected = new ArrayList<>();
    for (RowData click : all) {
      RowData conversion = conversion("v-" + click.getString(0), click.getString(0).toString(),
          T0 + 2 * MINUTE);
      conversions.add(conversion);
      expected.add(joined(conversion, click));
    }
    OperatorSubtaskState mixed;
    try (Harness h = started(formerState)) {
      assertEquals(T0, h.attribution().nowMs());
      h.conversions(conversions.subList(0, asValid.size()).toArray(new RowData[0]));
      assertEquals(expected.subList(0, asValid.size()), h.joined());
      h.clicks(fresh.toArray(new RowData[0]));
      mixed = h.snapshot(2, T0);
    }

    // Its dictionary now has segments of both formats: restored, rescaled, all are there.
    try (Harness h = started(mixed)) {
      h.conversions(conversions.toArray(new RowData[0]));
      assertEquals(expected, h.joined());
    }
    List<Harness> two = restored(mixed, 1, 2);
    List<List<Object>> out = new ArrayList<>();
    try {
      route(two, conversions, List.of());
      for (Harness h : two) {
        out.addAll(h.joined());
      }
    } finally {
      for (Harness h : two) {
        h.close();
      }
    }
    assertEquals(sorted(expected), sorted(out));
  }
}
