package adclick.flink;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import adclick.flink.InstallFixtures.FakeSource;
import adclick.flink.InstallFixtures.PassThrough;
import java.util.List;
import org.apache.flink.api.dag.Transformation;
import org.apache.flink.streaming.api.functions.KeyedProcessFunction;
import org.apache.flink.streaming.api.operators.KeyedProcessOperator;
import org.apache.flink.streaming.api.operators.SimpleOperatorFactory;
import org.apache.flink.streaming.api.transformations.OneInputTransformation;
import org.apache.flink.table.data.RowData;
import org.apache.flink.table.runtime.operators.deduplicate.ProcTimeDeduplicateKeepFirstRowFunction;
import org.apache.flink.table.runtime.typeutils.InternalTypeInfo;
import org.apache.flink.table.types.logical.BigIntType;
import org.apache.flink.table.types.logical.DoubleType;
import org.apache.flink.table.types.logical.LocalZonedTimestampType;
import org.apache.flink.table.types.logical.LogicalType;
import org.apache.flink.table.types.logical.RowType;
import org.apache.flink.table.types.logical.TimestampKind;
import org.apache.flink.table.types.logical.VarCharType;
import org.junit.jupiter.api.Test;

/** What install replaces, and what it refuses to (rather than change a dedup's meaning). */
class CompactDeduplicateTest {

  // The events' input: the event type, the fingerprint, the epoch-ms time and the rowtime.
  private static final InternalTypeInfo<RowData> ROW = InternalTypeInfo.of(RowType.of(
      new LogicalType[] {new VarCharType(VarCharType.MAX_LENGTH), new BigIntType(),
          new BigIntType(), new BigIntType(),
          new LocalZonedTimestampType(true, TimestampKind.ROWTIME, 3)},
      new String[] {"event", "key_hi", "key_lo", "event_ts_ms", "event_time"}));

  /** A planned dedup's shape: "Deduplicate[id]", keyed, its operator the given function. */
  private static OneInputTransformation<RowData, RowData> planned(
      KeyedProcessFunction<RowData, RowData, RowData> function, LogicalType... key) {
    Transformation<RowData> input = new OneInputTransformation<>(
        new FakeSource("Source[1]", ROW), "Calc[11]", new KeyedProcessOperator<>(new PassThrough()),
        ROW, 2);
    OneInputTransformation<RowData, RowData> dedup = new OneInputTransformation<>(
        input, "Deduplicate[12]", new KeyedProcessOperator<>(function), ROW, 2);
    dedup.setStateKeySelector(row -> row);
    dedup.setStateKeyType(InternalTypeInfo.ofFields(key));
    dedup.setUid("12_deduplicate");
    return dedup;
  }

  @Test
  void theKeepFirstRowDedupOnAFingerprintBecomesTheCompactOne() {
    var dedup = planned(new ProcTimeDeduplicateKeepFirstRowFunction(3_600_000),
        new VarCharType(VarCharType.MAX_LENGTH), new BigIntType(), new BigIntType());
    CompactDeduplicate.install(dedup, 900);
    var factory = assertInstanceOf(SimpleOperatorFactory.class, dedup.getOperatorFactory());
    var operator = assertInstanceOf(CompactDeduplicateOperator.class, factory.getOperator());
    assertEquals(900, operator.getHorizonS());
    assertEquals("CompactDeduplicate[12]", dedup.getName());
    assertEquals("12_compact-deduplicate", dedup.getUid());
    assertEquals(ROW, dedup.getOutputType()); // input, output and key stay the planner's
    assertTrue(dedup.getStateKeySelector() != null);
  }

  @Test
  void theEventTimeIsTheRowtimeElseTheEpochMilliseconds() {
    assertEquals(4, CompactDeduplicate.eventTimeField((RowType) ROW.toLogicalType()));
    RowType conversions = RowType.of(
        new LogicalType[] {new VarCharType(VarCharType.MAX_LENGTH), new BigIntType(),
            new BigIntType(), new BigIntType()},
        new String[] {"conversion_id", "conversion_ts", "key_hi", "key_lo"});
    assertEquals(1, CompactDeduplicate.eventTimeField(conversions));
    RowType none = RowType.of(new LogicalType[] {new BigIntType(), new BigIntType()},
        new String[] {"key_hi", "key_lo"});
    assertThrows(IllegalArgumentException.class, () -> CompactDeduplicate.eventTimeField(none));
  }

  @Test
  void anotherDedupIsRefused() {
    var keepLast = planned(new PassThrough(), new BigIntType(), new BigIntType());
    var error = assertThrows(IllegalArgumentException.class,
        () -> CompactDeduplicate.install(keepLast, 900));
    assertTrue(error.getMessage().contains("not the keep-first-row dedup"), error.getMessage());
  }

  @Test
  void aKeyWithoutAFingerprintIsRefused() {
    for (List<LogicalType> key : List.of(
        List.<LogicalType>of(new VarCharType(VarCharType.MAX_LENGTH)),
        List.<LogicalType>of(new BigIntType(), new BigIntType(), new BigIntType()),
        List.<LogicalType>of(new BigIntType(), new BigIntType(), new DoubleType()))) {
      var dedup = planned(new ProcTimeDeduplicateKeepFirstRowFunction(1000),
          key.toArray(new LogicalType[0]));
      assertThrows(IllegalArgumentException.class, () -> CompactDeduplicate.install(dedup, 900),
          key.toString());
    }
  }

}
