package org.wideviews.hfile;

import java.io.BufferedInputStream;
import java.io.Closeable;
import java.io.DataInputStream;
import java.io.EOFException;
import java.io.IOException;
import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import org.apache.hadoop.hbase.util.Bytes;

/**
 * Streaming reader of the cell file format, the contract between Python ({@code shared/jvm.py},
 * which writes it) and {@link WriteHFiles} (which turns it into HFiles).
 *
 * <h2>Format</h2>
 *
 * <p>A cell file is a sequence of records and nothing else: no header, no trailer, no padding.
 * Each record is one cell:
 *
 * <pre>
 *   uint32 row_len | row bytes | uint32 qualifier_len | qualifier bytes | uint32 value_len | value bytes
 * </pre>
 *
 * <ul>
 *   <li>All lengths are unsigned 32-bit big-endian integers.
 *   <li>{@code row_len} is 1..32767 (HBase stores a row length in a signed short; an empty row is
 *       not a row). A qualifier or a value may be empty. One cell must fit a KeyValue, whose size
 *       is a signed 32-bit integer.
 *   <li>Records are sorted by (row, qualifier) in unsigned lexicographic byte order, which is
 *       HBase's order ({@code Bytes.compareTo}), and no (row, qualifier) appears twice. Several
 *       files given to one {@link WriteHFiles} run are read as one stream, in the order given, and
 *       that whole stream must be sorted.
 *   <li>The column family is not in the file: it is given on the command line, one family per
 *       file. Every cell gets the same timestamp, also given on the command line.
 * </ul>
 *
 * <p>This reader checks the framing only (lengths, truncation); {@link WriteHFiles} checks the
 * order. A malformed record raises {@link BadInputException} naming the file, the record index
 * (0-based) and the last good row.
 */
public final class CellFile implements Closeable {
  /** The longest row HBase can store. */
  public static final int MAX_ROW_BYTES = Short.MAX_VALUE;

  /** Room a KeyValue needs besides row, qualifier and value (lengths, family, timestamp, type). */
  private static final long KEY_VALUE_OVERHEAD = 4 + 4 + 2 + 1 + 255 + 8 + 1;

  private static final int BUFFER_BYTES = 1 << 20;

  private final DataInputStream in;
  private final String source;
  private final long sizeBytes;
  private long position;
  private long index = -1;
  private byte[] row;
  private byte[] qualifier;
  private byte[] value;

  /**
   * Reads records from a stream.
   *
   * @param in the records; closed by {@link #close()}
   * @param source how error messages name the stream (a file path)
   * @param sizeBytes the stream's length if known, else {@code Long.MAX_VALUE}; a record claiming
   *     more bytes than are left is reported as truncated before anything is allocated for it
   */
  public CellFile(InputStream in, String source, long sizeBytes) {
    this.in = new DataInputStream(new BufferedInputStream(in, BUFFER_BYTES));
    this.source = source;
    this.sizeBytes = sizeBytes;
  }

  /** Opens a cell file on the local disk. */
  public static CellFile open(Path path) throws IOException {
    return new CellFile(Files.newInputStream(path), path.toString(), Files.size(path));
  }

  /**
   * Moves to the next record.
   *
   * @return false at the end of the stream, which must fall on a record boundary
   * @throws BadInputException on a truncated or malformed record
   */
  public boolean next() throws IOException {
    int first = in.read();
    if (first < 0) {
      return false;
    }
    long recordIndex = index + 1;
    try {
      long rowLen = ((long) first << 24) | readUnsigned24();
      position += 4;
      if (rowLen == 0 || rowLen > MAX_ROW_BYTES) {
        throw bad(recordIndex, "row length " + rowLen + " is outside 1.." + MAX_ROW_BYTES);
      }
      byte[] nextRow = readField(recordIndex, "row", rowLen);
      long qualifierLen = readLength();
      byte[] nextQualifier = readField(recordIndex, "qualifier", qualifierLen);
      long valueLen = readLength();
      if (rowLen + qualifierLen + valueLen + KEY_VALUE_OVERHEAD > Integer.MAX_VALUE) {
        throw bad(recordIndex, "cell of " + (rowLen + qualifierLen + valueLen)
            + " bytes is larger than a KeyValue can hold");
      }
      byte[] nextValue = readField(recordIndex, "value", valueLen);
      row = nextRow;
      qualifier = nextQualifier;
      value = nextValue;
      index = recordIndex;
      return true;
    } catch (EOFException e) {
      throw bad(recordIndex, "record is truncated (the stream ends inside it)");
    }
  }

  /** Row of the current record; the array is the caller's to keep. */
  public byte[] row() {
    return row;
  }

  /** Qualifier of the current record; the array is the caller's to keep. */
  public byte[] qualifier() {
    return qualifier;
  }

  /** Value of the current record; the array is the caller's to keep. */
  public byte[] value() {
    return value;
  }

  /** 0-based index of the current record in this file, -1 before the first. */
  public long recordIndex() {
    return index;
  }

  /** The name error messages give this file. */
  public String source() {
    return source;
  }

  @Override
  public void close() throws IOException {
    in.close();
  }

  private long readUnsigned24() throws IOException {
    int b1 = in.read();
    int b2 = in.read();
    int b3 = in.read();
    if ((b1 | b2 | b3) < 0) {
      throw new EOFException();
    }
    return ((long) b1 << 16) | ((long) b2 << 8) | b3;
  }

  private long readLength() throws IOException {
    long length = Integer.toUnsignedLong(in.readInt());
    position += 4;
    return length;
  }

  private byte[] readField(long recordIndex, String field, long length) throws IOException {
    if (length > sizeBytes - position) {
      throw bad(recordIndex, field + " length " + length + " runs past the end of the file ("
          + (sizeBytes - position) + " bytes left)");
    }
    if (length > Integer.MAX_VALUE) {
      throw bad(recordIndex, field + " length " + length + " is larger than a KeyValue can hold");
    }
    byte[] bytes = new byte[(int) length];
    in.readFully(bytes);
    position += length;
    return bytes;
  }

  private BadInputException bad(long recordIndex, String what) {
    String after = row == null ? "at the start" : "after row " + quote(row);
    return new BadInputException("malformed record " + recordIndex + " of " + source + " ("
        + after + "): " + what);
  }

  /** A row or qualifier as messages show it: printable ASCII kept, other bytes as \xNN. */
  static String quote(byte[] bytes) {
    return "'" + Bytes.toStringBinary(bytes) + "'";
  }
}
