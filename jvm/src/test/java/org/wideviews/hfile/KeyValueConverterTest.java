package org.wideviews.hfile;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import org.apache.hadoop.hbase.CellUtil;
import org.apache.hadoop.hbase.HConstants;
import org.apache.hadoop.hbase.KeyValue;
import org.apache.hadoop.hbase.io.ImmutableBytesWritable;
import org.junit.jupiter.api.Test;

class KeyValueConverterTest {
  private final KeyValueConverter converter = new KeyValueConverter();

  @Test
  void convertsATupleOfBytesKeepingEveryByte() {
    byte[] value = {0x00, (byte) 0xff, (byte) 0x80, 0x7f, '\n'};
    Object[] tuple = {new byte[] {(byte) 0xc3, 0x00}, "f".getBytes(StandardCharsets.UTF_8),
        new byte[] {}, value};

    KeyValue kv = (KeyValue) converter.convert(tuple);

    assertArrayEquals(new byte[] {(byte) 0xc3, 0x00}, CellUtil.cloneRow(kv));
    assertArrayEquals(new byte[] {'f'}, CellUtil.cloneFamily(kv));
    assertArrayEquals(new byte[] {}, CellUtil.cloneQualifier(kv));
    assertArrayEquals(value, CellUtil.cloneValue(kv));
    assertEquals(HConstants.LATEST_TIMESTAMP, kv.getTimestamp());
  }

  @Test
  void convertsAListOfStringsAsUtf8() {
    List<Object> list = new ArrayList<>(List.of("g\u00e8ne", "f", "cell\u2013type", "v"));

    KeyValue kv = (KeyValue) converter.convert(list);

    assertArrayEquals("g\u00e8ne".getBytes(StandardCharsets.UTF_8), CellUtil.cloneRow(kv));
    assertArrayEquals("cell\u2013type".getBytes(StandardCharsets.UTF_8),
        CellUtil.cloneQualifier(kv));
    assertArrayEquals(new byte[] {'v'}, CellUtil.cloneValue(kv));
  }

  @Test
  void mixesBytesAndStrings() {
    KeyValue kv = (KeyValue) converter.convert(new Object[] {"r", "f", "q", new byte[] {1, 2}});

    assertArrayEquals(new byte[] {'r'}, CellUtil.cloneRow(kv));
    assertArrayEquals(new byte[] {1, 2}, CellUtil.cloneValue(kv));
  }

  @Test
  void takesAnOptionalTimestampAsPyroliteHandsOverPythonInts() {
    KeyValue fromLong = (KeyValue) converter.convert(new Object[] {"r", "f", "q", "v", 1_700_000_000_123L});
    KeyValue fromInt = (KeyValue) converter.convert(new Object[] {"r", "f", "q", "v", 7});

    assertEquals(1_700_000_000_123L, fromLong.getTimestamp());
    assertEquals(7L, fromInt.getTimestamp());
    assertArrayEquals(new byte[] {'v'}, CellUtil.cloneValue(fromLong));
    assertThrows(IllegalArgumentException.class,
        () -> converter.convert(new Object[] {"r", "f", "q", "v", -1L}));
    assertThrows(IllegalArgumentException.class,
        () -> converter.convert(new Object[] {"r", "f", "q", "v", 1.5}));
  }

  @Test
  void refusesNumbersInsteadOfStringifyingThem() {
    IllegalArgumentException error = assertThrows(IllegalArgumentException.class,
        () -> converter.convert(new Object[] {"r", "f", "q", 1.5}));

    assertTrue(error.getMessage().contains("value must be bytes or str"), error.getMessage());
  }

  @Test
  void refusesTheWrongArity() {
    assertThrows(IllegalArgumentException.class,
        () -> converter.convert(new Object[] {"r", "f", "q"}));
  }

  @Test
  void rowKeyConverterWrapsTheBytes() {
    ImmutableBytesWritableConverter keys = new ImmutableBytesWritableConverter();

    assertArrayEquals(new byte[] {0, (byte) 0xfe},
        ((ImmutableBytesWritable) keys.convert(new byte[] {0, (byte) 0xfe})).copyBytes());
    assertArrayEquals("r\u00e9".getBytes(StandardCharsets.UTF_8),
        ((ImmutableBytesWritable) keys.convert("r\u00e9")).copyBytes());
  }
}
