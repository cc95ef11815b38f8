package adclick.flink;

import java.lang.reflect.Field;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.dag.Transformation;
import org.apache.flink.streaming.api.operators.SimpleOperatorFactory;
import org.apache.flink.streaming.api.operators.StreamOperatorFactory;
import org.apache.flink.streaming.api.transformations.OneInputTransformation;
import org.apache.flink.table.runtime.typeutils.InternalTypeInfo;
import org.apache.flink.table.types.logical.LogicalType;
import org.apache.flink.table.types.logical.LogicalTypeRoot;
import org.apache.flink.table.types.logical.RowType;
import org.apache.flink.table.types.logical.utils.LogicalTypeChecks;

/**
 * Puts a {@link CompactDeduplicateOperator} in place of a dedup the planner made, once the
 * job's SQL is translated: the plan keeps its one dedup (and the single classifier after it),
 * its keyBy, its parallelism and its input and output; only the operator doing the dedup
 * changes.
 *
 * <p>Why not a process table function or the DataStream bridge: a process table function's
 * state is converted between its internal and external form at every call (a whole set per
 * row); bridging to a DataStream and back splits the job into two plans, and the sources the
 * dedup shares with the rest of the job would be read twice. Flink has no API to swap the
 * operator of a translated transformation, so this sets its factory field by reflection.
 */
public final class CompactDeduplicate {

  /** The planner's keep-first-row dedup on processing time: the only one this stands in for. */
  static final String REPLACED_FUNCTION =
      "org.apache.flink.table.runtime.operators.deduplicate.ProcTimeDeduplicateKeepFirstRowFunction";

  private CompactDeduplicate() {}

  /**
   * Replaces the operator of the planner's dedup transformation (named "Deduplicate[id]") by a
   * compact one remembering ids for horizonS seconds; renames it "CompactDeduplicate[id]",
   * with the uid "id_compact-deduplicate" (its state is not the planner's).
   *
   * @throws IllegalArgumentException if the transformation is another kind of dedup, its key
   *     is not a 128-bit fingerprint (two BIGINTs) plus STRING columns, or its input has no
   *     event time (eventTimeField)
   */
  public static void install(Transformation<?> transformation, long horizonS) {
    install(transformation, horizonS, Map.of());
  }

  /**
   * The same, with other horizons for the ids whose key's STRING column (the event type) holds
   * one of horizonsByKey's keys; ignored for a dedup whose key has no STRING column.
   */
  public static void install(Transformation<?> transformation, long horizonS,
                             Map<String, ? extends Number> horizonsByKey) {
    Map<String, Long> horizons = new HashMap<>(); // Python's ints may come as Integers
    horizonsByKey.forEach((key, value) -> horizons.put(key, value.longValue()));
    if (!(transformation instanceof OneInputTransformation)) {
      throw new IllegalArgumentException("not a one-input transformation: " + transformation);
    }
    OneInputTransformation<?, ?> dedup = (OneInputTransformation<?, ?>) transformation;
    String function = userFunctionClass(dedup.getOperatorFactory());
    if (!REPLACED_FUNCTION.equals(function)) {
      throw new IllegalArgumentException(
          dedup.getName() + " is not the keep-first-row dedup on processing time: " + function);
    }
    RowType key = keyType(dedup.getStateKeyType());
    List<Integer> longs = new ArrayList<>();
    List<Integer> others = new ArrayList<>();
    for (int i = 0; i < key.getFieldCount(); i++) {
      LogicalType type = key.getTypeAt(i);
      if (type.is(LogicalTypeRoot.BIGINT)) {
        longs.add(i);
      } else if (type.is(LogicalTypeRoot.VARCHAR)) {
        others.add(i);
      } else {
        throw new IllegalArgumentException("unexpected key column " + type + " in " + key);
      }
    }
    if (longs.size() != 2) {
      throw new IllegalArgumentException("the key holds no 128-bit fingerprint: " + key);
    }
    RowType input = keyType(dedup.getInputType());
    int time = eventTimeField(input);
    // The key's columns are the input's, in the input's order: the high half comes first
    // (key_hi, key_lo; tests/test_job_plan.py checks the job's inputs).
    CompactDeduplicateOperator operator = new CompactDeduplicateOperator(
        horizonS, others.isEmpty() ? Map.of() : horizons, longs.get(0), longs.get(1),
        others.stream().mapToInt(Integer::intValue).toArray(), time,
        !input.getTypeAt(time).is(LogicalTypeRoot.BIGINT), key);
    replaceOperator(dedup, SimpleOperatorFactory.of(operator), "CompactDeduplicate",
        "compact-deduplicate");
  }

  /**
   * The input's event time: its rowtime attribute (event_time: clicks and impressions, whose
   * watermark is then the dedup's clock), else its one BIGINT column named *_ts or *_ts_ms,
   * epoch milliseconds as the contract has them (conversion_ts: conversions, which have no
   * watermark).
   */
  static int eventTimeField(RowType input) {
    int millis = -1;
    for (int i = 0; i < input.getFieldCount(); i++) {
      LogicalType type = input.getTypeAt(i);
      String name = input.getFieldNames().get(i);
      if (LogicalTypeChecks.isRowtimeAttribute(type)) {
        return i;
      }
      if ((name.endsWith("_ts") || name.endsWith("_ts_ms")) && type.is(LogicalTypeRoot.BIGINT)) {
        if (millis >= 0) {
          throw new IllegalArgumentException("two event times in " + input);
        }
        millis = i;
      }
    }
    if (millis < 0) {
      throw new IllegalArgumentException(
          "no event time (a rowtime, or a BIGINT *_ts or *_ts_ms) in " + input);
    }
    return millis;
  }

  static String userFunctionClass(StreamOperatorFactory<?> factory) {
    if (!(factory instanceof SimpleOperatorFactory)) {
      return String.valueOf(factory);
    }
    Object operator = ((SimpleOperatorFactory<?>) factory).getOperator();
    if (!(operator instanceof org.apache.flink.streaming.api.operators.AbstractUdfStreamOperator)) {
      return operator.getClass().getName();
    }
    return ((org.apache.flink.streaming.api.operators.AbstractUdfStreamOperator<?, ?>) operator)
        .getUserFunction().getClass().getName();
  }

  static RowType keyType(TypeInformation<?> type) {
    if (!(type instanceof InternalTypeInfo)) {
      throw new IllegalArgumentException("not a SQL operator's row type: " + type);
    }
    LogicalType logical = ((InternalTypeInfo<?>) type).toLogicalType();
    if (!(logical instanceof RowType)) {
      throw new IllegalArgumentException("not a row key: " + logical);
    }
    return (RowType) logical;
  }

  /**
   * Puts factory's operator in a translated transformation's place and names it after it:
   * "name[plan node id]", with the uid "id_uid" (its state is not the planner's operator's).
   */
  static void replaceOperator(Transformation<?> transformation, StreamOperatorFactory<?> factory,
                              String name, String uid) {
    setFactory(transformation, factory);
    String id = transformation.getName().replaceAll("\\D", "");
    transformation.setName(name + "[" + id + "]");
    transformation.setUid(id + "_" + uid);
  }

  /** The index of row's column name, of type root (the compact operators find them by name). */
  static int field(RowType row, String name, LogicalTypeRoot root) {
    int index = row.getFieldIndex(name);
    if (index < 0 || !row.getTypeAt(index).is(root)) {
      throw new IllegalArgumentException("no " + root + " column " + name + " in " + row);
    }
    return index;
  }

  /** Sets a translated transformation's operator factory (a field of each kind's own). */
  static void setFactory(Transformation<?> transformation, StreamOperatorFactory<?> factory) {
    try {
      Field field = transformation.getClass().getDeclaredField("operatorFactory");
      field.setAccessible(true);
      field.set(transformation, factory);
    } catch (ReflectiveOperationException e) {
      throw new IllegalStateException("this Flink's " + transformation.getClass().getSimpleName()
          + " has no operator factory field to set; the compact operators need Flink 2.2's", e);
    }
  }
}
