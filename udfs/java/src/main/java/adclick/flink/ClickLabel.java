package adclick.flink;

import java.lang.reflect.Field;
import org.apache.flink.api.dag.Transformation;
import org.apache.flink.streaming.api.operators.SimpleOperatorFactory;
import org.apache.flink.streaming.api.transformations.OneInputTransformation;
import org.apache.flink.table.types.logical.LogicalType;
import org.apache.flink.table.types.logical.LogicalTypeRoot;
import org.apache.flink.table.types.logical.MapType;
import org.apache.flink.table.types.logical.RowType;

/**
 * Puts a {@link ClickLabelOperator} in place of the OVER window that labels the counted clicks
 * with {@link ClickTrafficLabels} once the job's SQL is translated: the plan keeps its keyBy
 * (the OVER's PARTITION BY ad_id), its input and its output (the input's columns, then the
 * labels' map); only the operator changes, to one that drops no late click and labels in the
 * rules' order whatever the order of arrival. Why by reflection: see {@link CompactDeduplicate}.
 */
public final class ClickLabel {

  /** The planner's OVER with a RANGE frame on a rowtime: the only one this stands in for. */
  static final String REPLACED_FUNCTION =
      "org.apache.flink.table.runtime.operators.over.RowTimeRangeBoundedPrecedingFunction";

  private ClickLabel() {}

  /** The same with the rules' defaults: R = 10 s, W = 10 min, K = 3. */
  public static void install(Transformation<?> transformation, long allowedLatenessMs) {
    install(transformation, ClickRules.DEFAULT_REPEAT_WINDOW_MS,
        ClickRules.DEFAULT_IP_WINDOW_MS, ClickRules.DEFAULT_IP_THRESHOLD, allowedLatenessMs);
  }

  /**
   * Replaces the operator of the planner's OVER transformation (named "OverAggregate[id]") by
   * a ClickLabelOperator with these rules, keeping each labelled click for max(R, W) plus the
   * allowed lateness plus a minute of event time; renames it "ClickLabel[id]", with the uid
   * "id_click-label" (its state is not the planner's).
   *
   * @throws IllegalArgumentException if the transformation is another operator than a keyed
   *     rowtime RANGE OVER reaching back at least max(R, W), its input lacks event_id, user_id,
   *     ip, traffic (STRING) or event_ts_ms (BIGINT), or its output is not its input plus one
   *     MAP&lt;STRING, STRING&gt;
   */
  public static void install(Transformation<?> transformation, long repeatWindowMs,
                             long ipWindowMs, int ipThreshold, long allowedLatenessMs) {
    if (!(transformation instanceof OneInputTransformation)) {
      throw new IllegalArgumentException("not a one-input transformation: " + transformation);
    }
    OneInputTransformation<?, ?> over = (OneInputTransformation<?, ?>) transformation;
    String function = CompactDeduplicate.userFunctionClass(over.getOperatorFactory());
    if (!REPLACED_FUNCTION.equals(function)) {
      throw new IllegalArgumentException(over.getName()
          + " is not the planner's OVER with a RANGE frame on a rowtime: " + function);
    }
    ClickRules rules = new ClickRules(repeatWindowMs, ipWindowMs, ipThreshold);
    long preceding = precedingOffset(over);
    if (preceding < rules.lookbackMs()) {
      throw new IllegalArgumentException(over.getName() + " reaches back " + preceding
          + " ms, less than the rules' " + rules.lookbackMs() + " ms: the SQL would label"
          + " otherwise than the operator");
    }
    CompactDeduplicate.keyType(over.getStateKeyType()); // keyed by the partition
    RowType input = CompactDeduplicate.keyType(over.getInputType());
    RowType output = CompactDeduplicate.keyType(over.getOutputType());
    if (output.getFieldCount() != input.getFieldCount() + 1) {
      throw new IllegalArgumentException(
          "the output is not the input plus one column: " + input + " -> " + output);
    }
    for (int i = 0; i < input.getFieldCount(); i++) {
      if (!input.getTypeAt(i).getTypeRoot().equals(output.getTypeAt(i).getTypeRoot())) {
        throw new IllegalArgumentException(
            "the output does not start with the input's columns: " + input + " -> " + output);
      }
    }
    LogicalType labels = output.getTypeAt(input.getFieldCount());
    if (!(labels instanceof MapType)
        || !((MapType) labels).getKeyType().is(LogicalTypeRoot.VARCHAR)
        || !((MapType) labels).getValueType().is(LogicalTypeRoot.VARCHAR)) {
      throw new IllegalArgumentException(
          "the OVER's result is not a MAP<STRING, STRING>: " + labels);
    }
    ClickLabelOperator operator = new ClickLabelOperator(input,
        CompactDeduplicate.field(input, "event_id", LogicalTypeRoot.VARCHAR),
        CompactDeduplicate.field(input, "event_ts_ms", LogicalTypeRoot.BIGINT),
        CompactDeduplicate.field(input, "user_id", LogicalTypeRoot.VARCHAR),
        CompactDeduplicate.field(input, "ip", LogicalTypeRoot.VARCHAR),
        CompactDeduplicate.field(input, "traffic", LogicalTypeRoot.VARCHAR),
        rules, allowedLatenessMs);
    CompactDeduplicate.replaceOperator(over, SimpleOperatorFactory.of(operator), "ClickLabel",
        "click-label");
  }

  /** How far back (ms) the planner's RANGE frame reaches. */
  private static long precedingOffset(OneInputTransformation<?, ?> over) {
    Object function = ((org.apache.flink.streaming.api.operators.AbstractUdfStreamOperator<?, ?>)
        ((SimpleOperatorFactory<?>) over.getOperatorFactory()).getOperator()).getUserFunction();
    try {
      Field field = function.getClass().getDeclaredField("precedingOffset");
      field.setAccessible(true);
      return field.getLong(function);
    } catch (ReflectiveOperationException e) {
      throw new IllegalStateException("this Flink's " + REPLACED_FUNCTION
          + " has no precedingOffset; ClickLabel needs Flink 2.2's", e);
    }
  }
}
