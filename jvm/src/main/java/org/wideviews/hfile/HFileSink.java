package org.wideviews.hfile;

import java.io.IOException;
import java.util.ArrayList;
import java.util.List;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;
import org.apache.hadoop.hbase.CellComparatorImpl;
import org.apache.hadoop.hbase.HConstants;
import org.apache.hadoop.hbase.KeyValue;
import org.apache.hadoop.hbase.io.compress.Compression;
import org.apache.hadoop.hbase.io.encoding.DataBlockEncoding;
import org.apache.hadoop.hbase.io.hfile.CacheConfig;
import org.apache.hadoop.hbase.io.hfile.HFile;
import org.apache.hadoop.hbase.io.hfile.HFileContext;
import org.apache.hadoop.hbase.io.hfile.HFileContextBuilder;
import org.apache.hadoop.hbase.regionserver.BloomType;
import org.apache.hadoop.hbase.regionserver.HStoreFile;
import org.apache.hadoop.hbase.regionserver.StoreFileWriter;
import org.apache.hadoop.hbase.regionserver.StoreUtils;
import org.apache.hadoop.hbase.util.Bytes;

/**
 * Appends the sorted cells of one column family to bulk-load-ready HFiles in {@code familyDir}:
 * ROW bloom filter, the file info HFileOutputFormat2 writes, a new file started at the first row
 * boundary after {@code maxFileBytes} of KeyValues (a row never spans two files).
 *
 * <p>Files are named at random (as HFileOutputFormat2 does) or, given a {@code baseName} of hex
 * digits, {@code baseName} then {@code baseName} followed by the roll index: a rerun of the same
 * Spark task overwrites its own files instead of adding copies. HBase's bulk load takes only hex
 * names. The writer's own key check refuses cells out of order.
 */
final class HFileSink implements AutoCloseable {
  private final Configuration conf;
  private final FileSystem fs;
  private final Path familyDir;
  private final byte[] family;
  private final long timestamp;
  private final long maxFileBytes;
  private final String baseName;
  private final HFileContext context;
  private final List<Path> written = new ArrayList<>();
  private StoreFileWriter writer;
  private long fileBytes;
  private long cells;
  private long rows;
  private boolean finished;

  HFileSink(Configuration conf, FileSystem fs, Path familyDir, byte[] family, long timestamp,
      long maxFileBytes, String baseName) {
    if (maxFileBytes <= 0) {
      throw new IllegalArgumentException("--max-file-bytes must be positive, not " + maxFileBytes);
    }
    if (baseName != null && !baseName.matches("[0-9a-f]+")) {
      throw new IllegalArgumentException("HFile names must be hex digits, not " + baseName);
    }
    this.conf = conf;
    this.fs = fs;
    this.familyDir = familyDir;
    this.family = family;
    this.timestamp = timestamp;
    this.maxFileBytes = maxFileBytes;
    this.baseName = baseName;
    this.context = fileContext(conf, family);
  }

  /** Appends one cell; {@code newRow} says its row differs from the previous cell's. */
  void append(byte[] row, byte[] qualifier, byte[] value, boolean newRow) throws IOException {
    if (newRow) {
      rows++;
      if (writer != null && fileBytes >= maxFileBytes) {
        close(writer);
        writer = null;
      }
    }
    if (writer == null) {
      StoreFileWriter.Builder builder = new StoreFileWriter.Builder(conf, CacheConfig.DISABLED, fs)
          .withBloomType(BloomType.ROW)
          .withFileContext(context)
          .withCellComparator(CellComparatorImpl.COMPARATOR);
      if (baseName == null) {
        builder.withOutputDir(familyDir);
      } else {
        String suffix = written.isEmpty() ? "" : String.format("%04x", written.size());
        builder.withFilePath(new Path(familyDir, baseName + suffix));
      }
      writer = builder.build();
      written.add(writer.getPath());
      fileBytes = 0;
    }
    KeyValue cell = new KeyValue(row, family, qualifier, timestamp, KeyValue.Type.Put, value);
    writer.append(cell);
    fileBytes += cell.getLength();
    cells++;
  }

  /** Closes the open file; after this the files are complete. */
  void finish() throws IOException {
    if (writer != null) {
      close(writer);
      writer = null;
    }
    finished = true;
  }

  /** Nothing after {@link #finish}; before it (a failure on the way), {@link #discard}. */
  @Override
  public void close() {
    if (!finished) {
      discard();
    }
  }

  /** Best effort after a failure: half a view must never reach a bulk load. */
  private void discard() {
    if (writer != null) {
      try {
        writer.close();
      } catch (IOException | RuntimeException ignored) {
        // The file is deleted next; its close failing changes nothing.
      }
      writer = null;
    }
    for (Path path : written) {
      try {
        fs.delete(path, false);
      } catch (IOException ignored) {
        // Nothing more to do; the caller reports the original failure.
      }
    }
  }

  List<Path> written() {
    return written;
  }

  long cells() {
    return cells;
  }

  long rows() {
    return rows;
  }

  private static HFileContext fileContext(Configuration conf, byte[] family) {
    HFileContextBuilder builder = new HFileContextBuilder()
        .withCompression(Compression.Algorithm.NONE)
        .withDataBlockEncoding(DataBlockEncoding.NONE)
        .withChecksumType(StoreUtils.getChecksumType(conf))
        .withBytesPerCheckSum(StoreUtils.getBytesPerChecksum(conf))
        .withBlockSize(HConstants.DEFAULT_BLOCKSIZE)
        .withColumnFamily(family);
    // As HFileOutputFormat2: HFile v3 carries a tags length per cell even when there are none.
    if (HFile.getFormatVersion(conf) >= HFile.MIN_FORMAT_VERSION_WITH_TAGS) {
      builder.withIncludesTags(true);
    }
    return builder.build();
  }

  /** Closes a finished HFile with the file info HFileOutputFormat2 gives bulk-load files. */
  private static void close(StoreFileWriter writer) throws IOException {
    writer.appendFileInfo(HStoreFile.BULKLOAD_TIME_KEY, Bytes.toBytes(System.currentTimeMillis()));
    writer.appendFileInfo(HStoreFile.BULKLOAD_TASK_KEY, Bytes.toBytes("wideviews"));
    writer.appendFileInfo(HStoreFile.MAJOR_COMPACTION_KEY, Bytes.toBytes(true));
    writer.appendFileInfo(HStoreFile.EXCLUDE_FROM_MINOR_COMPACTION_KEY, Bytes.toBytes(false));
    writer.appendTrackedTimestampsToMetadata();
    writer.close();
  }
}
