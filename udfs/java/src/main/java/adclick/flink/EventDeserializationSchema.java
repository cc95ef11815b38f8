package adclick.flink;

import org.apache.flink.api.common.serialization.DeserializationSchema;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.table.data.GenericRowData;
import org.apache.flink.table.data.RowData;
import org.apache.flink.table.data.StringData;

/**
 * One row per Kafka record, never an exception: a valid event fills its contract's columns; a
 * rejected one fills only reject_reason and payload (its original bytes), the event columns
 * being null, so its event time cannot move the watermark.
 */
final class EventDeserializationSchema implements DeserializationSchema<RowData> {

  private static final long serialVersionUID = 1L;

  private final String event;
  private final int[] slots;
  private final TypeInformation<RowData> producedType;
  private final int maxPayloadBytes;
  private final long minTsMs;
  private final long maxFutureMs;
  private final boolean keyed;  // does the table ask for key_hi / key_lo?
  private transient EventParser.Contract contract;
  private transient EventParser parser;
  private transient EventKey key;

  EventDeserializationSchema(String event, int[] slots, TypeInformation<RowData> producedType,
      int maxPayloadBytes, long minTsMs, long maxFutureMs) {
    this.event = event;
    this.slots = slots;
    this.producedType = producedType;
    this.maxPayloadBytes = maxPayloadBytes;
    this.minTsMs = minTsMs;
    this.maxFutureMs = maxFutureMs;
    int fields = EventParser.contract(event).size();
    boolean keyed = false;
    for (int slot : slots) {
      keyed |= slot == fields + EventColumns.KEY_HI || slot == fields + EventColumns.KEY_LO;
    }
    this.keyed = keyed;
  }

  @Override
  public void open(InitializationContext context) {
    contract = EventParser.contract(event);
    parser = new EventParser(contract, maxPayloadBytes, minTsMs, maxFutureMs);
    key = new EventKey();
  }

  @Override
  public RowData deserialize(byte[] message) {
    if (parser == null) {
      open(null);
    }
    String reason = parser.parse(message, System.currentTimeMillis());
    if (reason == null && keyed) {
      key.of(parser.id());
    }
    GenericRowData row = new GenericRowData(slots.length);
    for (int i = 0; i < slots.length; i++) {
      row.setField(i, reason == null ? eventField(slots[i]) : rejectField(slots[i], message));
    }
    return row;
  }

  private Object eventField(int slot) {
    if (slot < contract.size()) {
      return contract.isNumber(slot) ? parser.number(slot)
          : StringData.fromString(parser.text(slot));
    }
    switch (slot - contract.size()) {
      case EventColumns.KEY_HI: return key.hi;
      case EventColumns.KEY_LO: return key.lo;
      default: return null;  // reject_reason, payload
    }
  }

  private Object rejectField(int slot, byte[] message) {
    switch (slot - contract.size()) {
      case EventColumns.REJECT_REASON: return StringData.fromString(parser.reason);
      case EventColumns.PAYLOAD: return message;
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
