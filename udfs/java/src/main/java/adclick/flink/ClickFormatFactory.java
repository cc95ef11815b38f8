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
 * The 'adclick-click' table format: parses and validates each raw click once, in the source
 * (ClickParser), so the watermark can be declared on the parsed click_ts and no later operator
 * re-reads the JSON. A record that breaks the contract is not an error: its row carries
 * reject_reason and the original bytes (payload), for the dead-letter topic.
 *
 * <pre>
 *   'format' = 'adclick-click',
 *   'adclick-click.max-payload-bytes' = '4096',
 *   'adclick-click.min-click-ts-ms' = '946684800000',
 *   'adclick-click.max-future-ms' = '3600000'
 * </pre>
 */
public final class ClickFormatFactory implements DeserializationFormatFactory {

  public static final String IDENTIFIER = "adclick-click";

  public static final ConfigOption<Integer> MAX_PAYLOAD_BYTES =
      ConfigOptions.key("max-payload-bytes").intType().defaultValue(4096)
          .withDescription("Larger payloads are rejected as 'oversized'.");
  public static final ConfigOption<Long> MIN_CLICK_TS_MS =
      ConfigOptions.key("min-click-ts-ms").longType().defaultValue(946684800000L)
          .withDescription("Earlier click_ts values are rejected as 'click_ts_too_old'.");
  public static final ConfigOption<Long> MAX_FUTURE_MS =
      ConfigOptions.key("max-future-ms").longType().defaultValue(3600000L)
          .withDescription("click_ts further ahead of the clock is 'click_ts_in_future'.");

  @Override
  public String factoryIdentifier() {
    return IDENTIFIER;
  }

  @Override
  public Set<ConfigOption<?>> requiredOptions() {
    return new HashSet<>();
  }

  @Override
  public Set<ConfigOption<?>> optionalOptions() {
    Set<ConfigOption<?>> options = new HashSet<>();
    options.add(MAX_PAYLOAD_BYTES);
    options.add(MIN_CLICK_TS_MS);
    options.add(MAX_FUTURE_MS);
    return options;
  }

  @Override
  public DecodingFormat<DeserializationSchema<RowData>> createDecodingFormat(
      DynamicTableFactory.Context context, ReadableConfig formatOptions) {
    FactoryUtil.validateFactoryOptions(this, formatOptions);
    int maxPayloadBytes = formatOptions.get(MAX_PAYLOAD_BYTES);
    long minClickTsMs = formatOptions.get(MIN_CLICK_TS_MS);
    long maxFutureMs = formatOptions.get(MAX_FUTURE_MS);
    if (maxPayloadBytes <= 0 || maxFutureMs < 0) {
      throw new IllegalArgumentException(
          IDENTIFIER + ": max-payload-bytes must be positive and max-future-ms not negative");
    }
    return new DecodingFormat<DeserializationSchema<RowData>>() {
      @Override
      public DeserializationSchema<RowData> createRuntimeDecoder(
          DynamicTableSource.Context sourceContext, DataType physicalDataType) {
        return new ClickDeserializationSchema(
            ClickColumns.of(physicalDataType), sourceContext.createTypeInformation(physicalDataType),
            maxPayloadBytes, minClickTsMs, maxFutureMs);
      }

      @Override
      public ChangelogMode getChangelogMode() {
        return ChangelogMode.insertOnly();
      }
    };
  }

  /**
   * Prints the columns the format fills and its default limits, one tab-separated line each,
   * for tests/test_contract_parity.py (needs Flink on the class path).
   */
  public static void main(String[] args) {
    System.out.println("columns\t" + String.join(",", ClickColumns.NAMES));
    System.out.println("defaults\t" + MAX_PAYLOAD_BYTES.defaultValue() + "\t"
        + MIN_CLICK_TS_MS.defaultValue() + "\t" + MAX_FUTURE_MS.defaultValue());
  }
}
