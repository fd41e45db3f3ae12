package org.wideviews.hfile;

import java.io.IOException;
import java.util.HashMap;
import java.util.Map;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;
import org.apache.hadoop.hbase.HBaseConfiguration;
import org.apache.hadoop.hbase.util.Bytes;
import org.apache.spark.TaskContext;
import org.apache.spark.api.java.JavaRDD;
import org.apache.spark.sql.Row;

/**
 * Writes a Spark DataFrame of cells as HFiles from the executors, without the cells ever passing
 * through Python or the driver: PySpark calls {@link #write} through py4j with
 * {@code df._jdf.javaRDD()}.
 *
 * <p>The rows are {@code (row binary, qualifier binary, value binary)}, sorted within each
 * partition by (row, qualifier) in unsigned byte order (the HFile writer refuses cells out of
 * order). Each task writes its partition straight to its final place,
 * {@code outputDir/<family>/<partition as 16 hex digits>[roll]}: no output committer, so nothing
 * is renamed afterwards (a rename on S3 is a copy). S3 makes an object visible only when its
 * upload completes, and a retried task overwrites the same names, so a failed attempt leaves
 * nothing behind that a rerun does not replace; a failing task deletes what it wrote. Every cell
 * gets {@code timestampMs}, the version's timestamp, so a rerun writes identical cells.
 * {@code outputDir} may be any Hadoop filesystem URI ({@code s3a://}, EMRFS {@code s3://}).
 */
public final class SparkHFiles {
  private SparkHFiles() {}

  /** Writes each partition of {@code rows} as the HFiles of {@code family} under {@code outputDir}. */
  public static void write(JavaRDD<Row> rows, String family, String timestampMs, String outputDir,
      Map<String, String> conf) throws IOException {
    final byte[] fam = Bytes.toBytes(family);
    final long timestamp = Long.parseLong(timestampMs);
    // The driver's Hadoop settings (s3a endpoint and credentials included) travel to the tasks.
    final HashMap<String, String> settings = new HashMap<>();
    for (Map.Entry<String, String> entry : rows.context().hadoopConfiguration()) {
      settings.put(entry.getKey(), entry.getValue());
    }
    settings.putAll(conf);
    final String dir = outputDir;
    rows.foreachPartition(cells -> {
      Configuration hadoop = new Configuration(false);
      settings.forEach(hadoop::set);
      hadoop = HBaseConfiguration.create(hadoop);
      Path familyDir = new Path(new Path(dir), family);
      FileSystem fs = familyDir.getFileSystem(hadoop);
      String name = String.format("%016x", TaskContext.getPartitionId());
      try (HFileSink sink = new HFileSink(hadoop, fs, familyDir, fam, timestamp,
          WriteHFiles.DEFAULT_MAX_FILE_BYTES, name)) {
        byte[] previousRow = null;
        while (cells.hasNext()) {
          Row r = cells.next();
          byte[] row = (byte[]) r.get(0);
          sink.append(row, (byte[]) r.get(1), (byte[]) r.get(2),
              previousRow == null || !Bytes.equals(previousRow, row));
          previousRow = row;
        }
        sink.finish();
      }
    });
  }
}
