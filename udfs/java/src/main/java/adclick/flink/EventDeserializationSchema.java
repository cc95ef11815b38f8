package adclick.flink;

import org.apache.flink.api.common.serialization.DeserializationSchema;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.table.data.GenericRowData;
import org.apache.flink.table.data.RowData;
import org.apache.flink.table.data.StringData;

/**
 * One row per Kafka record, never an exception: a valid event fills its contract's columns (and
 * a click's or impression's traffic label); a rejected one fills only reject_reason and payload
 * (its original bytes), the event columns being null, so its event time cannot move the
 * watermark.
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
  private final boolean labelled;  // does it ask for traffic?
  private transient EventParser.Contract contract;
  private transient EventParser parser;
  private transient EventKey key;
  private transient TrafficRules traffic;
  private transient int userAgentField;  // -1 for a conversion: it is never labelled
  private transient int ipField;

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
    boolean labelled = false;
    for (int slot : slots) {
      keyed |= slot == fields + EventColumns.KEY_HI || slot == fields + EventColumns.KEY_LO;
      labelled |= slot == fields + EventColumns.TRAFFIC;
    }
    this.keyed = keyed;
    this.labelled = labelled;
  }

  @Override
  public void open(InitializationContext context) {
    contract = EventParser.contract(event);
    parser = new EventParser(contract, maxPayloadBytes, minTsMs, maxFutureMs);
    key = new EventKey();
    userAgentField = contract.indexOf("user_agent");
    ipField = contract.indexOf("ip");
    traffic = labelled && userAgentField >= 0 ? new TrafficRules() : null;
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
      case EventColumns.TRAFFIC:
        return traffic == null ? null
            : StringData.fromString(traffic.label(parser.text(userAgentField),
                parser.text(ipField)));
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
