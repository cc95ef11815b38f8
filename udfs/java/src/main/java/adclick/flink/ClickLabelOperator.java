package adclick.flink;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import java.util.stream.Collectors;
import java.util.stream.Stream;
import org.apache.flink.api.common.state.ListState;
import org.apache.flink.api.common.state.ListStateDescriptor;
import org.apache.flink.api.common.state.MapState;
import org.apache.flink.api.common.state.MapStateDescriptor;
import org.apache.flink.api.common.state.ValueState;
import org.apache.flink.api.common.state.ValueStateDescriptor;
import org.apache.flink.api.common.typeutils.base.BooleanSerializer;
import org.apache.flink.api.common.typeutils.base.array.BytePrimitiveArraySerializer;
import org.apache.flink.api.common.typeutils.base.ListSerializer;
import org.apache.flink.api.common.typeutils.base.LongSerializer;
import org.apache.flink.core.memory.DataOutputSerializer;
import org.apache.flink.core.memory.MemorySegment;
import org.apache.flink.core.memory.MemorySegmentFactory;
import org.apache.flink.runtime.state.VoidNamespace;
import org.apache.flink.runtime.state.VoidNamespaceSerializer;
import org.apache.flink.runtime.state.internal.InternalListState;
import org.apache.flink.streaming.api.operators.AbstractStreamOperator;
import org.apache.flink.streaming.api.operators.InternalTimer;
import org.apache.flink.streaming.api.operators.InternalTimerService;
import org.apache.flink.streaming.api.operators.OneInputStreamOperator;
import org.apache.flink.streaming.api.operators.TimestampedCollector;
import org.apache.flink.streaming.api.operators.Triggerable;
import org.apache.flink.streaming.api.watermark.Watermark;
import org.apache.flink.streaming.runtime.streamrecord.StreamRecord;
import org.apache.flink.table.data.GenericMapData;
import org.apache.flink.table.data.GenericRowData;
import org.apache.flink.table.data.MapData;
import org.apache.flink.table.data.RowData;
import org.apache.flink.table.data.StringData;
import org.apache.flink.table.data.binary.BinaryArrayData;
import org.apache.flink.table.data.binary.BinaryMapData;
import org.apache.flink.table.data.binary.BinaryRowData;
import org.apache.flink.table.data.binary.BinarySegmentUtils;
import org.apache.flink.table.data.binary.BinaryStringData;
import org.apache.flink.table.data.utils.JoinedRowData;
import org.apache.flink.table.data.utils.ProjectedRowData;
import org.apache.flink.table.data.writer.BinaryArrayWriter;
import org.apache.flink.table.runtime.typeutils.RowDataSerializer;
import org.apache.flink.table.types.logical.BigIntType;
import org.apache.flink.table.types.logical.LogicalType;
import org.apache.flink.table.types.logical.RowType;
import org.apache.flink.table.types.logical.VarCharType;

/**
 * Labels each counted click of an ad with its invalid-traffic label ({@link ClickRules}), in
 * the place of the planner's OVER window that says the same in SQL ({@link ClickTrafficLabels},
 * sql/flink; ClickLabel.install): same keyBy (ad_id), input and output (the input row, then a
 * MAP&lt;STRING, STRING&gt; of event id to label). Unlike the planner's, it drops no late click
 * and its labels do not depend on the order clicks arrive in: the labels it ends with are those
 * of the ad's counted clicks sorted by (event time, event id).
 *
 * <ul>
 *   <li>A click whose minute is still open here (the watermark is before its last
 *       millisecond) is labelled against the stored clicks and stored soon after it comes:
 *       arrivals are buffered and labelled together, ad by ad, before each watermark and each
 *       checkpoint (or when {@value #ARRIVALS_LIMIT} wait). It is held, not emitted: a click
 *       that comes later but is ordered before it may still change its label, and then only
 *       its held label changes. When the watermark closes the minute, its held clicks are
 *       emitted with their labels, before the watermark goes on (a downstream event-time
 *       window still counts them as on time). So the labelling's work follows the arrivals,
 *       and a minute's close only reads back and emits rows already labelled (until
 *       2026-12-08 a minute's clicks waited unlabelled and were all labelled at its close: at
 *       10,000 clicks/s a burst of 600,000, docs/SCALING.md section 8).
 *   <li>A late click (its minute already closed here) is labelled at once the same way; then
 *       every stored click after it whose label it changes is emitted again as a revision: its
 *       row with the map {id: new label, "^replaces": old label} ('^' is no id character).
 *   <li>Stored clicks are dropped once the watermark is past their minute by more than
 *       max(R, W) + the allowed lateness + a minute: a click that could still look back at
 *       them, or be revised by one, would be too late to count.
 * </ul>
 *
 * <p>Rows come out with the record timestamp a KeyedProcessOperator gives them, as the
 * planner's OVER did: the input record's when emitted on arrival, the timer's when emitted as
 * a minute closes (downstream operators read the rowtime from the row). A restored operator,
 * its watermark back at the start, can only tell a minute closed before the restore from
 * its state: a click of such a minute goes out when labelled, as a late one, with its batch's
 * latest record timestamp.
 *
 * <p>State (Flink's managed keyed state, per ad: checkpoints, restores and rescaling are
 * Flink's, on the heap backend or RocksDB). The rules read only the clicks that share a user
 * (repeat_click) or an ip key (ip_frequency) with the click at hand, so the stored clicks are
 * kept under those keys, and labelling a click reads and writes its user's and its ip key's
 * clicks, never the ad's others:
 * <ul>
 *   <li>per open minute (a namespace), its held clicks as stored rows (below; a list: an
 *       append per click, and per change of a held label);
 *   <li>per ip key, its stored clicks in the rules' order, each its input row plus its label
 *       and ip key as one binary row: about 4 + 8 + 8 * (input columns + 2) bytes plus its
 *       strings longer than 7 bytes rounded up to 8, about 230 bytes for the job's 11 columns
 *       (ClickLabelOperatorTest);
 *   <li>per user, its stored clicks' (time, id, user, ip key), in the rules' order (about 120
 *       bytes);
 *   <li>per stored minute (a namespace), the users and ip keys it has clicks of, which is how
 *       the expiry finds them; the stored minutes, each with whether it closed here (its
 *       clicks emitted), and the oldest.
 * </ul>
 * The two maps are keyed by a 64-bit hash of the user or the ip key, and each value is its
 * clicks' binary rows in one byte array: on the heap a click is then two map entries and two
 * arrays, not a dozen objects (keys that kept the click's input row alive, lists, row and
 * memory segment headers: the first version of this layout ran out of a 6 GB heap with 3 M
 * clicks stored), and the rows are read in place. A hash two users or ip keys share puts both
 * in one value; they are told apart by their strings, so a collision costs time, never a
 * label.
 * Before 2026-12-07 the stored clicks were one list per minute of the ad, and every minute's
 * close read the ad's whole look-back (SCALING section 8); {@link #open} moves a restored
 * state of that layout into this one.
 */
public final class ClickLabelOperator extends AbstractStreamOperator<RowData>
    implements OneInputStreamOperator<RowData, RowData>, Triggerable<Object, VoidNamespace> {

  private static final long serialVersionUID = 1L;

  static final long MINUTE_MS = 60_000;
  /** The key of a revision's old label in its map; '^' cannot occur in an id. */
  public static final String REPLACES = "^replaces";
  /** The state of the layout before 2026-12-07: the stored clicks as a list per minute. */
  static final String PER_MINUTE_STATE = "click-label-stored";
  /**
   * The state of the layouts before 2026-12-08: the clicks of open minutes, unlabelled, as
   * their input rows (a list per ad), labelled all at once when their minute closed.
   */
  static final String PENDING_STATE = "click-label-pending";
  /** Arrivals buffered at most before they are labelled (about 300 bytes each). */
  static final int ARRIVALS_LIMIT = 10_000;

  /** What the user index keeps of a stored click: enough to order it and find its row. */
  static final RowType REF_TYPE = RowType.of(
      new LogicalType[] {new BigIntType(false), new VarCharType(VarCharType.MAX_LENGTH),
          new VarCharType(false, VarCharType.MAX_LENGTH),
          new VarCharType(false, VarCharType.MAX_LENGTH)},
      new String[] {"ts", "id", "user_id", "ip_key"});
  private static final int REF_USER = 2;
  private static final int REF_IP_KEY = 3;

  private final RowType inputType;
  private final int idField;
  private final int tsField;
  private final int userField;
  private final int ipField;
  private final int trafficField;
  private final ClickRules rules;
  private final long allowedLatenessMs;
  // All ones; tests keep a few bits, so that users and ip keys share hashes.
  private final long hashMask;

  private transient InternalTimerService<VoidNamespace> timers;
  private transient TimestampedCollector<RowData> collector;
  private transient RowDataSerializer inputRows;
  private transient RowDataSerializer storedRows;
  private transient RowDataSerializer refRows;
  private transient int[] inputFields;
  // Clicks arrived in an open minute and not labelled yet (not state: labelled before each
  // checkpoint and each watermark).
  private transient List<Arrival> arrivals;
  // Per minute (the namespace), its labelled clicks not emitted yet (held), as stored rows; a
  // held click whose label changed is appended again, and the last row of an id is its label.
  private transient InternalListState<Object, Long, RowData> held;
  // Labelled clicks per ip key (by its hash): each its input row with its label and ip key as
  // two more STRING columns, in the rules' order, as rows() reads them.
  private transient MapState<Long, byte[]> byIpKey;
  // Labelled clicks per user (by its hash), as REF_TYPE rows, in the rules' order.
  private transient MapState<Long, byte[]> byUser;
  // The minutes with stored clicks, each with whether it is closed here (its clicks emitted;
  // false while they are held); per minute (the namespace) the hashes of their ip keys and
  // users.
  private transient MapState<Long, Boolean> storedMinutes;
  private transient InternalListState<Object, Long, Long> ipKeysOfMinute;
  private transient InternalListState<Object, Long, Long> usersOfMinute;
  // The oldest stored minute: the cleanup reads the minutes only when that one expired.
  private transient ValueState<Long> oldestStored;

  /**
   * @param inputType the input's row (the output's is it plus one MAP&lt;STRING, STRING&gt;)
   * @param idField its event_id (STRING)
   * @param tsField its event_ts_ms (BIGINT epoch milliseconds)
   * @param userField its user_id (STRING)
   * @param ipField its ip (STRING)
   * @param trafficField its stateless label (STRING, null for none)
   * @param rules the rules' windows and threshold
   * @param allowedLatenessMs how long after its minute closes a click is still counted
   */
  public ClickLabelOperator(RowType inputType, int idField, int tsField, int userField,
                            int ipField, int trafficField, ClickRules rules,
                            long allowedLatenessMs) {
    this(inputType, idField, tsField, userField, ipField, trafficField, rules,
        allowedLatenessMs, -1L);
  }

  /** The same, with the users' and ip keys' hashes cut to hashMask's bits (tests). */
  ClickLabelOperator(RowType inputType, int idField, int tsField, int userField, int ipField,
                     int trafficField, ClickRules rules, long allowedLatenessMs,
                     long hashMask) {
    if (allowedLatenessMs < 0) {
      throw new IllegalArgumentException("negative allowed lateness: " + allowedLatenessMs);
    }
    this.inputType = inputType;
    this.idField = idField;
    this.tsField = tsField;
    this.userField = userField;
    this.ipField = ipField;
    this.trafficField = trafficField;
    this.rules = rules;
    this.allowedLatenessMs = allowedLatenessMs;
    this.hashMask = hashMask;
  }

  public ClickRules getRules() {
    return rules;
  }

  public long getAllowedLatenessMs() {
    return allowedLatenessMs;
  }

  /**
   * The stored clicks' row: the input's columns, then the label and the ip key (computed once:
   * a stored click is read back by every click of its ip key within the rules' look-back).
   */
  static RowType storedType(RowType inputType) {
    List<RowType.RowField> fields = new ArrayList<>(inputType.getFields());
    for (String wanted : new String[] {"click_label", "click_ip_key"}) {
      String name = wanted;
      while (inputType.getFieldNames().contains(name)) {
        name += "_";
      }
      fields.add(new RowType.RowField(name, new VarCharType(VarCharType.MAX_LENGTH)));
    }
    return new RowType(fields);
  }

  @Override
  @SuppressWarnings("unchecked")
  public void open() throws Exception {
    super.open();
    collector = new TimestampedCollector<>(output);
    timers = getInternalTimerService("click-label-timers", VoidNamespaceSerializer.INSTANCE,
        this);
    inputRows = new RowDataSerializer(inputType);
    RowType storedType = storedType(inputType);
    storedRows = new RowDataSerializer(storedType);
    refRows = new RowDataSerializer(REF_TYPE);
    inputFields = new int[inputType.getFieldCount()];
    for (int i = 0; i < inputFields.length; i++) {
      inputFields[i] = i;
    }
    arrivals = new ArrayList<>();
    held = (InternalListState<Object, Long, RowData>) getOrCreateKeyedState(
        LongSerializer.INSTANCE, new ListStateDescriptor<>("click-label-held", storedRows));
    byIpKey = getPartitionedState(new MapStateDescriptor<>("click-label-by-ip-key",
        LongSerializer.INSTANCE, BytePrimitiveArraySerializer.INSTANCE));
    byUser = getPartitionedState(new MapStateDescriptor<>("click-label-by-user",
        LongSerializer.INSTANCE, BytePrimitiveArraySerializer.INSTANCE));
    storedMinutes = getPartitionedState(new MapStateDescriptor<>("click-label-minutes",
        LongSerializer.INSTANCE, BooleanSerializer.INSTANCE));
    ipKeysOfMinute = (InternalListState<Object, Long, Long>) getOrCreateKeyedState(
        LongSerializer.INSTANCE, new ListStateDescriptor<>("click-label-minute-ip-keys",
            LongSerializer.INSTANCE));
    usersOfMinute = (InternalListState<Object, Long, Long>) getOrCreateKeyedState(
        LongSerializer.INSTANCE, new ListStateDescriptor<>("click-label-minute-users",
            LongSerializer.INSTANCE));
    oldestStored = getPartitionedState(new ValueStateDescriptor<>("click-label-oldest",
        LongSerializer.INSTANCE));
    moveFromPerMinuteLayout();
    movePendingToArrivals();
  }

  /**
   * The keys with a value in a state of an earlier layout; none for a new job or one moved
   * already (then the old state is not even registered).
   */
  private List<Object> restoredKeys(String state) {
    try (Stream<Object> keys = getKeyedStateBackend().getKeys(state, VoidNamespace.INSTANCE)) {
      return keys.collect(Collectors.toList());
    }
  }

  /**
   * A state restored from a layout before 2026-12-08 has its open minutes' clicks unlabelled
   * (pending); they become arrivals, labelled at the first watermark or checkpoint, and the
   * old state is emptied. Their minutes' timers are restored with them.
   */
  private void movePendingToArrivals() throws Exception {
    List<Object> keys = restoredKeys(PENDING_STATE);
    if (keys.isEmpty()) {
      return;
    }
    ListState<RowData> pending = getPartitionedState(new ListStateDescriptor<>(PENDING_STATE,
        new RowDataSerializer(inputType)));
    for (Object key : keys) {
      setCurrentKey(key);
      for (RowData row : pending.get()) {
        Entry click = fresh(row); // the state's own row
        arrivals.add(new Arrival(key, click, click.ts));
      }
      pending.clear();
    }
  }

  /**
   * A state restored from the layout before 2026-12-07 (a list of labelled clicks per minute)
   * is moved into this one as it is, labels and all, and the old state emptied. Its stored
   * rows are this layout's; its timers (the minutes' expiries) are this one's too.
   */
  private void moveFromPerMinuteLayout() throws Exception {
    List<Object> keys = restoredKeys(PER_MINUTE_STATE);
    if (keys.isEmpty()) {
      return;
    }
    MapState<Long, List<RowData>> perMinute = getPartitionedState(new MapStateDescriptor<>(
        PER_MINUTE_STATE, LongSerializer.INSTANCE, new ListSerializer<>(storedRows)));
    for (Object key : keys) {
      setCurrentKey(key);
      List<Entry> clicks = new ArrayList<>();
      for (List<RowData> rows : perMinute.values()) {
        for (RowData row : rows) {
          clicks.add(storedEntry(row));
        }
      }
      perMinute.clear();
      clicks.sort(ClickRules.ORDER);
      Map<Long, List<RowData>> ipKeys = new HashMap<>();
      Map<Long, List<RowData>> users = new HashMap<>();
      for (Entry click : clicks) {
        hashed(click);
        ipKeys.computeIfAbsent(click.ipKeyHash, k -> new ArrayList<>()).add(click.stored);
        if (click.user != null) {
          users.computeIfAbsent(click.userHash, k -> new ArrayList<>()).add(refRow(click));
        }
      }
      for (Map.Entry<Long, List<RowData>> ipKey : ipKeys.entrySet()) {
        byIpKey.put(ipKey.getKey(), bytes(ipKey.getValue(), storedRows));
      }
      for (Map.Entry<Long, List<RowData>> user : users.entrySet()) {
        byUser.put(user.getKey(), bytes(user.getValue(), refRows));
      }
      index(clicks, new HashMap<>()); // each a closed minute's: it was emitted
    }
  }

  static long minuteOf(long ts) {
    return ts - Math.floorMod(ts, MINUTE_MS);
  }

  /** When a stored minute's clicks may go: the watermark is then past each's retention. */
  private long expiryOf(long minute) {
    return minute + MINUTE_MS - 1 + rules.lookbackMs() + allowedLatenessMs + MINUTE_MS + 1;
  }

  @Override
  public void processElement(StreamRecord<RowData> element) throws Exception {
    RowData row = element.getValue();
    if (row.isNullAt(tsField)) {
      // No click (a counted click has its time): passed on unlabelled rather than lost.
      collector.setTimestamp(element);
      collector.collect(new JoinedRowData(row, GenericRowData.of(new GenericMapData(Map.of()))));
      return;
    }
    // A copy: inputs may be reused objects.
    Entry click = fresh(inputRows.toBinaryRow(row).copy());
    long end = click.minute() + MINUTE_MS - 1;
    if (timers.currentWatermark() >= end) {
      collector.setTimestamp(element);
      insert(new ArrayList<>(List.of(click)));
    } else {
      timers.registerEventTimeTimer(VoidNamespace.INSTANCE, end);
      arrivals.add(new Arrival(keySerializer().copy(getCurrentKey()), click,
          element.hasTimestamp() ? element.getTimestamp() : click.ts));
      if (arrivals.size() >= ARRIVALS_LIMIT) {
        labelArrivals();
      }
    }
  }

  @SuppressWarnings("unchecked")
  private org.apache.flink.api.common.typeutils.TypeSerializer<Object> keySerializer() {
    return (org.apache.flink.api.common.typeutils.TypeSerializer<Object>)
        getKeyedStateBackend().getKeySerializer();
  }

  /**
   * Labels and stores the buffered arrivals, ad by ad (their minutes are open: they are held).
   * Called before the watermark moves on (so before a minute's close), before each checkpoint
   * and when the buffer is full: the labelling follows the arrivals, a batch each watermark
   * (which also bounds the work a hot ip key's list costs: rewritten once a batch, not once a
   * click), instead of a minute's clicks at once when it closes.
   */
  private void labelArrivals() throws Exception {
    if (arrivals.isEmpty()) {
      return;
    }
    Map<Object, List<Entry>> byKey = new LinkedHashMap<>();
    Map<Object, Long> latest = new HashMap<>();
    for (Arrival arrival : arrivals) {
      byKey.computeIfAbsent(arrival.key, k -> new ArrayList<>()).add(arrival.click);
      latest.merge(arrival.key, arrival.timestamp, Math::max);
    }
    arrivals = new ArrayList<>();
    for (Map.Entry<Object, List<Entry>> ad : byKey.entrySet()) {
      setCurrentKey(ad.getKey());
      // Only a restored operator emits here (see insert): as of its latest arrival.
      collector.setAbsoluteTimestamp(latest.get(ad.getKey()));
      insert(ad.getValue());
    }
  }

  @Override
  public void processWatermark(Watermark mark) throws Exception {
    labelArrivals();
    super.processWatermark(mark);
  }

  @Override
  public void prepareSnapshotPreBarrier(long checkpointId) throws Exception {
    super.prepareSnapshotPreBarrier(checkpointId);
    labelArrivals();
  }

  @Override
  public void finish() throws Exception {
    labelArrivals();
    super.finish();
  }

  @Override
  public void onEventTime(InternalTimer<Object, VoidNamespace> timer) throws Exception {
    long time = timer.getTimestamp();
    collector.setAbsoluteTimestamp(time);
    if (Math.floorMod(time + 1, MINUTE_MS) == 0) {
      emitHeld(time + 1 - MINUTE_MS);
    }
    // The timer's time, not the watermark: when the watermark leaps, the timers of the minutes
    // it closes fire in order, and the later ones still look back at what this one would drop.
    cleanup(time);
  }

  /**
   * A minute closes: its held clicks go out with their labels as they are now, in the rules'
   * order, and the minute is marked closed.
   */
  private void emitHeld(long minute) throws Exception {
    held.setCurrentNamespace(minute);
    Iterable<RowData> rows = held.get();
    if (rows == null) {
      return;
    }
    Map<StringData, Entry> clicks = new LinkedHashMap<>(); // by id (the dedup's key): the last
    for (RowData row : rows) {
      Entry click = storedEntry(row);
      clicks.put((StringData) click.id, click);
    }
    held.clear();
    storedMinutes.put(minute, true);
    List<Entry> sorted = new ArrayList<>(clicks.values());
    sorted.sort(ClickRules.ORDER);
    for (Entry click : sorted) {
      emit(ProjectedRowData.from(inputFields).replaceRow(click.stored), (StringData) click.id,
          click.label, null);
    }
  }

  @Override
  public void onProcessingTime(InternalTimer<Object, VoidNamespace> timer) {
    // no processing-time timers
  }

  /**
   * A click, as the rules read it: a new one (its input row), a stored one (its stored row and
   * label) or a stored one's entry in its user's index (its REF_TYPE row). Its strings are the
   * binary rows' own (StringData, compared by their bytes, never decoded).
   */
  private static final class Entry extends ClickRules.Click {
    final RowData input;   // a new click's input row (a copy), else null
    final RowData ref;     // a stored click's row in its user's index, else null
    RowData stored;        // a stored click's stored row, else null
    StringData label;      // the stored label; a new click's once labelled
    StringData replaced;   // a revised stored click's label before
    boolean repeat;        // a new click's: its user's click before it is less than R before
    boolean held;          // a new click's: its minute is open, its emission waits for the close
    long userHash;         // a new click's user's and ip key's hash (hashed), the maps' keys
    long ipKeyHash;

    Entry(long ts, StringData id, StringData user, StringData ipKey, StringData traffic,
          RowData input, RowData ref, RowData stored, StringData label) {
      super(ts, id, user, ipKey, traffic);
      this.input = input;
      this.ref = ref;
      this.stored = stored;
      this.label = label;
    }

    boolean isNew() {
      return input != null;
    }

    long minute() {
      return minuteOf(ts);
    }

    StringData ipKeyData() {
      return (StringData) ipKey;
    }
  }

  /** A click arrived in an open minute, with its ad (the key) and its record's timestamp. */
  private static final class Arrival {
    final Object key;
    final Entry click;
    final long timestamp;

    Arrival(Object key, Entry click, long timestamp) {
      this.key = key;
      this.click = click;
      this.timestamp = timestamp;
    }
  }

  private static StringData string(RowData row, int field) {
    return row.isNullAt(field) ? null : row.getString(field);
  }

  /** A new click, from its input row: a copy of its own (no reused object). */
  private Entry fresh(RowData copy) {
    StringData ip = string(copy, ipField);
    return hashed(new Entry(copy.getLong(tsField), string(copy, idField),
        string(copy, userField),
        StringData.fromString(IpAddress.key(ip == null ? null : ip.toString())),
        string(copy, trafficField), copy, null, null, null));
  }

  private Entry storedEntry(RowData row) {
    int label = inputFields.length;
    return new Entry(row.getLong(tsField), string(row, idField), string(row, userField),
        string(row, label + 1), string(row, trafficField), null, null, row, string(row, label));
  }

  private static Entry refEntry(RowData ref) {
    return new Entry(ref.getLong(0), string(ref, 1), ref.getString(REF_USER),
        ref.getString(REF_IP_KEY), null, null, ref, null, null);
  }

  private RowData refRow(Entry click) {
    return refRows.toBinaryRow(GenericRowData.of(click.ts, click.id, click.user, click.ipKey))
        .copy();
  }

  /** Sets a click's userHash (when it has a user) and ipKeyHash; returns it. */
  private Entry hashed(Entry click) {
    click.userHash = click.user == null ? 0 : hash(click.user);
    click.ipKeyHash = hash(click.ipKey);
    return click;
  }

  /** A user's or an ip key's hash: the two maps' key. */
  private long hash(Object string) {
    byte[] bytes = ((StringData) string).toBytes();
    long h = 0xcbf29ce484222325L;  // FNV-1a, then a 64-bit finalizer (MurmurHash3's)
    for (byte b : bytes) {
      h = (h ^ (b & 0xff)) * 0x100000001b3L;
    }
    h = (h ^ (h >>> 33)) * 0xff51afd7ed558ccdL;
    h = (h ^ (h >>> 33)) * 0xc4ceb9fe1a85ec53L;
    return (h ^ (h >>> 33)) & hashMask;
  }

  /** Rows as one map value: each its size, then its binary row's bytes. */
  private static byte[] bytes(List<RowData> rows, RowDataSerializer serializer)
      throws java.io.IOException {
    DataOutputSerializer out = new DataOutputSerializer(64 * rows.size() + 16);
    for (RowData row : rows) {
      BinaryRowData binary = serializer.toBinaryRow(row);
      out.writeInt(binary.getSizeInBytes());
      BinarySegmentUtils.copyToView(binary.getSegments(), binary.getOffset(),
          binary.getSizeInBytes(), out);
    }
    return out.getCopyOfBuffer();
  }

  /** A map value's rows, read in place (views of the array, which is never changed). */
  private static List<RowData> rows(byte[] value, int arity) {
    if (value == null) {
      return List.of();
    }
    MemorySegment segment = MemorySegmentFactory.wrap(value);
    List<RowData> rows = new ArrayList<>();
    for (int at = 0; at < value.length; ) {
      int size = segment.getIntBigEndian(at);
      BinaryRowData row = new BinaryRowData(arity);
      row.pointTo(segment, at + 4, size);
      rows.add(row);
      at += 4 + size;
    }
    return rows;
  }

  /**
   * The rows of a map value that are key's (their keyField equals it), in order; the others'
   * (another key of the same hash) are added to others.
   */
  private static List<RowData> rowsOf(byte[] value, int arity, int keyField, StringData key,
                                      List<RowData> others) {
    List<RowData> theKeys = new ArrayList<>();
    for (RowData row : rows(value, arity)) {
      (key.equals(row.getString(keyField)) ? theKeys : others).add(row);
    }
    return theKeys;
  }

  private RowData storedRow(RowData input, StringData label, StringData ipKey) {
    return storedRows.toBinaryRow(new JoinedRowData(input, GenericRowData.of(label, ipKey)))
        .copy();
  }

  /** Stored clicks (in the rules' order) with the new clicks (sorted) merged in. */
  private static List<Entry> merged(List<Entry> stored, List<Entry> fresh) {
    List<Entry> all = new ArrayList<>(stored.size() + fresh.size());
    int s = 0;
    for (Entry click : fresh) {
      while (s < stored.size() && ClickRules.ORDER.compare(stored.get(s), click) < 0) {
        all.add(stored.get(s++));
      }
      all.add(click);
    }
    all.addAll(stored.subList(s, stored.size()));
    return all;
  }

  private static Map<StringData, List<Entry>> groupBy(
      List<Entry> clicks, java.util.function.Function<Entry, Object> key) {
    Map<StringData, List<Entry>> groups = new LinkedHashMap<>();
    for (Entry click : clicks) {
      Object value = key.apply(click);
      if (value != null) {
        groups.computeIfAbsent((StringData) value, k -> new ArrayList<>()).add(click);
      }
    }
    return groups;
  }

  /**
   * Labels new clicks against the stored ones and each other, stores them, emits them in the
   * rules' order, and emits a revision for each stored click after them whose label changed.
   * Reads and writes only the new clicks' users and ip keys. Correct for any new clicks,
   * whatever is stored (even stored clicks after them of an open minute, which a restored
   * operator's watermark, back at its start, may make).
   */
  private void insert(List<Entry> fresh) throws Exception {
    fresh.sort(ClickRules.ORDER);
    // A new click is held (stored now, emitted when its minute closes) if its minute is open
    // here and has not closed for this ad. It may have closed with the watermark behind it
    // only in a restored operator (its watermark back at the start): then the click goes out
    // now, as a late one, for a closed minute's clicks were emitted already.
    long watermark = timers.currentWatermark();
    Map<Long, Boolean> closed = new HashMap<>();  // minute -> storedMinutes' (null: none)
    for (Entry click : fresh) {
      long minute = click.minute();
      click.held = minute + MINUTE_MS - 1 > watermark
          && !Boolean.TRUE.equals(closedFlag(minute, closed));
    }
    // The users: a click is a repeat if its user's click just before it is less than R before.
    // A new click changes that only for the click just after it; if that is a stored one, it
    // becomes a repeat (its ip key's pass below revises it).
    Map<StringData, Set<StringData>> nowRepeats = new HashMap<>(); // ip key -> stored ids
    for (Map.Entry<StringData, List<Entry>> user : groupBy(fresh, c -> c.user).entrySet()) {
      long hash = user.getValue().get(0).userHash;
      List<Entry> theUsers = new ArrayList<>();
      List<RowData> others = new ArrayList<>();  // another user's of the same hash
      for (RowData ref : rowsOf(byUser.get(hash), REF_TYPE.getFieldCount(), REF_USER,
          user.getKey(), others)) {
        theUsers.add(refEntry(ref));
      }
      List<Entry> clicks = merged(theUsers, user.getValue());
      List<RowData> refs = new ArrayList<>(clicks.size() + others.size());
      for (int i = 0; i < clicks.size(); i++) {
        Entry click = clicks.get(i);
        Entry before = i == 0 ? null : clicks.get(i - 1);
        boolean repeat = before != null && rules.repeats(before.ts, click.ts);
        if (click.isNew()) {
          click.repeat = repeat;
          refs.add(refRow(click));
        } else {
          if (repeat && before.isNew()) {
            nowRepeats.computeIfAbsent(click.ipKeyData(), k -> new HashSet<>())
                .add((StringData) click.id);
          }
          refs.add(click.ref);
        }
      }
      refs.addAll(others);
      byUser.put(hash, bytes(refs, refRows));
    }
    // The ip keys: each click's count of its ip key's clicks less than W before it. A stored
    // click after a new one that was valid becomes ip_frequency if that count reaches K.
    Map<StringData, List<Entry>> freshByIpKey = groupBy(fresh, c -> c.ipKey);
    Set<StringData> ipKeys = new LinkedHashSet<>(freshByIpKey.keySet());
    ipKeys.addAll(nowRepeats.keySet());
    List<Entry> emitted = new ArrayList<>();
    Map<Long, List<RowData>> heldRows = new TreeMap<>();  // per minute, to append
    int ipKeyField = inputFields.length + 1;
    for (StringData ipKey : ipKeys) {
      List<Entry> freshOfIpKey = freshByIpKey.getOrDefault(ipKey, List.of());
      long hash = freshOfIpKey.isEmpty() ? hash(ipKey) : freshOfIpKey.get(0).ipKeyHash;
      List<Entry> theIpKeys = new ArrayList<>();
      List<RowData> others = new ArrayList<>();  // another ip key's of the same hash
      for (RowData row : rowsOf(byIpKey.get(hash), storedRows.getArity(), ipKeyField, ipKey,
          others)) {
        theIpKeys.add(storedEntry(row));
      }
      List<Entry> clicks = merged(theIpKeys, freshOfIpKey);
      Set<StringData> repeats = nowRepeats.getOrDefault(ipKey, Set.of());
      boolean afterNew = false;
      boolean changed = false;
      int windowStart = 0;
      List<RowData> rows = new ArrayList<>(clicks.size() + others.size());
      for (int i = 0; i < clicks.size(); i++) {
        Entry click = clicks.get(i);
        while (!rules.inIpWindow(clicks.get(windowStart).ts, click.ts)) {
          windowStart++;
        }
        int earlier = i - windowStart;
        if (click.isNew()) {
          afterNew = true;
          changed = true;
          click.label = click.traffic != null ? (StringData) click.traffic
              : ruleLabel(rules.label(null, click.repeat, earlier));
          click.stored = storedRow(click.input, click.label, ipKey);
          if (click.held) {
            heldRows.computeIfAbsent(click.minute(), m -> new ArrayList<>()).add(click.stored);
          } else {
            emitted.add(click);
          }
        } else if (click.traffic == null && (afterNew || !repeats.isEmpty())) {
          String old = click.label.toString();
          String now = old;
          if (repeats.contains((StringData) click.id)) {
            now = ClickRules.REPEAT_CLICK;
          } else if (afterNew && ClickRules.VALID.equals(old)) {
            now = rules.label(null, false, earlier);
          }
          if (!now.equals(old)) {
            changed = true;
            click.replaced = click.label;
            click.label = ruleLabel(now);
            click.stored = storedRow(ProjectedRowData.from(inputFields).replaceRow(click.stored),
                click.label, ipKey);
            if (isHeld(click, watermark, closed)) {
              // Not emitted yet: its emission takes the new label, no revision needed.
              heldRows.computeIfAbsent(click.minute(), m -> new ArrayList<>()).add(click.stored);
            } else {
              emitted.add(click);
            }
          }
        }
        rows.add(click.stored);
      }
      if (changed) {
        rows.addAll(others);
        byIpKey.put(hash, bytes(rows, storedRows));
      }
    }
    for (Map.Entry<Long, List<RowData>> minute : heldRows.entrySet()) {
      held.setCurrentNamespace(minute.getKey());
      held.addAll(minute.getValue());
    }
    emitted.sort(ClickRules.ORDER);
    for (Entry click : emitted) {
      if (click.isNew()) {
        emit(click.input, (StringData) click.id, click.label, null);
      } else {
        emit(ProjectedRowData.from(inputFields).replaceRow(click.stored),
            (StringData) click.id, click.label, click.replaced);
      }
    }
    index(fresh, closed);
  }

  /**
   * Whether a stored click is held (not emitted yet): its minute is open here and has not
   * closed for this ad (closed caches storedMinutes' values).
   */
  private boolean isHeld(Entry stored, long watermark, Map<Long, Boolean> closed)
      throws Exception {
    long minute = stored.minute();
    if (minute + MINUTE_MS - 1 <= watermark) {
      return false;  // its close fired before the watermark came
    }
    return Boolean.FALSE.equals(closedFlag(minute, closed));
  }

  /**
   * storedMinutes' value of a minute (null: none), read once per labelling: closed caches
   * them.
   */
  private Boolean closedFlag(long minute, Map<Long, Boolean> closed) throws Exception {
    if (!closed.containsKey(minute)) {
      closed.put(minute, storedMinutes.get(minute));
    }
    return closed.get(minute);
  }

  /**
   * Records new stored clicks' minutes (closed unless their clicks are held), users and ip keys
   * for their expiry; closed has storedMinutes' values of their minutes (null: none yet).
   */
  private void index(List<Entry> clicks, Map<Long, Boolean> closed) throws Exception {
    Map<Long, List<Entry>> byMinute = new TreeMap<>();
    for (Entry click : clicks) {
      byMinute.computeIfAbsent(click.minute(), m -> new ArrayList<>()).add(click);
    }
    Long oldest = null;
    boolean newMinute = false;
    for (Map.Entry<Long, List<Entry>> minute : byMinute.entrySet()) {
      long m = minute.getKey();
      if (closed.get(m) == null) {
        // A minute's new clicks are all held or all not (same minute, same state).
        storedMinutes.put(m, !minute.getValue().get(0).held);
        timers.registerEventTimeTimer(VoidNamespace.INSTANCE, expiryOf(m));
        if (!newMinute) {
          oldest = oldestStored.value();
          newMinute = true;
        }
        if (oldest == null || m < oldest) {
          oldest = m;
        }
      }
      Set<Long> ipKeys = new LinkedHashSet<>();
      Set<Long> users = new LinkedHashSet<>();
      for (Entry click : minute.getValue()) {
        ipKeys.add(click.ipKeyHash);
        if (click.user != null) {
          users.add(click.userHash);
        }
      }
      ipKeysOfMinute.setCurrentNamespace(m);
      ipKeysOfMinute.addAll(new ArrayList<>(ipKeys));
      usersOfMinute.setCurrentNamespace(m);
      usersOfMinute.addAll(new ArrayList<>(users));
    }
    if (newMinute) {
      oldestStored.update(oldest);
    }
  }

  /** The current key's stored minutes, in order (tests). */
  List<Long> storedMinutes() throws Exception {
    List<Long> minutes = new ArrayList<>();
    for (Long minute : storedMinutes.keys()) {
      minutes.add(minute);
    }
    minutes.sort(null);
    return minutes;
  }

  /** The current key's held rows of a minute, in order, as (id, label) (tests). */
  List<List<String>> heldLabels(long minute) throws Exception {
    held.setCurrentNamespace(minute);
    List<List<String>> labels = new ArrayList<>();
    Iterable<RowData> rows = held.get();
    if (rows != null) {
      for (RowData row : rows) {
        Entry click = storedEntry(row);
        labels.add(List.of(click.id.toString(), click.label.toString()));
      }
    }
    return labels;
  }

  /** A string written as its UTF-8 bytes once, so rows that take it need not encode it. */
  private static StringData encoded(String text) {
    BinaryStringData string = BinaryStringData.fromString(text);
    string.ensureMaterialized();
    return string;
  }

  private static final StringData REPLACES_KEY = encoded(REPLACES);
  /** The labels the rules give (a stateless one is the input's own string). */
  private static final Map<String, StringData> RULE_LABELS = Map.of(
      ClickRules.VALID, encoded(ClickRules.VALID),
      ClickRules.REPEAT_CLICK, encoded(ClickRules.REPEAT_CLICK),
      ClickRules.IP_FREQUENCY, encoded(ClickRules.IP_FREQUENCY));

  /** A label of the rules as a string for the rows (a label added to ClickRules still works). */
  private static StringData ruleLabel(String label) {
    StringData constant = RULE_LABELS.get(label);
    return constant != null ? constant : StringData.fromString(label);
  }

  /**
   * The input row and its labels' map {id: label} (with "^replaces": the old label, for a
   * revision). The map is binary: each of the planner's Calcs after this copies the columns it
   * reads, and a binary map's copy is one array copy where a hash map's is a conversion to one
   * (docs/SCALING.md section 8).
   */
  private void emit(RowData input, StringData id, StringData label, StringData replaced) {
    MapData labels = replaced == null
        ? BinaryMapData.valueOf(strings(id), strings(label))
        : BinaryMapData.valueOf(strings(id, REPLACES_KEY), strings(label, replaced));
    collector.collect(new JoinedRowData(input, GenericRowData.of(labels)));
  }

  private static BinaryArrayData strings(StringData... values) {
    BinaryArrayData array = new BinaryArrayData();
    BinaryArrayWriter writer = new BinaryArrayWriter(array, values.length, 8);
    for (int i = 0; i < values.length; i++) {
      writer.writeString(i, values[i]);
    }
    writer.complete();
    return array;
  }

  /**
   * Drops the stored clicks of the minutes no counted click can look back at any more, and
   * keeps a timer at the expiry of the oldest left (one is there already, unless the windows or
   * the lateness changed across a restore: then an idle ad's clicks would stay forever).
   */
  private void cleanup(long time) throws Exception {
    Long oldest = oldestStored.value();
    if (oldest == null) {
      return;
    }
    if (time >= expiryOf(oldest)) {
      Set<Long> ipKeys = new HashSet<>();
      Set<Long> users = new HashSet<>();
      List<Long> expired = new ArrayList<>();
      long next = Long.MAX_VALUE;
      for (Long minute : storedMinutes.keys()) {
        if (time >= expiryOf(minute)) {
          expired.add(minute);
        } else {
          next = Math.min(next, minute);
        }
      }
      for (Long minute : expired) {
        ipKeysOfMinute.setCurrentNamespace(minute);
        addAll(ipKeysOfMinute.get(), ipKeys);
        ipKeysOfMinute.clear();
        usersOfMinute.setCurrentNamespace(minute);
        addAll(usersOfMinute.get(), users);  // none if no click of the minute had a user
        usersOfMinute.clear();
        storedMinutes.remove(minute);
      }
      drop(byIpKey, ipKeys, time, storedRows, tsField);
      drop(byUser, users, time, refRows, 0);
      if (next == Long.MAX_VALUE) {
        oldestStored.clear();
        return;
      }
      oldest = next;
      oldestStored.update(oldest);
    }
    timers.registerEventTimeTimer(VoidNamespace.INSTANCE, expiryOf(oldest));
  }

  /** A list state's values (null when it holds none) added to set. */
  private static void addAll(Iterable<Long> values, Set<Long> set) {
    if (values != null) {
      values.forEach(set::add);
    }
  }

  /** Removes from these keys' values the clicks (time in tsField) expired at time. */
  private void drop(MapState<Long, byte[]> clicks, Set<Long> keys, long time,
                    RowDataSerializer serializer, int tsField) throws Exception {
    for (Long key : keys) {
      byte[] value = clicks.get(key);
      if (value == null) {
        continue;
      }
      List<RowData> rows = rows(value, serializer.getArity());
      List<RowData> kept = new ArrayList<>(rows.size());
      for (RowData row : rows) {
        if (time < expiryOf(minuteOf(row.getLong(tsField)))) {
          kept.add(row);
        }
      }
      if (kept.isEmpty()) {
        clicks.remove(key);
      } else if (kept.size() < rows.size()) {
        clicks.put(key, bytes(kept, serializer));
      }
    }
  }
}
