package adclick.flink;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import adclick.flink.InstallFixtures.FakeSource;
import adclick.flink.InstallFixtures.PassThrough;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import org.apache.flink.streaming.api.functions.co.KeyedCoProcessFunction;
import org.apache.flink.streaming.api.operators.KeyedProcessOperator;
import org.apache.flink.streaming.api.operators.SimpleOperatorFactory;
import org.apache.flink.streaming.api.operators.TwoInputStreamOperator;
import org.apache.flink.streaming.api.operators.co.KeyedCoProcessOperator;
import org.apache.flink.streaming.api.transformations.OneInputTransformation;
import org.apache.flink.streaming.api.transformations.TwoInputTransformation;
import org.apache.flink.streaming.api.watermark.Watermark;
import org.apache.flink.streaming.util.KeyedTwoInputStreamOperatorTestHarness;
import org.apache.flink.table.data.GenericRowData;
import org.apache.flink.table.data.RowData;
import org.apache.flink.table.data.StringData;
import org.apache.flink.table.data.TimestampData;
import org.apache.flink.table.runtime.generated.GeneratedJoinCondition;
import org.apache.flink.table.runtime.operators.join.stream.StreamingJoinOperator;
import org.apache.flink.table.runtime.operators.join.stream.utils.JoinInputSideSpec;
import org.apache.flink.table.runtime.typeutils.InternalTypeInfo;
import org.apache.flink.table.runtime.typeutils.RowDataSerializer;
import org.apache.flink.table.types.logical.BigIntType;
import org.apache.flink.table.types.logical.LocalZonedTimestampType;
import org.apache.flink.table.types.logical.LogicalType;
import org.apache.flink.table.types.logical.RowType;
import org.apache.flink.table.types.logical.VarCharType;
import org.apache.flink.util.Collector;
import org.junit.jupiter.api.Test;

/** What install replaces (the planner's inner join on click_id), and what it refuses to. */
class CompactAttributionTest {

  private static final long RETENTION_S = 7 * 24 * 3600 + 3600;
  private static final long WAIT_S = 3600;
  private static final VarCharType STRING = new VarCharType(VarCharType.MAX_LENGTH);

  private static final RowType CONVERSIONS = RowType.of(
      new LogicalType[] {STRING, STRING, new BigIntType(), STRING, new BigIntType(),
          new LocalZonedTimestampType(3)},
      new String[] {"conversion_id", "click_id", "conversion_ts_ms", "type", "value_micros",
          "conversion_minute"});
  private static final RowType CLICKS = RowType.of(
      new LogicalType[] {STRING, STRING, STRING, STRING, STRING, new BigIntType()},
      new String[] {"click_id", "ad_id", "country", "device", "traffic", "click_ts_ms"});

  /** The join's output: the conversion's columns, then the click's. */
  private static InternalTypeInfo<RowData> output(RowType conversions, RowType clicks) {
    List<LogicalType> types = new ArrayList<>(conversions.getChildren());
    types.addAll(clicks.getChildren());
    return InternalTypeInfo.ofFields(types.toArray(new LogicalType[0]));
  }

  private static StreamingJoinOperator join(RowType conversions, RowType clicks,
                                            boolean leftIsOuter, boolean rightIsOuter) {
    return new StreamingJoinOperator(InternalTypeInfo.of(conversions), InternalTypeInfo.of(clicks),
        new GeneratedJoinCondition("C", "", new Object[0]), JoinInputSideSpec.withoutUniqueKey(),
        JoinInputSideSpec.withoutUniqueKey(), leftIsOuter, rightIsOuter, new boolean[] {true},
        RETENTION_S * 1000, RETENTION_S * 1000);
  }

  /** A planned join's shape: "Join[53]" of two inputs, keyed by the given key. */
  private static TwoInputTransformation<RowData, RowData, RowData> planned(
      TwoInputStreamOperator<RowData, RowData, RowData> operator, RowType conversions,
      RowType clicks, LogicalType... key) {
    TwoInputTransformation<RowData, RowData, RowData> join = new TwoInputTransformation<>(
        new FakeSource("Calc[51]", InternalTypeInfo.of(conversions)),
        new FakeSource("Calc[52]", InternalTypeInfo.of(clicks)), "Join[53]",
        operator, output(conversions, clicks), 2);
    join.setStateKeySelectors(row -> GenericRowData.of(row.getString(1)),
        row -> GenericRowData.of(row.getString(0)));
    join.setStateKeyType(InternalTypeInfo.ofFields(key));
    join.setUid("53_join");
    return join;
  }

  private static TwoInputTransformation<RowData, RowData, RowData> plannedJoin(RowType clicks) {
    return planned(join(CONVERSIONS, clicks, false, false), CONVERSIONS, clicks, STRING);
  }

  @Test
  void theInnerJoinOfConversionsAndClicksBecomesTheCompactAttribution() {
    var join = plannedJoin(CLICKS);
    var outputType = join.getOutputType();
    var keySelector1 = join.getStateKeySelector1();
    var keySelector2 = join.getStateKeySelector2();
    var keyType = join.getStateKeyType();
    CompactAttribution.install(join, RETENTION_S, WAIT_S);
    var factory = assertInstanceOf(SimpleOperatorFactory.class, join.getOperatorFactory());
    var operator = assertInstanceOf(CompactAttributionOperator.class, factory.getOperator());
    assertEquals(RETENTION_S, operator.getRetentionS());
    assertEquals(WAIT_S, operator.getWaitS());
    assertEquals("CompactAttribution[53]", join.getName());
    assertEquals("53_compact-attribution", join.getUid());
    // Inputs, output and keying stay the planner's.
    assertEquals(output(CONVERSIONS, CLICKS), join.getOutputType());
    assertSame(outputType, join.getOutputType());
    assertSame(keySelector1, join.getStateKeySelector1());
    assertSame(keySelector2, join.getStateKeySelector2());
    assertSame(keyType, join.getStateKeyType());
    assertEquals(InternalTypeInfo.of(CONVERSIONS), join.getInputType1());
    assertEquals(InternalTypeInfo.of(CLICKS), join.getInputType2());
  }

  @Test
  void theClicksColumnsAreFoundByName() throws Exception {
    // The clicks' columns in another order: the installed operator reads and rebuilds them
    // where they are, as the join's output has them.
    RowType clicks = RowType.of(
        new LogicalType[] {new BigIntType(), STRING, STRING, STRING, STRING, STRING},
        new String[] {"click_ts_ms", "device", "traffic", "click_id", "country", "ad_id"});
    RowType conversions = RowType.of(
        new LogicalType[] {new BigIntType(), STRING, STRING},
        new String[] {"conversion_ts_ms", "conversion_id", "click_id"});
    var join = planned(join(conversions, clicks, false, false), conversions, clicks, STRING);
    CompactAttribution.install(join, RETENTION_S, WAIT_S);
    @SuppressWarnings("unchecked")
    var operator = (TwoInputStreamOperator<RowData, RowData, RowData>)
        ((SimpleOperatorFactory<RowData>) join.getOperatorFactory()).getOperator();
    try (var h = new KeyedTwoInputStreamOperatorTestHarness<RowData, RowData, RowData, RowData>(
        operator, row -> GenericRowData.of(row.getString(2)),
        row -> GenericRowData.of(row.getString(3)), InternalTypeInfo.ofFields(STRING), 128, 1,
        0)) {
      h.setup(new RowDataSerializer(output(conversions, clicks).toRowType()));
      h.open();
      long t0 = 1_767_225_600_000L;
      h.processWatermark2(new Watermark(t0));
      h.processElement2(GenericRowData.of(t0 - 1000, StringData.fromString("tv"),
          StringData.fromString("ip_frequency"), StringData.fromString("k1"),
          StringData.fromString("FR"), StringData.fromString("ad-7")), 0);
      h.processElement2(GenericRowData.of(t0 - 2000, StringData.fromString("tv"),
          StringData.fromString("valid"), StringData.fromString("k2"),
          StringData.fromString("FR"), StringData.fromString("ad-7")), 0);
      h.processElement1(GenericRowData.of(t0, StringData.fromString("v1"),
          StringData.fromString("k1")), 0);
      h.processElement1(GenericRowData.of(t0, StringData.fromString("v2"),
          StringData.fromString("k2")), 0);
      List<RowData> out = h.extractOutputValues();
      assertEquals(2, out.size());
      List<List<Object>> rows = new ArrayList<>();
      for (RowData row : out) {
        assertEquals(9, row.getArity());
        rows.add(Arrays.asList(row.getLong(0), row.getString(1).toString(),
            row.getString(2).toString(), row.getLong(3), row.getString(4).toString(),
            row.getString(5).toString(), row.getString(6).toString(),
            row.getString(7).toString(), row.getString(8).toString()));
      }
      assertEquals(List.of(
          Arrays.asList(t0, "v1", "k1", t0 - 1000, "tv", "ip_frequency", "k1", "FR", "ad-7"),
          Arrays.asList(t0, "v2", "k2", t0 - 2000, "tv", "valid", "k2", "FR", "ad-7")), rows);
    }
  }

  @Test
  void anOuterJoinIsRefused() {
    for (boolean[] outer : new boolean[][] {{true, false}, {false, true}, {true, true}}) {
      var join = planned(join(CONVERSIONS, CLICKS, outer[0], outer[1]), CONVERSIONS, CLICKS,
          STRING);
      var error = assertThrows(IllegalArgumentException.class,
          () -> CompactAttribution.install(join, RETENTION_S, WAIT_S));
      assertTrue(error.getMessage().contains("outer join"), error.getMessage());
      assertEquals("Join[53]", join.getName()); // left as planned
      assertInstanceOf(StreamingJoinOperator.class,
          ((SimpleOperatorFactory<?>) join.getOperatorFactory()).getOperator());
    }
  }

  @Test
  void anotherOperatorIsRefused() {
    var other = planned(new KeyedCoProcessOperator<>(new Union()), CONVERSIONS, CLICKS, STRING);
    var error = assertThrows(IllegalArgumentException.class,
        () -> CompactAttribution.install(other, RETENTION_S, WAIT_S));
    assertTrue(error.getMessage().contains("not a regular join"), error.getMessage());
    assertEquals("Join[53]", other.getName());

    var oneInput = new OneInputTransformation<>(
        new FakeSource("Calc[51]", InternalTypeInfo.of(CONVERSIONS)),
        "Join[53]", new KeyedProcessOperator<>(new PassThrough()), InternalTypeInfo.of(CONVERSIONS),
        2);
    assertThrows(IllegalArgumentException.class,
        () -> CompactAttribution.install(oneInput, RETENTION_S, WAIT_S));
  }

  @Test
  void clicksWithAnotherColumnOrWithoutOneAreRefused() {
    RowType extra = RowType.of(
        new LogicalType[] {STRING, STRING, STRING, STRING, STRING, new BigIntType(), STRING},
        new String[] {"click_id", "ad_id", "country", "device", "traffic", "click_ts_ms",
            "campaign"});
    RowType missing = RowType.of(
        new LogicalType[] {STRING, STRING, STRING, STRING, new BigIntType()},
        new String[] {"click_id", "ad_id", "country", "traffic", "click_ts_ms"});
    // The columns before the traffic labels: the label would be lost.
    RowType unlabelled = RowType.of(
        new LogicalType[] {STRING, STRING, STRING, STRING, new BigIntType()},
        new String[] {"click_id", "ad_id", "country", "device", "click_ts_ms"});
    RowType renamed = RowType.of(
        new LogicalType[] {STRING, STRING, STRING, STRING, STRING, new BigIntType()},
        new String[] {"click_id", "ad_id", "country", "device", "label", "click_ts_ms"});
    RowType numericLabel = RowType.of(
        new LogicalType[] {STRING, STRING, STRING, STRING, new BigIntType(), new BigIntType()},
        new String[] {"click_id", "ad_id", "country", "device", "traffic", "click_ts_ms"});
    for (RowType clicks : List.of(extra, missing, unlabelled, renamed, numericLabel)) {
      var join = plannedJoin(clicks);
      assertThrows(IllegalArgumentException.class,
          () -> CompactAttribution.install(join, RETENTION_S, WAIT_S), clicks.toString());
      assertEquals("Join[53]", join.getName(), clicks.toString());
    }
  }

  @Test
  void aKeyOfTwoColumnsIsRefused() {
    var join = planned(join(CONVERSIONS, CLICKS, false, false), CONVERSIONS, CLICKS, STRING,
        STRING);
    var error = assertThrows(IllegalArgumentException.class,
        () -> CompactAttribution.install(join, RETENTION_S, WAIT_S));
    assertTrue(error.getMessage().contains("not keyed by one STRING"), error.getMessage());
    var byNumber = planned(join(CONVERSIONS, CLICKS, false, false), CONVERSIONS, CLICKS,
        new BigIntType());
    assertThrows(IllegalArgumentException.class,
        () -> CompactAttribution.install(byNumber, RETENTION_S, WAIT_S));
  }

  @Test
  void conversionsWithoutAClickIdOrATimeAreRefused() {
    RowType noTime = RowType.of(new LogicalType[] {STRING, STRING},
        new String[] {"conversion_id", "click_id"});
    RowType textTime = RowType.of(new LogicalType[] {STRING, STRING, STRING},
        new String[] {"conversion_id", "click_id", "conversion_ts_ms"});
    for (RowType conversions : List.of(noTime, textTime)) {
      var join = planned(join(conversions, CLICKS, false, false), conversions, CLICKS, STRING);
      assertThrows(IllegalArgumentException.class,
          () -> CompactAttribution.install(join, RETENTION_S, WAIT_S), conversions.toString());
    }
  }

  private static final class Union
      extends KeyedCoProcessFunction<RowData, RowData, RowData, RowData> {
    private static final long serialVersionUID = 1L;

    @Override
    public void processElement1(RowData row, Context context, Collector<RowData> out) {
      out.collect(row);
    }

    @Override
    public void processElement2(RowData row, Context context, Collector<RowData> out) {
      out.collect(row);
    }
  }

}
