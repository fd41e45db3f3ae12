package org.wideviews.hfile;

import java.io.IOException;
import java.util.Map;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.hbase.KeyValue;
import org.apache.hadoop.hbase.io.ImmutableBytesWritable;
import org.apache.hadoop.hbase.mapreduce.HFileOutputFormat2;
import org.apache.hadoop.hbase.util.Bytes;
import org.apache.spark.api.java.JavaPairRDD;
import org.apache.spark.api.java.JavaRDD;
import org.apache.spark.sql.Row;
import scala.Tuple2;

/**
 * Writes a Spark DataFrame of cells as HFiles from the executors, without the cells ever passing
 * through Python or the driver: PySpark calls {@link #write} through py4j with
 * {@code df._jdf.javaRDD()}.
 *
 * <p>The rows are {@code (row binary, qualifier binary, value binary)}, sorted within each
 * partition by (row, qualifier) in unsigned byte order; each task writes its partition's HFile(s)
 * under {@code outputDir/<family>/} with HFileOutputFormat2 (which refuses cells out of order).
 * Every cell gets {@code timestampMs}, the version's timestamp, so a rerun writes identical cells.
 * {@code outputDir} may be any Hadoop filesystem URI ({@code s3a://}, EMRFS {@code s3://}).
 */
public final class SparkHFiles {
  private SparkHFiles() {}

  public static void write(JavaRDD<Row> rows, String family, String timestampMs, String outputDir,
      Map<String, String> conf) throws IOException {
    final byte[] fam = Bytes.toBytes(family);
    final long timestamp = Long.parseLong(timestampMs);
    JavaPairRDD<ImmutableBytesWritable, KeyValue> cells = rows.mapToPair(r -> {
      byte[] row = (byte[]) r.get(0);
      KeyValue kv = new KeyValue(row, fam, (byte[]) r.get(1), timestamp, KeyValue.Type.Put,
          (byte[]) r.get(2));
      return new Tuple2<>(new ImmutableBytesWritable(row), kv);
    });
    Configuration hadoop = new Configuration(rows.context().hadoopConfiguration());
    // Without this every task asks ZooKeeper (default localhost) where each region lives.
    hadoop.set("hbase.bulkload.locality.sensitive.enabled", "false");
    hadoop.set("hbase.mapreduce.hfileoutputformat.table.name", "wideviews:any");
    for (Map.Entry<String, String> entry : conf.entrySet()) {
      hadoop.set(entry.getKey(), entry.getValue());
    }
    cells.saveAsNewAPIHadoopFile(outputDir, ImmutableBytesWritable.class, KeyValue.class,
        HFileOutputFormat2.class, hadoop);
  }
}
