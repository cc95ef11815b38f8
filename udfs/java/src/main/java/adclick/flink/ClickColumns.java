package adclick.flink;

import java.util.List;
import org.apache.flink.table.api.ValidationException;
import org.apache.flink.table.types.DataType;
import org.apache.flink.table.types.logical.LogicalTypeRoot;

/** The columns the 'adclick-click' format can fill, and which of them a table asked for. */
final class ClickColumns {

  static final String[] NAMES = {
    "click_id", "ad_id", "click_ts", "user_id", "ip", "country", "device", "reject_reason",
    "payload", "click_key_hi", "click_key_lo",
  };
  static final int CLICK_ID = 0, AD_ID = 1, CLICK_TS = 2, USER_ID = 3, IP = 4, COUNTRY = 5,
      DEVICE = 6, REJECT_REASON = 7, PAYLOAD = 8, CLICK_KEY_HI = 9, CLICK_KEY_LO = 10;

  private ClickColumns() {}

  /**
   * For each column of the table's physical row (in its order, after projection), which of
   * NAMES it is. Unknown names and wrong types are refused when the table is planned.
   */
  static int[] of(DataType physicalDataType) {
    List<String> names = DataType.getFieldNames(physicalDataType);
    List<DataType> types = DataType.getFieldDataTypes(physicalDataType);
    int[] slots = new int[names.size()];
    for (int i = 0; i < slots.length; i++) {
      slots[i] = indexOf(names.get(i));
      LogicalTypeRoot root = types.get(i).getLogicalType().getTypeRoot();
      boolean bigint = slots[i] == CLICK_TS || slots[i] == CLICK_KEY_HI
          || slots[i] == CLICK_KEY_LO;
      LogicalTypeRoot wanted = bigint ? LogicalTypeRoot.BIGINT
          : slots[i] == PAYLOAD ? LogicalTypeRoot.VARBINARY : LogicalTypeRoot.VARCHAR;
      if (root != wanted) {
        throw new ValidationException(String.format(
            "%s: column '%s' must be %s, not %s", ClickFormatFactory.IDENTIFIER, names.get(i),
            wanted, types.get(i)));
      }
    }
    return slots;
  }

  private static int indexOf(String name) {
    for (int i = 0; i < NAMES.length; i++) {
      if (NAMES[i].equals(name)) {
        return i;
      }
    }
    throw new ValidationException(String.format(
        "%s: unknown column '%s'; the format fills %s", ClickFormatFactory.IDENTIFIER, name,
        String.join(", ", NAMES)));
  }
}
