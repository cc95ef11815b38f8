package adclick.flink;

import static adclick.flink.ClickTrafficLabelsTest.T0;
import static adclick.flink.ClickTrafficLabelsTest.click;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import adclick.flink.InstallFixtures.FakeSource;
import adclick.flink.InstallFixtures.PassThrough;
import adclick.flink.ClickTrafficLabelsTest.TestClick;
import java.util.ArrayList;
import java.util.Collections;
import java.util.Comparator;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import org.apache.flink.api.common.functions.MapFunction;
import org.apache.flink.api.java.functions.KeySelector;
import org.apache.flink.core.memory.DataOutputSerializer;
import org.apache.flink.runtime.checkpoint.OperatorSubtaskState;
import org.apache.flink.runtime.state.VoidNamespace;
import org.apache.flink.runtime.state.VoidNamespaceSerializer;
import org.apache.flink.state.rocksdb.EmbeddedRocksDBStateBackend;
import org.apache.flink.state.rocksdb.RocksDBKeyedStateBackend;
import org.apache.flink.api.common.state.MapState;
import org.apache.flink.api.common.state.MapStateDescriptor;
import org.apache.flink.api.common.state.ValueState;
import org.apache.flink.api.common.state.ValueStateDescriptor;
import org.apache.flink.api.common.typeutils.base.ListSerializer;
import org.apache.flink.api.common.typeutils.base.LongSerializer;
import org.apache.flink.streaming.api.operators.AbstractStreamOperator;
import org.apache.flink.streaming.api.operators.KeyedProcessOperator;
import org.apache.flink.streaming.api.operators.OneInputStreamOperator;
import org.apache.flink.streaming.api.operators.SimpleOperatorFactory;
import org.apache.flink.streaming.api.operators.StreamMap;
import org.apache.flink.streaming.api.transformations.OneInputTransformation;
import org.apache.flink.streaming.api.watermark.Watermark;
import org.apache.flink.streaming.runtime.streamrecord.StreamRecord;
import org.apache.flink.streaming.util.KeyedOneInputStreamOperatorTestHarness;
import org.apache.flink.table.data.ArrayData;
import org.apache.flink.table.data.GenericRowData;
import org.apache.flink.table.data.MapData;
import org.apache.flink.table.data.RowData;
import org.apache.flink.table.data.StringData;
import org.apache.flink.table.data.TimestampData;
import org.apache.flink.table.data.utils.JoinedRowData;
import org.apache.flink.table.runtime.operators.over.RowTimeRangeBoundedPrecedingFunction;
import org.apache.flink.table.runtime.typeutils.InternalTypeInfo;
import org.apache.flink.table.runtime.typeutils.RowDataSerializer;
import org.apache.flink.table.types.logical.BigIntType;
import org.apache.flink.table.types.logical.LocalZonedTimestampType;
import org.apache.flink.table.types.logical.LogicalType;
import org.apache.flink.table.types.logical.MapType;
import org.apache.flink.table.types.logical.RowType;
import org.apache.flink.table.types.logical.TimestampKind;
import org.apache.flink.table.types.logical.VarCharType;
import org.apache.flink.types.RowKind;
import org.junit.jupiter.api.Test;

/**
 * The click labelling as Flink runs it (its keyed operator test harness: watermarks, timers,
 * checkpoints and restores): each counted click is labelled soon after it comes and emitted
 * when its minute closes or, late, at once, with revisions of the clicks after it; the labels it ends with, whatever the order
 * of arrival, are the rules' over the ad's clicks sorted by (ts, id), as the SQL's OVER says.
 *
 * <p>Rows are the OVER's input in the job: (event, event_id, ad_id, event_ts_ms, user_id, ip,
 * country, device, event_time rowtime, traffic, timeliness), keyed by ad_id.
 */
class ClickLabelOperatorTest {

  private static final long MINUTE = 60_000;
  private static final long LATENESS_MS = 300_000;
  private static final long LOOKBACK_MS = 600_000;
  private static final int MAX_PARALLELISM = 128;
  private static final VarCharType STRING = new VarCharType(VarCharType.MAX_LENGTH);
  private static final RowType INPUT = RowType.of(
      new LogicalType[] {STRING, STRING, STRING, new BigIntType(), STRING, STRING, STRING,
          STRING, new LocalZonedTimestampType(true, TimestampKind.ROWTIME, 3), STRING, STRING},
      new String[] {"event", "event_id", "ad_id", "event_ts_ms", "user_id", "ip", "country",
          "device", "event_time", "traffic", "timeliness"});
  private static final MapType LABELS = new MapType(STRING, STRING);
  private static final RowType OUTPUT = withLabels(INPUT);
  // Keys as the planner's key selectors make them (and a restore gives them back): binary.
  private static final RowDataSerializer KEYS = new RowDataSerializer(STRING);
  private static final KeySelector<RowData, RowData> AD = row -> key(row.getString(2));
  private static final InternalTypeInfo<RowData> KEY_TYPE = InternalTypeInfo.ofFields(STRING);

  private static RowData key(StringData ad) {
    return KEYS.toBinaryRow(GenericRowData.of(ad)).copy();
  }

  private static RowType withLabels(RowType input) {
    List<RowType.RowField> fields = new ArrayList<>(input.getFields());
    fields.add(new RowType.RowField("w0$o0", LABELS));
    return new RowType(fields);
  }

  private static RowData row(TestClick c) {
    return GenericRowData.of(StringData.fromString("click"), StringData.fromString(c.id),
        StringData.fromString(c.ad), c.ts, StringData.fromString(c.user),
        c.ip == null ? null : StringData.fromString(c.ip), StringData.fromString("FR"),
        StringData.fromString("mobile"), TimestampData.fromEpochMillis(c.ts),
        c.traffic == null ? null : StringData.fromString(c.traffic),
        StringData.fromString("on_time"));
  }

  private static ClickLabelOperator operator() {
    return operator(-1L);
  }

  /** With the users' and ip keys' hashes cut to hashMask's bits. */
  private static ClickLabelOperator operator(long hashMask) {
    return new ClickLabelOperator(INPUT, 1, 3, 4, 5, 9, ClickRules.defaults(), LATENESS_MS,
        hashMask);
  }

  /** The harness, its input and output rows, and what its output says so far. */
  private static final class Harness
      extends KeyedOneInputStreamOperatorTestHarness<RowData, RowData, RowData> {

    Harness() throws Exception {
      this(false);
    }

    /** On the heap backend (the harness's), or on RocksDB: every state serialized. */
    Harness(boolean rocksDb) throws Exception {
      this(rocksDb, -1L);
    }

    Harness(boolean rocksDb, long hashMask) throws Exception {
      super(operator(hashMask), AD, KEY_TYPE, MAX_PARALLELISM, 1, 0);
      if (rocksDb) {
        setStateBackend(new EmbeddedRocksDBStateBackend());
      }
      setup(new RowDataSerializer(OUTPUT));
    }

    static Harness started(OperatorSubtaskState state) throws Exception {
      return started(state, false);
    }

    static Harness started(OperatorSubtaskState state, boolean rocksDb) throws Exception {
      return started(state, rocksDb, -1L);
    }

    static Harness started(OperatorSubtaskState state, boolean rocksDb, long hashMask)
        throws Exception {
      Harness h = new Harness(rocksDb, hashMask);
      h.initializeState(state);
      h.open();
      return h;
    }

    void feed(TestClick... clicks) throws Exception {
      for (TestClick c : clicks) {
        processElement(new StreamRecord<>(row(c), c.ts));
      }
    }

    void watermark(long ms) throws Exception {
      processWatermark(new Watermark(ms));
    }

    /** A checkpoint as a task takes it: the operator's step before the barrier, then its state. */
    OperatorSubtaskState checkpoint() throws Exception {
      prepareSnapshotPreBarrier(1);
      return snapshot(1, 0);
    }

    /**
     * The keyed state left: on the heap its entries; on RocksDB the (key, namespace) pairs of
     * each of the operator's states (its column families also hold the timers, whose deletes
     * RocksDB's timer queue may not have written yet).
     */
    long stateEntries() {
      if (getOperator().getKeyedStateBackend() instanceof RocksDBKeyedStateBackend) {
        RocksDBKeyedStateBackend<?> rocksDb =
            (RocksDBKeyedStateBackend<?>) getOperator().getKeyedStateBackend();
        long entries = 0;
        for (String state : List.of("click-label-held", "click-label-by-ip-key",
            "click-label-by-user", "click-label-minutes", "click-label-minute-ip-keys",
            "click-label-minute-users", "click-label-oldest")) {
          try (java.util.stream.Stream<?> keys = rocksDb.getKeysAndNamespaces(state)) {
            entries += keys.count();
          }
        }
        return entries;
      }
      return numKeyedStateEntries();
    }

    /** The labels of the rows emitted, in order, as (id, label) or (id, label, replaced). */
    List<List<String>> emitted() {
      List<List<String>> out = new ArrayList<>();
      for (RowData row : extractOutputValues()) {
        assertEquals(OUTPUT.getFieldCount(), row.getArity());
        assertEquals(RowKind.INSERT, row.getRowKind());
        Map<String, String> labels = labels(row);
        String id = row.getString(1).toString();
        List<String> entry = new ArrayList<>(List.of(id, labels.get(id)));
        if (labels.containsKey(ClickLabelOperator.REPLACES)) {
          entry.add(labels.get(ClickLabelOperator.REPLACES));
          assertEquals(2, labels.size());
        } else {
          assertEquals(1, labels.size());
        }
        out.add(entry);
      }
      return out;
    }
  }

  static Map<String, String> labels(RowData row) {
    MapData map = row.getMap(OUTPUT.getFieldCount() - 1);
    ArrayData keys = map.keyArray();
    ArrayData values = map.valueArray();
    Map<String, String> labels = new LinkedHashMap<>();
    for (int i = 0; i < map.size(); i++) {
      labels.put(keys.getString(i).toString(), values.getString(i).toString());
    }
    return labels;
  }

  /**
   * The final label of each click from the output: a row sets its click's label, a revision
   * replaces the label it says it replaces (-1 old, +1 new). Checks each click is emitted once
   * and each revision replaces the label the click had.
   */
  static Map<String, String> finalLabels(List<List<String>> emitted) {
    Map<String, String> labels = new HashMap<>();
    for (List<String> row : emitted) {
      if (row.size() == 2) {
        assertNull(labels.put(row.get(0), row.get(1)), "emitted twice: " + row);
      } else {
        assertEquals(row.get(2), labels.get(row.get(0)), "revision of another label: " + row);
        labels.put(row.get(0), row.get(1));
      }
    }
    return labels;
  }

  static long revisions(List<List<String>> emitted) {
    return emitted.stream().filter(row -> row.size() == 3).count();
  }

  @Test
  void aMinutesClicksAreLabelledWhenItClosesAndBeforeTheWatermark() throws Exception {
    try (Harness h = Harness.started(null)) {
      h.feed(click("b", 9_999, "u1", "10.0.0.2"), click("a", 0, "u1", "10.0.0.1"),
          click("c", 20_000, "u1", "10.0.0.3"), click("d", 30_000, "u1", "10.0.0.4"),
          click("n", 60_000, "u9", "10.0.0.9"));
      h.watermark(T0 + 59_998);
      assertEquals(List.of(), h.emitted()); // the minute is still open
      h.watermark(T0 + 59_999);
      assertEquals(List.of(List.of("a", "valid"), List.of("b", "repeat_click"),
          List.of("c", "valid"), List.of("d", "valid")), h.emitted());
      List<Object> output = new ArrayList<>(h.getOutput());
      assertEquals(6, output.size()); // 2 watermarks, 4 rows
      assertEquals(new Watermark(T0 + 59_998), output.get(0));
      for (int i = 1; i <= 4; i++) {
        StreamRecord<?> record = assertInstanceOf(StreamRecord.class, output.get(i));
        assertEquals(T0 + 59_999, record.getTimestamp()); // the timer's, as the planner's OVER
      }
      assertEquals(new Watermark(T0 + 59_999), output.get(5));
      // The row is the input row, then its labels.
      RowData first = h.extractOutputValues().get(0);
      RowData input = row(click("a", 0, "u1", "10.0.0.1"));
      for (int i = 0; i < INPUT.getFieldCount(); i++) {
        assertEquals(RowData.createFieldGetter(INPUT.getTypeAt(i), i).getFieldOrNull(input),
            RowData.createFieldGetter(INPUT.getTypeAt(i), i).getFieldOrNull(first), "field " + i);
      }
    }
  }

  @Test
  void tiesAreOrderedByIdWhateverTheArrival() throws Exception {
    try (Harness h = Harness.started(null)) {
      h.feed(click("z", 5_000, "u1", "10.0.0.1"), click("a", 5_000, "u1", "10.0.0.2"));
      h.watermark(T0 + MINUTE);
      assertEquals(List.of(List.of("a", "valid"), List.of("z", "repeat_click")), h.emitted());
    }
  }

  @Test
  void ipFrequencyAcrossMinutesAndIpv6Slash64s() throws Exception {
    try (Harness h = Harness.started(null)) {
      h.feed(click("c1", 0, "u1", "2001:db8:1:2::1"),
          click("c2", MINUTE, "u2", "2001:db8:1:2:aaaa::1"),
          click("c3", 2 * MINUTE, "u3", "2001:db8:1:2:bbbb::1"),
          click("c4", 3 * MINUTE, "u4", "2001:db8:1:2:cccc::1"),
          click("c5", LOOKBACK_MS + MINUTE, "u5", "2001:db8:1:2::5"),
          click("c6", LOOKBACK_MS + 2 * MINUTE - 1, "u6", "2001:db8:1:2::6"));
      h.watermark(T0 + 20 * MINUTE);
      assertEquals(List.of(List.of("c1", "valid"), List.of("c2", "valid"),
          List.of("c3", "valid"), List.of("c4", "ip_frequency"),
          List.of("c5", "valid"), // c2 is W before it: c3, c4 only
          List.of("c6", "ip_frequency")), h.emitted()); // c3, c4, c5
    }
  }

  @Test
  void aLateClickIsLabelledAtOnceAndRevisesTheClicksAfterIt() throws Exception {
    try (Harness h = Harness.started(null)) {
      h.feed(click("b", MINUTE + 2_000, "u1", "10.0.0.1"),
          click("c", MINUTE + 3_000, "u2", "10.0.0.1"),
          click("d", MINUTE + 4_000, "u3", "10.0.0.1"));
      h.watermark(T0 + 2 * MINUTE);
      assertEquals(List.of(List.of("b", "valid"), List.of("c", "valid"), List.of("d", "valid")),
          h.emitted());
      h.getOutput().clear();
      // Late: its minute closed before it came. It makes b a repeat, d the 4th of its ip.
      h.feed(click("a", MINUTE - 5_000, "u1", "10.0.0.1"));
      assertEquals(List.of(List.of("a", "valid"), List.of("b", "repeat_click", "valid"),
          List.of("d", "ip_frequency", "valid")), h.emitted());
      StreamRecord<?> record = assertInstanceOf(StreamRecord.class, h.getOutput().peek());
      assertEquals(T0 + MINUTE - 5_000, record.getTimestamp()); // the input record's
      h.getOutput().clear();
      // A revision's row is the click's input row.
      h.feed(click("a0", MINUTE - 6_000, "u2", "10.0.0.2"));
      List<RowData> rows = h.extractOutputValues();
      assertEquals(List.of(List.of("a0", "valid"), List.of("c", "repeat_click", "valid")),
          h.emitted());
      assertEquals("c", rows.get(1).getString(1).toString());
      assertEquals(T0 + MINUTE + 3_000, rows.get(1).getLong(3));
      assertEquals("u2", rows.get(1).getString(4).toString());
      assertEquals(T0 + MINUTE + 3_000, rows.get(1).getTimestamp(8, 3).getMillisecond());
      assertTrue(rows.get(1).isNullAt(9));
    }
  }

  /**
   * Writes labelled clicks (stored rows) as the layout before 2026-12-07 kept them: a list per
   * minute of the ad, and the oldest minute.
   */
  private static final class PerMinuteLayout extends AbstractStreamOperator<RowData>
      implements OneInputStreamOperator<RowData, RowData> {
    private static final RowDataSerializer STORED =
        new RowDataSerializer(ClickLabelOperator.storedType(INPUT));
    private transient MapState<Long, List<RowData>> stored;
    private transient ValueState<Long> oldest;

    @Override
    public void open() throws Exception {
      super.open();
      stored = getPartitionedState(new MapStateDescriptor<>(
          ClickLabelOperator.PER_MINUTE_STATE, LongSerializer.INSTANCE,
          new ListSerializer<>(STORED)));
      oldest = getPartitionedState(new ValueStateDescriptor<>("click-label-oldest",
          LongSerializer.INSTANCE));
    }

    @Override
    public void processElement(StreamRecord<RowData> element) throws Exception {
      RowData row = STORED.toBinaryRow(element.getValue()).copy();
      long minute = ClickLabelOperator.minuteOf(row.getLong(3));
      List<RowData> rows = stored.contains(minute)
          ? new ArrayList<>(stored.get(minute)) : new ArrayList<>();
      rows.add(row);
      stored.put(minute, rows);
      if (oldest.value() == null || minute < oldest.value()) {
        oldest.update(minute);
      }
    }
  }

  /** The checkpoint of an operator writing an earlier layout's state from these records. */
  private static OperatorSubtaskState oldLayoutState(
      OneInputStreamOperator<RowData, RowData> layout, boolean rocksDb,
      List<StreamRecord<RowData>> records) throws Exception {
    try (KeyedOneInputStreamOperatorTestHarness<RowData, RowData, RowData> old =
             new KeyedOneInputStreamOperatorTestHarness<>(layout, AD, KEY_TYPE, MAX_PARALLELISM,
                 1, 0)) {
      if (rocksDb) {
        old.setStateBackend(new EmbeddedRocksDBStateBackend());
      }
      old.open();
      for (StreamRecord<RowData> record : records) {
        old.processElement(record);
      }
      return old.snapshot(1, 0);
    }
  }

  private static RowData storedRow(TestClick c, String label) {
    return new JoinedRowData(row(c), GenericRowData.of(StringData.fromString(label),
        StringData.fromString(IpAddress.key(c.ip))));
  }

  @Test
  void aStateOfThePerMinuteLayoutIsMovedAndLabelsAsBefore() throws Exception {
    for (boolean rocksDb : new boolean[] {false, true}) {
      OperatorSubtaskState state = oldLayoutState(new PerMinuteLayout(), rocksDb, List.of(
          new StreamRecord<>(storedRow(click("b", MINUTE + 2_000, "u1", "10.0.0.1"), "valid")),
          new StreamRecord<>(storedRow(click("c", MINUTE + 3_000, "u2", "10.0.0.1"), "valid")),
          new StreamRecord<>(storedRow(click("d", MINUTE + 4_000, "u3", "10.0.0.1"), "valid"))));
      try (Harness h = Harness.started(state, rocksDb)) {
        ClickLabelOperator operator = (ClickLabelOperator) h.getOperator();
        assertEquals(List.of(T0 + MINUTE), storedMinutes(h, "ad-1"), "moved");
        h.watermark(T0 + 2 * MINUTE);
        // As the late click did against the same clicks in the old layout (the test above).
        h.feed(click("a", MINUTE - 5_000, "u1", "10.0.0.1"));
        assertEquals(List.of(List.of("a", "valid"), List.of("b", "repeat_click", "valid"),
            List.of("d", "ip_frequency", "valid")), h.emitted(), "rocksDb " + rocksDb);
        operator.setCurrentKey(key(StringData.fromString("ad-1")));
        MapState<Long, List<RowData>> old = operator.getPartitionedState(
            VoidNamespace.INSTANCE, VoidNamespaceSerializer.INSTANCE, new MapStateDescriptor<>(ClickLabelOperator.PER_MINUTE_STATE,
                LongSerializer.INSTANCE, new ListSerializer<>(PerMinuteLayout.STORED)));
        assertTrue(old.isEmpty(), "the old layout's state is emptied");
        h.watermark(Long.MAX_VALUE);
        assertEquals(0L, h.stateEntries(), "the moved clicks expire");
      }
    }
  }

  @Test
  void aRestoredOperatorLabelsAndRevisesAsBefore() throws Exception {
    OperatorSubtaskState state;
    try (Harness h = Harness.started(null)) {
      h.feed(click("b", MINUTE + 2_000, "u1", "10.0.0.1"),
          click("p", 2 * MINUTE + 1_000, "u1", "10.0.0.2")); // p: still open at the checkpoint
      h.watermark(T0 + 2 * MINUTE);
      assertEquals(List.of(List.of("b", "valid")), h.emitted());
      state = h.checkpoint();
    }
    try (Harness h = Harness.started(state)) {
      // Late before the restored operator has seen a watermark: a waits for the next one,
      // then it is labelled (held: its minute never closed for this ad) and b revised, as at
      // once without the restart; a goes out as its minute closes.
      h.feed(click("a", MINUTE - 5_000, "u1", "10.0.0.1"));
      h.watermark(T0 + 2 * MINUTE);
      assertEquals(List.of(List.of("b", "repeat_click", "valid"), List.of("a", "valid")),
          h.emitted());
      h.getOutput().clear();
      h.watermark(T0 + 3 * MINUTE);
      assertEquals(List.of(List.of("p", "valid")), h.emitted());
    }
  }

  @Test
  void aClickOfAMinuteClosedBeforeTheRestoreGoesOutOnceAsALateOne() throws Exception {
    for (boolean rocksDb : new boolean[] {false, true}) {
      OperatorSubtaskState state;
      List<List<String>> emitted = new ArrayList<>();
      try (Harness h = Harness.started(null, rocksDb)) {
        h.feed(click("b", MINUTE + 2_000, "u1", "10.0.0.1"));
        h.watermark(T0 + 2 * MINUTE);
        emitted.addAll(h.emitted());
        state = h.checkpoint();
      }
      try (Harness h = Harness.started(state, rocksDb)) {
        // The restored watermark is back at the start, but b's minute closed for this ad: a
        // click of it is emitted when labelled, and b's revision with it, never b again.
        h.feed(click("a", MINUTE + 1_000, "u1", "10.0.0.2"));
        h.watermark(T0 + MINUTE);
        assertEquals(List.of(List.of("a", "valid"), List.of("b", "repeat_click", "valid")),
            h.emitted(), "rocksDb " + rocksDb);
        h.watermark(Long.MAX_VALUE);
        emitted.addAll(h.emitted());
        assertEquals(Map.of("a", "valid", "b", "repeat_click"), finalLabels(emitted));
        assertEquals(0L, h.stateEntries());
      }
    }
  }

  private static List<List<String>> heldLabels(Harness h, String ad, long minute)
      throws Exception {
    ClickLabelOperator operator = (ClickLabelOperator) h.getOperator();
    operator.setCurrentKey(key(StringData.fromString(ad)));
    return operator.heldLabels(minute);
  }

  @Test
  void aClickIsLabelledSoonAfterItComesAndHeldUntilItsMinuteCloses() throws Exception {
    for (boolean rocksDb : new boolean[] {false, true}) {
      try (Harness h = Harness.started(null, rocksDb)) {
        h.feed(click("b", 9_999, "u1", "10.0.0.1"), click("c", 20_000, "u2", "10.0.0.1"));
        assertEquals(List.of(), heldLabels(h, "ad-1", T0), "arrivals wait for a watermark");
        h.watermark(T0 + 10_000);
        assertEquals(List.of(List.of("b", "valid"), List.of("c", "valid")),
            heldLabels(h, "ad-1", T0), "labelled, stored and held");
        assertEquals(List.of(T0), storedMinutes(h, "ad-1"));
        // Out of order within the open minute: a makes b a repeat. Only b's held label
        // changes (its row appended again); nothing is emitted.
        h.feed(click("a", 0, "u1", "10.0.0.1"));
        h.watermark(T0 + 59_998);
        assertEquals(List.of(List.of("b", "valid"), List.of("c", "valid"),
            List.of("a", "valid"), List.of("b", "repeat_click")), heldLabels(h, "ad-1", T0));
        assertEquals(List.of(), h.emitted());
        h.watermark(T0 + 59_999);
        assertEquals(List.of(List.of("a", "valid"), List.of("b", "repeat_click"),
            List.of("c", "valid")), h.emitted(), "once each, no revision; rocksDb " + rocksDb);
        assertEquals(List.of(), heldLabels(h, "ad-1", T0));
        h.watermark(Long.MAX_VALUE);
        assertEquals(0L, h.stateEntries());
      }
    }
  }

  @Test
  void aCheckpointTakesTheArrivalsNotLabelledYet() throws Exception {
    for (boolean rocksDb : new boolean[] {false, true}) {
      OperatorSubtaskState state;
      try (Harness h = Harness.started(null, rocksDb)) {
        h.watermark(T0);
        h.feed(click("a", 1_000, "u1", "10.0.0.1"), click("b", 2_000, "u1", "10.0.0.2"));
        state = h.checkpoint(); // no watermark since they came
        assertEquals(List.of(List.of("a", "valid"), List.of("b", "repeat_click")),
            heldLabels(h, "ad-1", T0), "labelled before the checkpoint");
      }
      try (Harness h = Harness.started(state, rocksDb)) {
        h.watermark(T0 + MINUTE);
        assertEquals(List.of(List.of("a", "valid"), List.of("b", "repeat_click")), h.emitted(),
            "rocksDb " + rocksDb);
      }
    }
  }

  @Test
  void aFullBufferOfArrivalsIsLabelledWithoutWaitingForAWatermark() throws Exception {
    try (Harness h = Harness.started(null)) {
      for (int i = 0; i < ClickLabelOperator.ARRIVALS_LIMIT; i++) {
        h.feed(click("c" + i, i % MINUTE, "u" + i, "10.0." + (i / 250) + "." + (i % 250)));
      }
      assertEquals(ClickLabelOperator.ARRIVALS_LIMIT, heldLabels(h, "ad-1", T0).size());
      h.feed(click("last", 59_000, "u-last", "10.1.0.1"));
      assertEquals(ClickLabelOperator.ARRIVALS_LIMIT, heldLabels(h, "ad-1", T0).size(),
          "the next waits again");
      h.watermark(T0 + MINUTE);
      assertEquals(ClickLabelOperator.ARRIVALS_LIMIT + 1, h.emitted().size());
    }
  }

  /** Writes open minutes' clicks as the layouts before 2026-12-08 did: unlabelled, pending. */
  private static final class PendingLayout extends AbstractStreamOperator<RowData>
      implements OneInputStreamOperator<RowData, RowData>,
      org.apache.flink.streaming.api.operators.Triggerable<Object, VoidNamespace> {
    private transient org.apache.flink.api.common.state.ListState<RowData> pending;
    private transient org.apache.flink.streaming.api.operators.InternalTimerService<VoidNamespace>
        timers;

    @Override
    public void open() throws Exception {
      super.open();
      pending = getPartitionedState(new org.apache.flink.api.common.state.ListStateDescriptor<>(
          ClickLabelOperator.PENDING_STATE, new RowDataSerializer(INPUT)));
      timers = getInternalTimerService("click-label-timers", VoidNamespaceSerializer.INSTANCE,
          this);
    }

    @Override
    public void processElement(StreamRecord<RowData> element) throws Exception {
      RowData row = element.getValue();
      pending.add(new RowDataSerializer(INPUT).toBinaryRow(row).copy());
      timers.registerEventTimeTimer(VoidNamespace.INSTANCE,
          ClickLabelOperator.minuteOf(row.getLong(3)) + MINUTE - 1);
    }

    @Override
    public void onEventTime(
        org.apache.flink.streaming.api.operators.InternalTimer<Object, VoidNamespace> timer) {}

    @Override
    public void onProcessingTime(
        org.apache.flink.streaming.api.operators.InternalTimer<Object, VoidNamespace> timer) {}
  }

  @Test
  void aStateWithPendingClicksIsLabelledAndEmittedAsBefore() throws Exception {
    for (boolean rocksDb : new boolean[] {false, true}) {
      OperatorSubtaskState state = oldLayoutState(new PendingLayout(), rocksDb, List.of(
          new StreamRecord<>(row(click("b", 5_000, "u1", "10.0.0.1")), T0),
          new StreamRecord<>(row(click("a", 1_000, "u1", "10.0.0.1")), T0)));
      try (Harness h = Harness.started(state, rocksDb)) {
        ClickLabelOperator operator = (ClickLabelOperator) h.getOperator();
        operator.setCurrentKey(key(StringData.fromString("ad-1")));
        org.apache.flink.api.common.state.ListState<RowData> old = operator.getPartitionedState(
            VoidNamespace.INSTANCE, VoidNamespaceSerializer.INSTANCE,
            new org.apache.flink.api.common.state.ListStateDescriptor<>(
                ClickLabelOperator.PENDING_STATE, new RowDataSerializer(INPUT)));
        Iterable<RowData> left = old.get();
        assertTrue(left == null || !left.iterator().hasNext(), "the old state is emptied");
        h.watermark(T0 + MINUTE); // the restored timer closes the minute
        assertEquals(List.of(List.of("a", "valid"), List.of("b", "repeat_click")), h.emitted(),
            "rocksDb " + rocksDb);
        h.watermark(Long.MAX_VALUE);
        assertEquals(0L, h.stateEntries());
      }
    }
  }

  @Test
  void theStatelessLabelWinsAndABotsClickStillCounts() throws Exception {
    try (Harness h = Harness.started(null)) {
      h.feed(click("b", 1_000, "u1", "10.0.0.1", "bot_user_agent"),
          click("c", 2_000, "u1", "10.0.0.2", "datacenter_ip"),
          click("d", 3_000, "u1", "10.0.0.3"));
      h.watermark(T0 + MINUTE);
      h.feed(click("a", 0, "u1", "10.0.0.4")); // late, before them: none changes
      assertEquals(List.of(List.of("b", "bot_user_agent"), List.of("c", "datacenter_ip"),
          List.of("d", "repeat_click"), List.of("a", "valid")), h.emitted());
    }
  }

  /** The clicks in order of time, each before the watermark reaches it; then the end. */
  private static List<List<String>> sortedRun(List<TestClick> clicks) throws Exception {
    List<TestClick> sorted = new ArrayList<>(clicks);
    sorted.sort(ClickTrafficLabelsTest.ORDER);
    try (Harness h = Harness.started(null)) {
      long watermark = Long.MIN_VALUE;
      for (TestClick c : sorted) {
        if (c.ts - 1 > watermark) {
          watermark = c.ts - 1;
          h.watermark(watermark);
        }
        h.feed(c);
      }
      h.watermark(Long.MAX_VALUE);
      assertEquals(0, h.numKeyedStateEntries());
      return h.emitted();
    }
  }

  /**
   * The clicks shuffled within the lateness: each arrives between its time and 4 minutes
   * after its minute closed, the watermark 2 s behind the arrivals; restarted from a
   * checkpoint at restoreAt (an index in the arrivals; -1: never).
   */
  private static List<List<String>> shuffledRun(List<TestClick> clicks, long seed,
                                                int restoreAt) throws Exception {
    return shuffledRun(clicks, seed, restoreAt, false);
  }

  private static List<List<String>> shuffledRun(List<TestClick> clicks, long seed,
                                                int restoreAt, boolean rocksDb)
      throws Exception {
    return shuffledRun(clicks, seed, restoreAt, rocksDb, -1L);
  }

  private static List<List<String>> shuffledRun(List<TestClick> clicks, long seed,
                                                int restoreAt, boolean rocksDb, long hashMask)
      throws Exception {
    Random random = new Random(seed);
    Map<TestClick, Long> arrival = new HashMap<>();
    for (TestClick c : clicks) {
      long latest = ClickLabelOperator.minuteOf(c.ts) + MINUTE - 1 + 4 * MINUTE;
      arrival.put(c, c.ts + (long) (random.nextDouble() * (latest - c.ts)));
    }
    List<TestClick> arrivals = new ArrayList<>(clicks);
    Collections.shuffle(arrivals, random);
    arrivals.sort(Comparator.comparingLong(arrival::get));
    List<List<String>> emitted = new ArrayList<>();
    Harness h = Harness.started(null, rocksDb, hashMask);
    long watermark = Long.MIN_VALUE;
    for (int i = 0; i < arrivals.size(); i++) {
      if (i == restoreAt) {
        OperatorSubtaskState state = h.checkpoint();
        emitted.addAll(h.emitted());
        h.close();
        h = Harness.started(state, rocksDb, hashMask);
      }
      TestClick c = arrivals.get(i);
      if (arrival.get(c) - 2_000 > watermark) {
        watermark = arrival.get(c) - 2_000;
        h.watermark(watermark);
      }
      h.feed(c);
    }
    assertTrue(h.stateEntries() > 0);
    h.watermark(Long.MAX_VALUE);
    assertEquals(0L, h.stateEntries());
    emitted.addAll(h.emitted());
    h.close();
    return emitted;
  }

  @Test
  void theLabelsAreTheRulesOverTheSortedClicksWhateverTheArrivalOrder() throws Exception {
    long revised = 0;
    for (long seed = 1; seed <= 5; seed++) {
      List<TestClick> clicks = ClickTrafficLabelsTest.randomClicks(seed, 200);
      Map<String, String> expected = ClickTrafficLabelsTest.expected(clicks);
      assertEquals(expected, ClickTrafficLabelsTest.overBatch(clicks), "the SQL says the same");
      List<List<String>> sorted = sortedRun(clicks);
      assertEquals(0, revisions(sorted), "in order, nothing is revised");
      assertEquals(expected, finalLabels(sorted), "seed " + seed);
      List<List<String>> shuffled = shuffledRun(clicks, seed, -1);
      assertEquals(expected, finalLabels(shuffled), "seed " + seed);
      revised += revisions(shuffled);
      // Restored mid-stream (its watermark back at the start until the next comes).
      List<List<String>> restored = shuffledRun(clicks, seed, clicks.size() / 2);
      assertEquals(expected, finalLabels(restored), "restored, seed " + seed);
    }
    assertTrue(revised > 0, "late clicks revised some labels");
  }

  @Test
  void usersAndIpKeysSharingAHashAreToldApart() throws Exception {
    for (long seed = 1; seed <= 3; seed++) {
      List<TestClick> clicks = ClickTrafficLabelsTest.randomClicks(seed, 200);
      Map<String, String> expected = ClickTrafficLabelsTest.expected(clicks);
      // 2 bits: the 8 users share 4 hashes, the 13 ip keys 4 too
      for (boolean rocksDb : new boolean[] {false, true}) {
        List<List<String>> restored = shuffledRun(clicks, seed, clicks.size() / 2, rocksDb, 3L);
        assertEquals(expected, finalLabels(restored), "seed " + seed + ", rocksDb " + rocksDb);
      }
    }
  }

  @Test
  void aMinuteOfClicksWithoutAUserIsLabelledAndExpires() throws Exception {
    for (boolean rocksDb : new boolean[] {false, true}) {
      try (Harness h = Harness.started(null, rocksDb)) {
        for (String id : List.of("a", "b", "c", "d")) {
          RowData row = row(click(id, 1_000, "u", "10.0.0.1"));
          ((GenericRowData) row).setField(4, null);  // no user_id
          h.processElement(new StreamRecord<>(row, T0 + 1_000));
        }
        h.watermark(T0 + MINUTE);
        assertEquals(List.of(List.of("a", "valid"), List.of("b", "valid"),
            List.of("c", "valid"), List.of("d", "ip_frequency")), h.emitted());
        assertTrue(h.stateEntries() > 0);
        h.watermark(Long.MAX_VALUE);
        assertEquals(0L, h.stateEntries(), "rocksDb " + rocksDb);
      }
    }
  }

  @Test
  void onRocksDbTheLabelsAreTheSame() throws Exception {
    for (long seed = 1; seed <= 2; seed++) {
      List<TestClick> clicks = ClickTrafficLabelsTest.randomClicks(seed, 200);
      Map<String, String> expected = ClickTrafficLabelsTest.expected(clicks);
      List<List<String>> restored = shuffledRun(clicks, seed, clicks.size() / 2, true);
      assertTrue(revisions(restored) > 0, "seed " + seed);
      assertEquals(expected, finalLabels(restored), "seed " + seed);
    }
  }

  private static List<Long> storedMinutes(Harness h, String ad) throws Exception {
    ClickLabelOperator operator = (ClickLabelOperator) h.getOperator();
    operator.setCurrentKey(key(StringData.fromString(ad)));
    return operator.storedMinutes();
  }

  @Test
  void storedMinutesGoOnceNoCountedClickCanLookBackAtThem() throws Exception {
    try (Harness h = Harness.started(null)) {
      h.feed(click("a", 0, "u1", "10.0.0.1"), click("b", 5 * MINUTE, "u1", "10.0.0.1"));
      h.watermark(T0 + 6 * MINUTE);
      assertEquals(2, h.emitted().size());
      assertEquals(List.of(T0, T0 + 5 * MINUTE), storedMinutes(h, "ad-1"));
      // a's minute is kept while a late click could look back at it: until the watermark is
      // past its last ms + max(R, W) + the lateness + a minute.
      long aExpires = T0 + MINUTE - 1 + LOOKBACK_MS + LATENESS_MS + MINUTE;
      h.watermark(aExpires);
      assertEquals(List.of(T0, T0 + 5 * MINUTE), storedMinutes(h, "ad-1"));
      h.watermark(aExpires + 1);
      assertEquals(List.of(T0 + 5 * MINUTE), storedMinutes(h, "ad-1"));
      // A click that could look back at a would be too late to count: it never comes. One
      // that looks back at b still sees it.
      h.getOutput().clear();
      h.feed(click("c", 5 * MINUTE + 1_000, "u1", "10.0.0.2"));
      assertEquals(List.of(List.of("c", "repeat_click")), h.emitted());
      long bExpires = T0 + 6 * MINUTE - 1 + LOOKBACK_MS + LATENESS_MS + MINUTE;
      h.watermark(bExpires);
      assertEquals(List.of(T0 + 5 * MINUTE), storedMinutes(h, "ad-1"));
      h.watermark(bExpires + 1);
      assertEquals(List.of(), storedMinutes(h, "ad-1"));
      assertEquals(0, h.numKeyedStateEntries());
      assertEquals(0, h.numEventTimeTimers());
    }
  }

  /** A stored click's bytes (in its ip key's list, serialized: the heap's and RocksDB's). */
  private static int storedBytes(TestClick c, String label) throws Exception {
    RowDataSerializer stored = new RowDataSerializer(ClickLabelOperator.storedType(INPUT));
    DataOutputSerializer out = new DataOutputSerializer(256);
    stored.serialize(new JoinedRowData(row(c), GenericRowData.of(StringData.fromString(label),
        StringData.fromString(IpAddress.key(c.ip)))), out);
    return out.length();
  }

  @Test
  void aStoredClickTakesAboutTwoHundredBytes() throws Exception {
    int typical = storedBytes(new TestClick("ad-42", "c2b6a2a4-6f1e-4d5a-9b1e-3f1f6c2a9d10", T0,
        "user-12345678", "203.0.113.42", null), "repeat_click");
    // header, null bits, 13 fixed slots, then the strings over 7 bytes: id, user, ip, label,
    // ip key
    assertEquals(4 + 8 + 8 * 13 + 40 + 16 + 16 + 16 + 16, typical);
    int large = storedBytes(new TestClick("ad-00000000-0000-0000-0000-000000000001",
        "c2b6a2a4-6f1e-4d5a-9b1e-3f1f6c2a9d10", T0, "user-0000000000000001",
        "2001:db8:1234:5678:9abc:def0:1234:5678", "datacenter_ip"), "datacenter_ip");
    assertTrue(large <= 330, "a stored click with long ids: " + large + " bytes");
  }

  @Test
  void aStoredClicksEntryInItsUsersIndexTakesAboutOneHundredAndTwentyBytes() throws Exception {
    RowDataSerializer refs = new RowDataSerializer(ClickLabelOperator.REF_TYPE);
    DataOutputSerializer out = new DataOutputSerializer(128);
    refs.serialize(GenericRowData.of(T0, StringData.fromString(
        "c2b6a2a4-6f1e-4d5a-9b1e-3f1f6c2a9d10"), StringData.fromString("user-12345678"),
        StringData.fromString("203.0.113.42")), out);
    // its size, header and null bits, 4 fixed slots, then the id, user and ip key over 7 bytes
    assertEquals(4 + 8 + 8 * 4 + 40 + 16 + 16, out.length());
  }

  // install: what it replaces, and what it refuses to.

  /** A planned OVER's shape: "OverAggregate[id]", keyed by ad_id, its operator given. */
  private static OneInputTransformation<RowData, RowData> planned(
      org.apache.flink.streaming.api.operators.OneInputStreamOperator<RowData, RowData> operator,
      RowType input, RowType output) {
    OneInputTransformation<RowData, RowData> over = new OneInputTransformation<>(
        new FakeSource("Source[1]", InternalTypeInfo.of(input)), "OverAggregate[17]", operator,
        InternalTypeInfo.of(output), 2);
    over.setStateKeySelector(AD);
    over.setStateKeyType(KEY_TYPE);
    over.setUid("17_over-aggregate");
    return over;
  }

  private static KeyedProcessOperator<RowData, RowData, RowData> plannerOver(RowType input,
                                                                          long precedingMs) {
    LogicalType[] fields = input.getChildren().toArray(new LogicalType[0]);
    return new KeyedProcessOperator<>(new RowTimeRangeBoundedPrecedingFunction<RowData>(
        null, new LogicalType[] {STRING}, fields, precedingMs, input.getFieldIndex("event_time")));
  }

  @Test
  void installPutsTheOperatorInThePlannersOversPlace() {
    var over = planned(plannerOver(INPUT, LOOKBACK_MS), INPUT, OUTPUT);
    ClickLabel.install(over, 10_000, 600_000, 3, LATENESS_MS);
    var factory = assertInstanceOf(SimpleOperatorFactory.class, over.getOperatorFactory());
    var operator = assertInstanceOf(ClickLabelOperator.class, factory.getOperator());
    assertEquals(LATENESS_MS, operator.getAllowedLatenessMs());
    assertEquals(10_000, operator.getRules().repeatWindowMs);
    assertEquals(600_000, operator.getRules().ipWindowMs);
    assertEquals(3, operator.getRules().ipThreshold);
    assertEquals("ClickLabel[17]", over.getName());
    assertEquals("17_click-label", over.getUid());
    assertEquals(InternalTypeInfo.of(OUTPUT), over.getOutputType());
    assertNotNull(over.getStateKeySelector());
  }

  @Test
  void installFindsTheColumnsByName() throws Exception {
    // The same columns in another order: the operator reads them by name.
    RowType input = RowType.of(
        new LogicalType[] {new LocalZonedTimestampType(true, TimestampKind.ROWTIME, 3), STRING,
            STRING, STRING, STRING, new BigIntType(), STRING, STRING, STRING},
        new String[] {"event_time", "traffic", "ip", "user_id", "ad_id", "event_ts_ms",
            "event_id", "timeliness", "country"});
    var over = planned(plannerOver(input, LOOKBACK_MS), input, withLabels(input));
    ClickLabel.install(over, LATENESS_MS);
    var operator = (ClickLabelOperator)
        ((SimpleOperatorFactory<?>) over.getOperatorFactory()).getOperator();
    KeySelector<RowData, RowData> ad = row -> key(row.getString(4));
    try (var h = new KeyedOneInputStreamOperatorTestHarness<RowData, RowData, RowData>(
        operator, ad, KEY_TYPE, MAX_PARALLELISM, 1, 0)) {
      h.setup(new RowDataSerializer(withLabels(input)));
      h.open();
      for (String[] c : new String[][] {{"x", "1000"}, {"y", "2000"}}) {
        long ts = T0 + Long.parseLong(c[1]);
        h.processElement(new StreamRecord<>(GenericRowData.of(TimestampData.fromEpochMillis(ts),
            null, StringData.fromString("10.0.0.1"), StringData.fromString("u1"),
            StringData.fromString("ad-1"), ts, StringData.fromString(c[0]),
            StringData.fromString("on_time"), StringData.fromString("FR")), ts));
      }
      h.processWatermark(new Watermark(T0 + MINUTE));
      List<Map<String, String>> labels = new ArrayList<>();
      for (RowData row : h.extractOutputValues()) {
        MapData map = row.getMap(9);
        labels.add(Map.of(map.keyArray().getString(0).toString(),
            map.valueArray().getString(0).toString()));
      }
      assertEquals(List.of(Map.of("x", "valid"), Map.of("y", "repeat_click")), labels);
    }
  }

  @Test
  void installRefusesAnotherOperator() {
    MapFunction<RowData, RowData> identity = row -> row;
    var map = planned(new StreamMap<>(identity), INPUT, OUTPUT);
    var error = assertThrows(IllegalArgumentException.class,
        () -> ClickLabel.install(map, LATENESS_MS));
    assertTrue(error.getMessage().contains("not the planner's OVER"), error.getMessage());
    assertEquals("OverAggregate[17]", map.getName());
    var process = planned(new KeyedProcessOperator<>(new PassThrough()), INPUT, OUTPUT);
    assertThrows(IllegalArgumentException.class, () -> ClickLabel.install(process, LATENESS_MS));
  }

  @Test
  void installRefusesAnInputWithoutTheColumnsOrAnotherOutput() {
    List<String> names = new ArrayList<>(INPUT.getFieldNames());
    names.set(names.indexOf("user_id"), "user");
    RowType noUser = RowType.of(INPUT.getChildren().toArray(new LogicalType[0]),
        names.toArray(new String[0]));
    var over = planned(plannerOver(noUser, LOOKBACK_MS), noUser, withLabels(noUser));
    var error = assertThrows(IllegalArgumentException.class,
        () -> ClickLabel.install(over, LATENESS_MS));
    assertTrue(error.getMessage().contains("user_id"), error.getMessage());

    var plain = planned(plannerOver(INPUT, LOOKBACK_MS), INPUT, INPUT);
    assertThrows(IllegalArgumentException.class, () -> ClickLabel.install(plain, LATENESS_MS));
    List<RowType.RowField> fields = new ArrayList<>(INPUT.getFields());
    fields.add(new RowType.RowField("w0$o0", STRING));
    var notAMap = planned(plannerOver(INPUT, LOOKBACK_MS), INPUT, new RowType(fields));
    assertThrows(IllegalArgumentException.class, () -> ClickLabel.install(notAMap, LATENESS_MS));
  }

  @Test
  void installRefusesAnOverReachingBackLessThanTheRules() {
    var over = planned(plannerOver(INPUT, 60_000), INPUT, OUTPUT);
    var error = assertThrows(IllegalArgumentException.class,
        () -> ClickLabel.install(over, LATENESS_MS));
    assertTrue(error.getMessage().contains("reaches back"), error.getMessage());
  }
}
