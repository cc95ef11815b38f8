package adclick.flink;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import org.apache.flink.api.common.state.ListState;
import org.apache.flink.api.common.state.ListStateDescriptor;
import org.apache.flink.api.common.state.MapState;
import org.apache.flink.api.common.state.MapStateDescriptor;
import org.apache.flink.api.common.state.ValueState;
import org.apache.flink.api.common.state.ValueStateDescriptor;
import org.apache.flink.api.common.typeutils.base.ListSerializer;
import org.apache.flink.api.common.typeutils.base.LongSerializer;
import org.apache.flink.runtime.state.VoidNamespace;
import org.apache.flink.runtime.state.VoidNamespaceSerializer;
import org.apache.flink.streaming.api.operators.AbstractStreamOperator;
import org.apache.flink.streaming.api.operators.InternalTimer;
import org.apache.flink.streaming.api.operators.InternalTimerService;
import org.apache.flink.streaming.api.operators.OneInputStreamOperator;
import org.apache.flink.streaming.api.operators.TimestampedCollector;
import org.apache.flink.streaming.api.operators.Triggerable;
import org.apache.flink.streaming.runtime.streamrecord.StreamRecord;
import org.apache.flink.table.data.GenericMapData;
import org.apache.flink.table.data.GenericRowData;
import org.apache.flink.table.data.RowData;
import org.apache.flink.table.data.StringData;
import org.apache.flink.table.data.utils.JoinedRowData;
import org.apache.flink.table.data.utils.ProjectedRowData;
import org.apache.flink.table.runtime.typeutils.RowDataSerializer;
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
 *       millisecond) waits (pending) until the watermark closes that minute; then the minute's
 *       clicks are sorted and labelled against the stored clicks and each other, stored, and
 *       emitted, before the watermark goes on (a downstream event-time window still counts them
 *       as on time).
 *   <li>A late click (its minute already closed here) is labelled at once against the stored
 *       clicks, stored and emitted; then every stored click after it that shares its user
 *       (less than R after it) or its ip key (less than W after it) is labelled again, and one
 *       whose label changed is emitted again as a revision: its row with the map {id: new
 *       label, "^replaces": old label} ('^' is no id character).
 *   <li>Stored clicks are dropped, a whole minute at a time, once the watermark is past their
 *       time by more than max(R, W) + the allowed lateness + a minute: a click that could still
 *       look back at them, or be revised by one, would be too late to count.
 * </ul>
 *
 * <p>Rows come out with the record timestamp a KeyedProcessOperator gives them, as the
 * planner's OVER did: the input record's when emitted on arrival, the timer's when emitted as
 * a minute closes (downstream operators read the rowtime from the row).
 *
 * <p>State (Flink's managed keyed state, per ad: checkpoints, restores and rescaling are
 * Flink's, on the heap backend or RocksDB): the pending clicks as their input rows (a list:
 * an append per click); the stored clicks per minute (a map from the minute to the list of its
 * clicks), each as its input row plus its current label, serialized as one binary row: per
 * click about 4 + 8 + 8 * (input columns + 1) bytes plus its strings longer than 7 bytes
 * rounded up to 8: about 200 bytes for the job's 11 columns with a 36-character id, a short
 * ad id, user id and IPv4 address (ClickLabelOperatorTest; the heap holds about as much, as
 * binary rows); and the oldest stored minute. Cost: a minute's clicks are written
 * once when it closes and a late click rewrites its minute and the minutes it revises; each
 * closing reads back max(R, W) of the ad's stored clicks.
 */
public final class ClickLabelOperator extends AbstractStreamOperator<RowData>
    implements OneInputStreamOperator<RowData, RowData>, Triggerable<Object, VoidNamespace> {

  private static final long serialVersionUID = 1L;

  static final long MINUTE_MS = 60_000;
  /** The key of a revision's old label in its map; '^' cannot occur in an id. */
  public static final String REPLACES = "^replaces";

  private final RowType inputType;
  private final int idField;
  private final int tsField;
  private final int userField;
  private final int ipField;
  private final int trafficField;
  private final ClickRules rules;
  private final long allowedLatenessMs;

  private transient InternalTimerService<VoidNamespace> timers;
  private transient TimestampedCollector<RowData> collector;
  private transient RowDataSerializer inputRows;
  private transient RowDataSerializer storedRows;
  private transient int[] inputFields;
  // Clicks whose minute is open here, as their input rows.
  private transient ListState<RowData> pending;
  // Labelled clicks by minute: each its input row with its label as one more STRING column.
  private transient MapState<Long, List<RowData>> stored;
  // The oldest minute in stored: the cleanup reads the minutes only when that one expired.
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
  }

  public ClickRules getRules() {
    return rules;
  }

  public long getAllowedLatenessMs() {
    return allowedLatenessMs;
  }

  /**
   * The stored clicks' row: the input's columns, then the label and the ip key (computed once:
   * a stored click is read back at every minute close within the rules' look-back).
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
  public void open() throws Exception {
    super.open();
    collector = new TimestampedCollector<>(output);
    timers = getInternalTimerService("click-label-timers", VoidNamespaceSerializer.INSTANCE,
        this);
    inputRows = new RowDataSerializer(inputType);
    RowType storedType = storedType(inputType);
    storedRows = new RowDataSerializer(storedType);
    inputFields = new int[inputType.getFieldCount()];
    for (int i = 0; i < inputFields.length; i++) {
      inputFields[i] = i;
    }
    pending = getPartitionedState(new ListStateDescriptor<>("click-label-pending",
        new RowDataSerializer(inputType)));
    stored = getPartitionedState(new MapStateDescriptor<>("click-label-stored",
        LongSerializer.INSTANCE, new ListSerializer<>(new RowDataSerializer(storedType))));
    oldestStored = getPartitionedState(new ValueStateDescriptor<>("click-label-oldest",
        LongSerializer.INSTANCE));
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
    collector.setTimestamp(element);
    if (row.isNullAt(tsField)) {
      // No click (a counted click has its time): passed on unlabelled rather than lost.
      collector.collect(new JoinedRowData(row, GenericRowData.of(new GenericMapData(Map.of()))));
      return;
    }
    long minute = minuteOf(row.getLong(tsField));
    if (timers.currentWatermark() >= minute + MINUTE_MS - 1) {
      insertLate(fresh(row));
    } else {
      pending.add(inputRows.toBinaryRow(row).copy());
      timers.registerEventTimeTimer(VoidNamespace.INSTANCE, minute + MINUTE_MS - 1);
    }
  }

  @Override
  public void onEventTime(InternalTimer<Object, VoidNamespace> timer) throws Exception {
    long time = timer.getTimestamp();
    collector.setAbsoluteTimestamp(time);
    List<Entry> closing = new ArrayList<>();
    List<RowData> open = new ArrayList<>();
    Iterable<RowData> waiting = pending.get();
    if (waiting != null) {
      for (RowData row : waiting) {
        // This minute's, and (defensively) any earlier one's.
        if (minuteOf(row.getLong(tsField)) + MINUTE_MS - 1 <= time) {
          closing.add(fresh(row));
        } else {
          open.add(row);
        }
      }
    }
    if (!closing.isEmpty()) {
      if (open.isEmpty()) {
        pending.clear();
      } else {
        pending.update(open);
      }
      insert(closing);
    }
    // The timer's time, not the watermark: when the watermark leaps, the timers of the minutes
    // it closes fire in order, and the later ones still look back at what this one would drop.
    cleanup(time);
  }

  @Override
  public void onProcessingTime(InternalTimer<Object, VoidNamespace> timer) {
    // no processing-time timers
  }

  /**
   * A click, as the rules read it, with its row: a new one or a stored one with its label. Its
   * strings are the binary row's own (StringData, compared by their bytes, never decoded).
   */
  private static final class Entry extends ClickRules.Click {
    final RowData input;   // a new click's input row (a copy), else null
    final RowData stored;  // a stored click's stored row, else null
    StringData label;      // the stored label; a new click's once labelled

    Entry(long ts, StringData id, StringData user, StringData ipKey, StringData traffic,
          RowData input, RowData stored, StringData label) {
      super(ts, id, user, ipKey, traffic);
      this.input = input;
      this.stored = stored;
      this.label = label;
    }

    long minute() {
      return minuteOf(ts);
    }

    StringData ipKeyData() {
      return (StringData) ipKey;
    }
  }

  private static StringData string(RowData row, int field) {
    return row.isNullAt(field) ? null : row.getString(field);
  }

  private Entry fresh(RowData row) {
    RowData copy = inputRows.toBinaryRow(row).copy(); // inputs may be reused objects
    StringData ip = string(copy, ipField);
    return new Entry(copy.getLong(tsField), string(copy, idField), string(copy, userField),
        StringData.fromString(IpAddress.key(ip == null ? null : ip.toString())),
        string(copy, trafficField), copy, null, null);
  }

  private Entry storedEntry(RowData row) {
    int label = inputFields.length;
    return new Entry(row.getLong(tsField), string(row, idField), string(row, userField),
        string(row, label + 1), string(row, trafficField), null, row, string(row, label));
  }

  /**
   * Labels new clicks against the stored ones and each other, stores them, emits them in the
   * rules' order, and emits a revision for each stored click after them whose label changed.
   * Correct for any new clicks, whatever is stored (even stored clicks after them of an open
   * minute, which a restored operator's watermark, back at its start, may make).
   */
  private void insert(List<Entry> fresh) throws Exception {
    fresh.sort(ClickRules.ORDER);
    long lookback = rules.lookbackMs();
    long firstMinute = minuteOf(fresh.get(0).ts - lookback);
    long lastMinute = minuteOf(fresh.get(fresh.size() - 1).ts + lookback - 1);
    // Each stored minute's list is in the rules' order (written so below) and the minutes are
    // read in order, so the stored clicks come sorted and the new ones are merged in: no sort
    // of the whole look-back at every minute close or late click.
    List<Entry> storedEntries = new ArrayList<>();
    boolean inOrder = true;
    for (long minute = firstMinute; minute <= lastMinute; minute += MINUTE_MS) {
      List<RowData> rows = stored.get(minute);
      if (rows != null) {
        for (RowData row : rows) {
          Entry entry = storedEntry(row);
          int last = storedEntries.size() - 1;
          inOrder &= last < 0 || ClickRules.ORDER.compare(storedEntries.get(last), entry) <= 0;
          storedEntries.add(entry);
        }
      }
    }
    if (!inOrder) {
      storedEntries.sort(ClickRules.ORDER);  // only if a stored list was ever out of order
    }
    List<Entry> all = new ArrayList<>(storedEntries.size() + fresh.size());
    int s = 0;
    for (Entry entry : fresh) {
      while (s < storedEntries.size() && ClickRules.ORDER.compare(storedEntries.get(s), entry) < 0) {
        all.add(storedEntries.get(s++));
      }
      all.add(entry);
    }
    all.addAll(storedEntries.subList(s, storedEntries.size()));
    int from = 0;
    while (all.get(from).stored != null) {
      from++;
    }
    String[] labels = rules.labels(all, from, all.size());
    TreeMap<Long, Boolean> touched = new TreeMap<>();
    for (int i = from; i < all.size(); i++) {
      Entry entry = all.get(i);
      StringData label = StringData.fromString(labels[i - from]);
      if (entry.stored == null) {
        entry.label = label;
        emit(entry.input, (StringData) entry.id, label, null);
        touched.put(entry.minute(), true);
      } else if (!label.equals(entry.label)) {
        emit(ProjectedRowData.from(inputFields).replaceRow(entry.stored), (StringData) entry.id,
            label, entry.label);
        entry.label = label;
        touched.putIfAbsent(entry.minute(), false);
      }
    }
    Map<Long, List<RowData>> rewritten = new HashMap<>();
    for (Entry entry : all) {
      long minute = entry.minute();
      if (!touched.containsKey(minute)) {
        continue;
      }
      RowData row = entry.stored;
      if (row == null || !entry.label.equals(string(row, inputFields.length))) {
        RowData input = entry.input != null ? entry.input
            : ProjectedRowData.from(inputFields).replaceRow(entry.stored);
        row = storedRows.toBinaryRow(new JoinedRowData(input,
            GenericRowData.of(entry.label, entry.ipKeyData()))).copy();
      }
      rewritten.computeIfAbsent(minute, m -> new ArrayList<>()).add(row);
    }
    Long oldest = oldestStored.value();
    for (Map.Entry<Long, Boolean> minute : touched.entrySet()) {
      stored.put(minute.getKey(), rewritten.get(minute.getKey()));
      if (minute.getValue()) { // new clicks there: the minute may be new
        timers.registerEventTimeTimer(VoidNamespace.INSTANCE, expiryOf(minute.getKey()));
        if (oldest == null || minute.getKey() < oldest) {
          oldest = minute.getKey();
        }
      }
    }
    oldestStored.update(oldest);
  }

  /**
   * A late click: labelled, stored and emitted, with a revision for each stored click after it
   * whose label it changes. Only the stored clicks of its user or its ip key are read as
   * clicks (the others are passed over by comparing two byte strings): its own label depends on
   * them alone, and a later click's label changes only if it shares one of the two. (Reading
   * every click of the look-back, up to 21 minutes of the ad, for each late click made a hot
   * ad's late clicks cost its whole look-back each: 126 us a click in the bench's mix.)
   */
  private void insertLate(Entry late) throws Exception {
    long lookback = rules.lookbackMs();
    StringData user = (StringData) late.user;
    StringData ipKey = late.ipKeyData();
    int ipKeyField = inputFields.length + 1;
    List<Entry> related = new ArrayList<>();
    boolean inOrder = true;
    for (long minute = minuteOf(late.ts - lookback);
         minute <= minuteOf(late.ts + lookback - 1); minute += MINUTE_MS) {
      List<RowData> rows = stored.get(minute);
      if (rows == null) {
        continue;
      }
      for (RowData row : rows) {
        if (ipKey.equals(row.getString(ipKeyField))
            || (user != null && user.equals(string(row, userField)))) {
          Entry entry = storedEntry(row);
          int last = related.size() - 1;
          inOrder &= last < 0 || ClickRules.ORDER.compare(related.get(last), entry) <= 0;
          related.add(entry);
        }
      }
    }
    if (!inOrder) {
      related.sort(ClickRules.ORDER);
    }
    int at = 0;
    while (at < related.size() && ClickRules.ORDER.compare(related.get(at), late) < 0) {
      at++;
    }
    related.add(at, late);
    late.label = StringData.fromString(rules.labels(related, at, at + 1)[0]);
    emit(late.input, (StringData) late.id, late.label, null);
    // The clicks after it: a repeat_click if it is their user's click less than R before them,
    // else an ip_frequency click if it makes their ip key's count in W reach the threshold.
    Map<StringData, StringData> revised = new HashMap<>();  // by id: the new label
    TreeMap<Long, Boolean> touched = new TreeMap<>();
    touched.put(late.minute(), true);
    int ipFrom = 0;  // the oldest click of the ip key less than W before the current one
    int ipCount = 0;  // the ip key's clicks in [ipFrom, i)
    List<Entry> sameIp = new ArrayList<>();
    for (int i = 0; i < related.size(); i++) {
      Entry entry = related.get(i);
      boolean ofTheKey = ipKey.equals(entry.ipKey);
      if (i > at && entry.traffic == null) {
        String old = entry.label.toString();
        String now = old;
        if (user != null && user.equals(entry.user) && entry.ts - late.ts < rules.repeatWindowMs) {
          now = ClickRules.REPEAT_CLICK;
        } else if (ofTheKey && ClickRules.VALID.equals(old)) {
          while (ipFrom < sameIp.size() && entry.ts - sameIp.get(ipFrom).ts >= rules.ipWindowMs) {
            ipFrom++;
          }
          ipCount = sameIp.size() - ipFrom;
          if (ipCount >= rules.ipThreshold) {
            now = ClickRules.IP_FREQUENCY;
          }
        }
        if (!now.equals(old)) {
          StringData label = StringData.fromString(now);
          emit(ProjectedRowData.from(inputFields).replaceRow(entry.stored), (StringData) entry.id,
              label, entry.label);
          entry.label = label;
          revised.put((StringData) entry.id, label);
          touched.putIfAbsent(entry.minute(), false);
        }
      }
      if (ofTheKey) {
        sameIp.add(entry);
      }
    }
    // Rewrite the minutes it touched: its own, with it in its place, and those of the revised.
    RowData lateRow = storedRows.toBinaryRow(new JoinedRowData(late.input,
        GenericRowData.of(late.label, ipKey))).copy();
    for (long minute : touched.keySet()) {
      List<RowData> rows = stored.get(minute);
      List<RowData> rewritten = new ArrayList<>((rows == null ? 0 : rows.size()) + 1);
      boolean placed = minute != late.minute();
      if (rows != null) {
        for (RowData row : rows) {
          if (!placed && ClickRules.ORDER.compare(late, storedEntry(row)) < 0) {
            rewritten.add(lateRow);
            placed = true;
          }
          StringData label = revised.get(row.getString(idField));
          rewritten.add(label == null ? row : storedRows.toBinaryRow(new JoinedRowData(
              ProjectedRowData.from(inputFields).replaceRow(row),
              GenericRowData.of(label, row.getString(ipKeyField)))).copy());
        }
      }
      if (!placed) {
        rewritten.add(lateRow);
      }
      stored.put(minute, rewritten);
    }
    timers.registerEventTimeTimer(VoidNamespace.INSTANCE, expiryOf(late.minute()));
    Long oldest = oldestStored.value();
    if (oldest == null || late.minute() < oldest) {
      oldestStored.update(late.minute());
    }
  }

  /** The current key's stored minutes, in order (tests). */
  List<Long> storedMinutes() throws Exception {
    List<Long> minutes = new ArrayList<>();
    for (Long minute : stored.keys()) {
      minutes.add(minute);
    }
    minutes.sort(null);
    return minutes;
  }

  private static final StringData REPLACES_KEY = StringData.fromString(REPLACES);

  private void emit(RowData input, StringData id, StringData label, StringData replaced) {
    Map<StringData, StringData> labels = new LinkedHashMap<>();
    labels.put(id, label);
    if (replaced != null) {
      labels.put(REPLACES_KEY, replaced);
    }
    collector.collect(new JoinedRowData(input, GenericRowData.of(new GenericMapData(labels))));
  }

  /**
   * Drops the stored minutes whose clicks no counted click can look back at any more, and
   * keeps a timer at the expiry of the oldest left (one is there already, unless the windows or
   * the lateness changed across a restore: then an idle ad's clicks would stay forever).
   */
  private void cleanup(long time) throws Exception {
    Long oldest = oldestStored.value();
    if (oldest == null) {
      return;
    }
    if (time >= expiryOf(oldest)) {
      List<Long> expired = new ArrayList<>();
      long next = Long.MAX_VALUE;
      for (Long minute : stored.keys()) {
        if (time >= expiryOf(minute)) {
          expired.add(minute);
        } else {
          next = Math.min(next, minute);
        }
      }
      for (Long minute : expired) {
        stored.remove(minute);
      }
      if (next == Long.MAX_VALUE) {
        oldestStored.clear();
        return;
      }
      oldest = next;
      oldestStored.update(oldest);
    }
    timers.registerEventTimeTimer(VoidNamespace.INSTANCE, expiryOf(oldest));
  }
}
