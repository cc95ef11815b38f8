package adclick.flink;

import org.apache.flink.table.functions.ScalarFunction;

/**
 * The invalid-traffic rules a count was made under, for the record (sql/flink/50_*.sql writes it
 * with every closed minute): the lists' versions ({@link TrafficRules#version()}) and the
 * thresholds of the rules that look at other clicks.
 */
public final class TrafficRulesVersion extends ScalarFunction {

  public String eval(Long repeatWindowMs, Long ipWindowMs, Integer ipThreshold) {
    return TrafficRules.version() + "; repeat_click < " + repeatWindowMs + " ms; ip_frequency >= "
        + ipThreshold + " in " + ipWindowMs + " ms";
  }
}
