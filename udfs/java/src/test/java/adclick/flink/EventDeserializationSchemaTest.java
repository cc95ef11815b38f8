package adclick.flink;

import static org.apache.flink.table.api.DataTypes.FIELD;
import static org.apache.flink.table.api.DataTypes.ROW;
import static org.apache.flink.table.api.DataTypes.STRING;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;

import java.nio.charset.StandardCharsets;
import org.apache.flink.table.api.DataTypes;
import org.apache.flink.table.api.ValidationException;
import org.apache.flink.table.data.RowData;
import org.apache.flink.table.types.DataType;
import org.junit.jupiter.api.Test;

/** The format's traffic column: a valid click's or impression's label, else null. */
class EventDeserializationSchemaTest {

  private static final DataType CLICKS = ROW(FIELD("click_id", STRING()),
      FIELD("traffic", STRING()), FIELD("reject_reason", STRING()));

  private static EventDeserializationSchema schema(String event, DataType columns) {
    return new EventDeserializationSchema(event,
        EventColumns.of(EventParser.contract(event), columns), null, 4096, 946_684_800_000L,
        3_600_000L);
  }

  private static RowData click(EventDeserializationSchema schema, String userAgent, String ip) {
    String json = "{\"click_id\": \"c1\", \"ad_id\": \"a1\", \"click_ts\": "
        + System.currentTimeMillis() + ", \"user_id\": \"u1\", \"ip\": \"" + ip + "\","
        + " \"country\": \"US\", \"device\": \"desktop\""
        + (userAgent == null ? "" : ", \"user_agent\": \"" + userAgent + "\"") + "}";
    return schema.deserialize(json.getBytes(StandardCharsets.UTF_8));
  }

  private static String traffic(RowData row) {
    return row.isNullAt(1) ? null : row.getString(1).toString();
  }

  @Test
  void aBotsClickIsLabelledAPersonsNot() {
    EventDeserializationSchema schema = schema("click", CLICKS);
    RowData bot = click(schema, "Mozilla/5.0 (compatible; bingbot/2.0;"
        + " +http://www.bing.com/bingbot.htm)", "81.2.69.142");
    assertEquals("c1", bot.getString(0).toString());
    assertEquals(TrafficRules.BOT_USER_AGENT, traffic(bot));
    assertNull(traffic(click(schema, "Mozilla/5.0 (Windows NT 10.0; Win64; x64)"
        + " AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36",
        "81.2.69.142")));
    assertNull(traffic(click(schema, null, "81.2.69.142")));
    assertEquals(TrafficRules.DATACENTER_IP, traffic(click(schema, null, "13.112.10.20")));
  }

  @Test
  void aRejectedRecordOrAConversionHasNoLabel() {
    EventDeserializationSchema clicks = schema("click", CLICKS);
    RowData rejected = click(clicks, "Googlebot/2.1", "81.2.69.142\", \"click_ts\": \"x");
    assertEquals("duplicate_field", rejected.getString(2).toString());
    assertNull(traffic(rejected));
    EventDeserializationSchema conversions = schema("conversion", ROW(
        FIELD("conversion_id", STRING()), FIELD("traffic", STRING())));
    RowData conversion = conversions.deserialize(("{\"conversion_id\": \"v1\", \"click_id\":"
        + " \"c1\", \"conversion_ts\": " + System.currentTimeMillis() + ", \"type\": \"signup\"}")
        .getBytes(StandardCharsets.UTF_8));
    assertEquals("v1", conversion.getString(0).toString());
    assertNull(traffic(conversion));
  }

  @Test
  void theTrafficColumnIsText() {
    assertThrows(ValidationException.class, () -> schema("impression",
        ROW(FIELD("traffic", DataTypes.BIGINT()))));
  }
}
