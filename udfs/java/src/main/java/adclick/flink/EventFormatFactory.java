package adclick.flink;

import java.util.HashSet;
import java.util.Set;
import org.apache.flink.api.common.serialization.DeserializationSchema;
import org.apache.flink.configuration.ConfigOption;
import org.apache.flink.configuration.ConfigOptions;
import org.apache.flink.configuration.ReadableConfig;
import org.apache.flink.table.connector.ChangelogMode;
import org.apache.flink.table.connector.format.DecodingFormat;
import org.apache.flink.table.connector.source.DynamicTableSource;
import org.apache.flink.table.data.RowData;
import org.apache.flink.table.factories.DeserializationFormatFactory;
import org.apache.flink.table.factories.DynamicTableFactory;
import org.apache.flink.table.factories.FactoryUtil;
import org.apache.flink.table.types.DataType;

/**
 * The 'adclick-event' table format: parses and validates each raw event (a click, an
 * impression or a conversion) once, in the source (EventParser), so the watermark can be
 * declared on the parsed event time and no later operator re-reads the JSON. A record that
 * breaks the contract is not an error: its row carries reject_reason and the original bytes
 * (payload), for the dead-letter topic. A valid click or impression can carry its general
 * invalid-traffic label (traffic: TrafficRules), computed here too, once per event.
 *
 * <pre>
 *   'format' = 'adclick-event',
 *   'adclick-event.event' = 'click',
 *   'adclick-event.max-payload-bytes' = '4096',
 *   'adclick-event.min-ts-ms' = '946684800000',
 *   'adclick-event.max-future-ms' = '3600000'
 * </pre>
 */
public final class EventFormatFactory implements DeserializationFormatFactory {

  public static final String IDENTIFIER = "adclick-event";

  public static final ConfigOption<String> EVENT =
      ConfigOptions.key("event").stringType().noDefaultValue()
          .withDescription("The event type: click, impression or conversion.");
  public static final ConfigOption<Integer> MAX_PAYLOAD_BYTES =
      ConfigOptions.key("max-payload-bytes").intType().defaultValue(4096)
          .withDescription("Larger payloads are rejected as 'oversized'.");
  public static final ConfigOption<Long> MIN_TS_MS =
      ConfigOptions.key("min-ts-ms").longType().defaultValue(946684800000L)
          .withDescription("Earlier event times are rejected as '<field>_too_old'.");
  public static final ConfigOption<Long> MAX_FUTURE_MS =
      ConfigOptions.key("max-future-ms").longType().defaultValue(3600000L)
          .withDescription("Event times further ahead of the clock are '<field>_in_future'.");

  @Override
  public String factoryIdentifier() {
    return IDENTIFIER;
  }

  @Override
  public Set<ConfigOption<?>> requiredOptions() {
    Set<ConfigOption<?>> options = new HashSet<>();
    options.add(EVENT);
    return options;
  }

  @Override
  public Set<ConfigOption<?>> optionalOptions() {
    Set<ConfigOption<?>> options = new HashSet<>();
    options.add(MAX_PAYLOAD_BYTES);
    options.add(MIN_TS_MS);
    options.add(MAX_FUTURE_MS);
    return options;
  }

  @Override
  public DecodingFormat<DeserializationSchema<RowData>> createDecodingFormat(
      DynamicTableFactory.Context context, ReadableConfig formatOptions) {
    FactoryUtil.validateFactoryOptions(this, formatOptions);
    String event = formatOptions.get(EVENT);
    EventParser.Contract contract = EventParser.contract(event);
    int maxPayloadBytes = formatOptions.get(MAX_PAYLOAD_BYTES);
    long minTsMs = formatOptions.get(MIN_TS_MS);
    long maxFutureMs = formatOptions.get(MAX_FUTURE_MS);
    if (maxPayloadBytes <= 0 || maxFutureMs < 0) {
      throw new IllegalArgumentException(
          IDENTIFIER + ": max-payload-bytes must be positive and max-future-ms not negative");
    }
    return new DecodingFormat<DeserializationSchema<RowData>>() {
      @Override
      public DeserializationSchema<RowData> createRuntimeDecoder(
          DynamicTableSource.Context sourceContext, DataType physicalDataType) {
        return new EventDeserializationSchema(event,
            EventColumns.of(contract, physicalDataType),
            sourceContext.createTypeInformation(physicalDataType),
            maxPayloadBytes, minTsMs, maxFutureMs);
      }

      @Override
      public ChangelogMode getChangelogMode() {
        return ChangelogMode.insertOnly();
      }
    };
  }

  /**
   * Prints the columns the format fills for each event type and its default limits, one
   * tab-separated line each ("columns EVENT NAMES", "defaults ..."), for
   * tests/test_contract_parity.py (needs Flink on the class path).
   */
  public static void main(String[] args) {
    for (EventParser.Contract contract : EventParser.CONTRACTS) {
      System.out.println("columns\t" + contract.name + "\t"
          + String.join(",", EventColumns.names(contract)));
    }
    System.out.println("defaults\t" + MAX_PAYLOAD_BYTES.defaultValue() + "\t"
        + MIN_TS_MS.defaultValue() + "\t" + MAX_FUTURE_MS.defaultValue());
  }
}
