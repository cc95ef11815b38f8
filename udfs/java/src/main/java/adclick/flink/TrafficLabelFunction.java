package adclick.flink;

import org.apache.flink.table.functions.ScalarFunction;

/**
 * The format's per-event invalid-traffic label (TrafficRules: a crawler's user agent, a
 * data-center ip; null if neither) as SQL, {@code event_traffic(user_agent, ip)}: for events
 * that reach the pipeline without the format (the recalculation's, jobs/recalculation.py).
 */
public final class TrafficLabelFunction extends ScalarFunction {

  private transient TrafficRules rules;

  public String eval(String userAgent, String ip) {
    if (rules == null) {
      rules = new TrafficRules();
    }
    return rules.label(userAgent, ip);
  }
}
