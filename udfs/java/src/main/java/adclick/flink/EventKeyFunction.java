package adclick.flink;

import org.apache.flink.table.functions.ScalarFunction;

/**
 * The format's dedup key (EventKey) as SQL: {@code event_key(id, 0)} its high 64 bits,
 * {@code event_key(id, 1)} its low. For events that reach the pipeline without the format:
 * the recalculation's, read back from the raw store (jobs/recalculation.py).
 */
public final class EventKeyFunction extends ScalarFunction {

  private transient EventKey key;

  public Long eval(String id, Integer half) {
    if (id == null) {
      return null;
    }
    if (key == null) {
      key = new EventKey();
    }
    key.of(id);
    return half == 0 ? key.hi : key.lo;
  }
}
