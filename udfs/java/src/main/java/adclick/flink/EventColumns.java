package adclick.flink;

import java.util.ArrayList;
import java.util.List;
import org.apache.flink.table.api.ValidationException;
import org.apache.flink.table.types.DataType;
import org.apache.flink.table.types.logical.LogicalTypeRoot;

/**
 * The columns the 'adclick-event' format can fill for one event type (its contract's fields,
 * then its own), and which of them a table asked for.
 */
final class EventColumns {

  /**
   * After the contract's fields, in this order. traffic: the event's general invalid-traffic
   * label (TrafficRules), null for a conversion or a rejected record.
   */
  static final String[] OWN = {"reject_reason", "payload", "key_hi", "key_lo", "traffic"};
  static final int REJECT_REASON = 0, PAYLOAD = 1, KEY_HI = 2, KEY_LO = 3, TRAFFIC = 4;

  private EventColumns() {}

  /** The column names for contract: its fields, then OWN. */
  static List<String> names(EventParser.Contract contract) {
    List<String> names = new ArrayList<>();
    for (int i = 0; i < contract.size(); i++) {
      names.add(contract.field(i));
    }
    names.addAll(List.of(OWN));
    return names;
  }

  /**
   * For each column of the table's physical row (in its order, after projection), its index in
   * names(contract). Unknown names and wrong types are refused when the table is planned.
   */
  static int[] of(EventParser.Contract contract, DataType physicalDataType) {
    List<String> all = names(contract);
    List<String> names = DataType.getFieldNames(physicalDataType);
    List<DataType> types = DataType.getFieldDataTypes(physicalDataType);
    int[] slots = new int[names.size()];
    for (int i = 0; i < slots.length; i++) {
      slots[i] = all.indexOf(names.get(i));
      if (slots[i] < 0) {
        throw new ValidationException(String.format(
            "%s: unknown column '%s' for %s events; the format fills %s",
            EventFormatFactory.IDENTIFIER, names.get(i), contract.name, String.join(", ", all)));
      }
      int own = slots[i] - contract.size();
      boolean bigint = own < 0 ? contract.isNumber(slots[i]) : own == KEY_HI || own == KEY_LO;
      LogicalTypeRoot wanted = bigint ? LogicalTypeRoot.BIGINT
          : own == PAYLOAD ? LogicalTypeRoot.VARBINARY : LogicalTypeRoot.VARCHAR;
      LogicalTypeRoot root = types.get(i).getLogicalType().getTypeRoot();
      if (root != wanted) {
        throw new ValidationException(String.format(
            "%s: column '%s' must be %s, not %s", EventFormatFactory.IDENTIFIER, names.get(i),
            wanted, types.get(i)));
      }
    }
    return slots;
  }
}
