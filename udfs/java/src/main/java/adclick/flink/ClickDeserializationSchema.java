package adclick.flink;

import org.apache.flink.api.common.serialization.DeserializationSchema;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.table.data.GenericRowData;
import org.apache.flink.table.data.RowData;
import org.apache.flink.table.data.StringData;

/**
 * One row per Kafka record, never an exception: a valid click fills the click columns; a
 * rejected one fills only reject_reason and payload (its original bytes), the click columns
 * being null, so its event time (from click_ts) cannot move the watermark.
 */
final class ClickDeserializationSchema implements DeserializationSchema<RowData> {

  private static final long serialVersionUID = 1L;

  private final int[] slots;
  private final TypeInformation<RowData> producedType;
  private final int maxPayloadBytes;
  private final long minClickTsMs;
  private final long maxFutureMs;
  private final boolean keyed;  // does the table ask for click_key_hi / click_key_lo?
  private transient ClickParser parser;
  private transient ClickKey key;

  ClickDeserializationSchema(int[] slots, TypeInformation<RowData> producedType,
      int maxPayloadBytes, long minClickTsMs, long maxFutureMs) {
    this.slots = slots;
    this.producedType = producedType;
    this.maxPayloadBytes = maxPayloadBytes;
    this.minClickTsMs = minClickTsMs;
    this.maxFutureMs = maxFutureMs;
    boolean keyed = false;
    for (int slot : slots) {
      keyed |= slot == ClickColumns.CLICK_KEY_HI || slot == ClickColumns.CLICK_KEY_LO;
    }
    this.keyed = keyed;
  }

  @Override
  public void open(InitializationContext context) {
    parser = new ClickParser(maxPayloadBytes, minClickTsMs, maxFutureMs);
    key = new ClickKey();
  }

  @Override
  public RowData deserialize(byte[] message) {
    if (parser == null) {
      open(null);
    }
    String reason = parser.parse(message, System.currentTimeMillis());
    if (reason == null && keyed) {
      key.of(parser.clickId);
    }
    GenericRowData row = new GenericRowData(slots.length);
    for (int i = 0; i < slots.length; i++) {
      row.setField(i, reason == null ? clickField(slots[i]) : rejectField(slots[i], message));
    }
    return row;
  }

  private Object clickField(int slot) {
    switch (slot) {
      case ClickColumns.CLICK_ID: return StringData.fromString(parser.clickId);
      case ClickColumns.AD_ID: return StringData.fromString(parser.adId);
      case ClickColumns.CLICK_TS: return parser.clickTs;
      case ClickColumns.USER_ID: return StringData.fromString(parser.userId);
      case ClickColumns.IP: return StringData.fromString(parser.ip);
      case ClickColumns.COUNTRY: return StringData.fromString(parser.country);
      case ClickColumns.DEVICE: return StringData.fromString(parser.device);
      case ClickColumns.CLICK_KEY_HI: return key.hi;
      case ClickColumns.CLICK_KEY_LO: return key.lo;
      default: return null;  // reject_reason, payload
    }
  }

  private Object rejectField(int slot, byte[] message) {
    switch (slot) {
      case ClickColumns.REJECT_REASON: return StringData.fromString(parser.reason);
      case ClickColumns.PAYLOAD: return message;
      default: return null;
    }
  }

  @Override
  public boolean isEndOfStream(RowData nextElement) {
    return false;
  }

  @Override
  public TypeInformation<RowData> getProducedType() {
    return producedType;
  }
}
