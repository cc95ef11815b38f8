package adclick.flink;

import java.lang.reflect.Field;
import java.util.HashSet;
import java.util.List;
import org.apache.flink.api.dag.Transformation;
import org.apache.flink.streaming.api.operators.SimpleOperatorFactory;
import org.apache.flink.streaming.api.transformations.TwoInputTransformation;
import org.apache.flink.table.types.logical.LogicalTypeRoot;
import org.apache.flink.table.types.logical.RowType;

/**
 * Puts a {@link CompactAttributionOperator} in place of the attribution's join once the job's
 * SQL is translated (sql/flink/35_attribution.sql): the plan keeps its keyBy on click_id, its
 * inputs (the unique conversions, the counted clicks from the one classifier, each with its
 * invalid-traffic label) and its output
 * (the conversion's columns, then the click's); only the operator holding the clicks changes.
 * Why by reflection: see {@link CompactDeduplicate}.
 */
public final class CompactAttribution {

  /** The planner's regular join: the only one this stands in for, and only an inner one. */
  static final String REPLACED_OPERATOR =
      "org.apache.flink.table.runtime.operators.join.stream.StreamingJoinOperator";

  /** The clicks' columns: the operator rebuilds them from its table, so it takes no others. */
  static final List<String> CLICK_COLUMNS =
      List.of("click_id", "ad_id", "country", "device", "traffic", "click_ts_ms");

  private CompactAttribution() {}

  /**
   * Replaces the operator of the planner's join (named "Join[id]") of conversions (input 1:
   * click_id, conversion_ts_ms) with counted clicks (input 2: CLICK_COLUMNS exactly) by a
   * compact one keeping each click retentionS and each conversion waitS seconds of event time;
   * renames it "CompactAttribution[id]" with the uid "id_compact-attribution".
   *
   * @throws IllegalArgumentException if the transformation is another operator, an outer
   *     join, not keyed by one STRING, or its inputs are not these
   */
  public static void install(Transformation<?> transformation, long retentionS, long waitS) {
    if (!(transformation instanceof TwoInputTransformation)) {
      throw new IllegalArgumentException("not a two-input transformation: " + transformation);
    }
    TwoInputTransformation<?, ?, ?> join = (TwoInputTransformation<?, ?, ?>) transformation;
    String operator = CompactDeduplicate.userFunctionClass(join.getOperatorFactory());
    if (!REPLACED_OPERATOR.equals(operator)) {
      throw new IllegalArgumentException(join.getName() + " is not a regular join: " + operator);
    }
    Object planned = ((SimpleOperatorFactory<?>) join.getOperatorFactory()).getOperator();
    if (flag(planned, "leftIsOuter") || flag(planned, "rightIsOuter")) {
      throw new IllegalArgumentException(join.getName() + " is an outer join");
    }
    RowType key = CompactDeduplicate.keyType(join.getStateKeyType());
    if (key.getFieldCount() != 1 || !key.getTypeAt(0).is(LogicalTypeRoot.VARCHAR)) {
      throw new IllegalArgumentException("the join is not keyed by one STRING: " + key);
    }
    RowType conversions = CompactDeduplicate.keyType(join.getInputType1());
    RowType clicks = CompactDeduplicate.keyType(join.getInputType2());
    if (clicks.getFieldCount() != CLICK_COLUMNS.size()
        || !new HashSet<>(clicks.getFieldNames()).equals(new HashSet<>(CLICK_COLUMNS))) {
      throw new IllegalArgumentException(
          "the clicks' columns are not " + CLICK_COLUMNS + ": " + clicks);
    }
    CompactAttributionOperator compact = new CompactAttributionOperator(
        retentionS, waitS, conversions,
        CompactDeduplicate.field(conversions, "click_id", LogicalTypeRoot.VARCHAR),
        CompactDeduplicate.field(conversions, "conversion_ts_ms", LogicalTypeRoot.BIGINT),
        clicks.getFieldCount(),
        CompactDeduplicate.field(clicks, "click_id", LogicalTypeRoot.VARCHAR),
        CompactDeduplicate.field(clicks, "ad_id", LogicalTypeRoot.VARCHAR),
        CompactDeduplicate.field(clicks, "country", LogicalTypeRoot.VARCHAR),
        CompactDeduplicate.field(clicks, "device", LogicalTypeRoot.VARCHAR),
        CompactDeduplicate.field(clicks, "traffic", LogicalTypeRoot.VARCHAR),
        CompactDeduplicate.field(clicks, "click_ts_ms", LogicalTypeRoot.BIGINT), key);
    CompactDeduplicate.replaceOperator(join, SimpleOperatorFactory.of(compact),
        "CompactAttribution", "compact-attribution");
  }

  private static boolean flag(Object operator, String name) {
    for (Class<?> type = operator.getClass(); type != null; type = type.getSuperclass()) {
      try {
        Field field = type.getDeclaredField(name);
        field.setAccessible(true);
        return field.getBoolean(operator);
      } catch (NoSuchFieldException e) {
        // the field is declared higher up
      } catch (IllegalAccessException e) {
        throw new IllegalStateException(e);
      }
    }
    throw new IllegalStateException("this Flink's join has no " + name + " flag");
  }
}
