package org.wideviews.hfile;

import java.math.BigInteger;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collection;
import java.util.List;
import org.apache.hadoop.hbase.HConstants;
import org.apache.hadoop.hbase.KeyValue;
import org.apache.spark.api.python.Converter;

/**
 * PySpark value converter for {@code saveAsNewAPIHadoopFile} with
 * {@code org.apache.hadoop.hbase.mapreduce.HFileOutputFormat2}: turns a Python
 * {@code (row, family, qualifier, value)} or {@code (row, family, qualifier, value, timestamp_ms)}
 * into a {@link KeyValue}.
 *
 * <p>Pyrolite hands a Python tuple over as {@code Object[]} and a list as a {@code List}; a Python
 * {@code bytes} or {@code bytearray} arrives as {@code byte[]} and is used as is (binary values stay
 * binary), a {@code str} is encoded as UTF-8. Anything else (a number, None) is rejected rather
 * than stringified, so a value never silently changes representation. Without a timestamp the
 * KeyValue gets LATEST_TIMESTAMP, which HFileOutputFormat2 replaces with the start time of the
 * task writing it, so cells of different partitions differ; give {@code timestamp_ms} (a Python
 * int) for one timestamp across the job.
 *
 * <p>The RDD must be sorted by (row, qualifier) in unsigned byte order, with the row as key
 * (see {@link ImmutableBytesWritableConverter}), and hold one family per HFile directory.
 */
public class KeyValueConverter implements Converter<Object, Object> {
  private static final long serialVersionUID = 1L;

  @Override
  public Object convert(Object obj) {
    List<?> items = items(obj);
    if (items.size() != 4 && items.size() != 5) {
      throw new IllegalArgumentException("expected (row, family, qualifier, value[, timestamp_ms]),"
          + " got " + items.size() + " items");
    }
    long timestamp = items.size() == 5 ? timestamp(items.get(4)) : HConstants.LATEST_TIMESTAMP;
    return new KeyValue(bytes(items.get(0), "row"), bytes(items.get(1), "family"),
        bytes(items.get(2), "qualifier"), timestamp, KeyValue.Type.Put,
        bytes(items.get(3), "value"));
  }

  private static long timestamp(Object item) {
    // Pyrolite turns a Python int into Integer, Long or BigInteger by its size.
    if (item instanceof Integer || item instanceof Long || item instanceof BigInteger) {
      long value = ((Number) item).longValue();
      if (value >= 0 && BigInteger.valueOf(value).equals(new BigInteger(item.toString()))) {
        return value;
      }
    }
    throw new IllegalArgumentException("timestamp_ms must be a non-negative int, got "
        + (item == null ? "None" : item + " (" + item.getClass().getName() + ")"));
  }

  private static List<?> items(Object obj) {
    if (obj instanceof Object[] array) {
      return Arrays.asList(array);
    }
    if (obj instanceof List<?> list) {
      return list;
    }
    if (obj instanceof Collection<?> collection) {
      return new ArrayList<>(collection);
    }
    throw new IllegalArgumentException("expected a tuple or list (row, family, qualifier, value[,"
        + " timestamp_ms]),"
        + " got " + (obj == null ? "null" : obj.getClass().getName()));
  }

  /** The bytes of one item: {@code byte[]} as is, a String as UTF-8; anything else is refused. */
  static byte[] bytes(Object item, String what) {
    if (item instanceof byte[] raw) {
      return raw;
    }
    if (item instanceof String text) {
      return text.getBytes(StandardCharsets.UTF_8);
    }
    throw new IllegalArgumentException(what + " must be bytes or str, got "
        + (item == null ? "None" : item.getClass().getName()));
  }
}
