package adclick.flink;

import org.apache.flink.table.functions.ScalarFunction;

/**
 * The key the ip_frequency rule counts an ip under ({@link IpAddress#key}: the IPv4 address,
 * or the IPv6 /64), as SQL, {@code ip_key(ip)}: the recalculation's batch partitions the
 * rule's window by it (jobs/recalculation.py).
 */
public final class IpKeyFunction extends ScalarFunction {

  public String eval(String ip) {
    return IpAddress.key(ip);
  }
}
