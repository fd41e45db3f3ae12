package org.wideviews.hfile;

import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.hbase.TableExistsException;
import org.apache.hadoop.hbase.TableName;
import org.apache.hadoop.hbase.client.Admin;
import org.apache.hadoop.hbase.client.ColumnFamilyDescriptorBuilder;
import org.apache.hadoop.hbase.client.Connection;
import org.apache.hadoop.hbase.client.ConnectionFactory;
import org.apache.hadoop.hbase.client.TableDescriptorBuilder;
import org.apache.hadoop.hbase.regionserver.BloomType;
import org.apache.hadoop.hbase.util.Bytes;

/**
 * Creates a view's table pre-split at given row keys, unless it exists (Thrift1 cannot pre-split).
 *
 * <pre>
 *   CreateTable --zk-quorum HOST --zk-port N --table NS:NAME --family F [--splits FILE | --splits-hex K,K,...]
 * </pre>
 *
 * FILE holds the split keys in the cell file format's length-prefixed form ({@code uint32 len | key}
 * repeated, big-endian); {@code --splits-hex} gives them inline, each key in hex, comma-separated
 * (what the loader uses: no local file). Either way sorted, no repeats. One family, one version, ROW bloom filter. Prints
 * {@code {"table": ..., "created": true|false, "regions": n}}; exit 2 for bad arguments or keys.
 */
public final class CreateTable {
  static final String USAGE = "usage: CreateTable --zk-quorum HOST --zk-port N --table NS:NAME"
      + " --family F [--splits FILE | --splits-hex K,K,...]";

  private CreateTable() {}

  public static int run(String[] argv, PrintStream out, PrintStream err) {
    try {
      Args args = Args.parse(argv, Set.of("zk-quorum", "zk-port", "table", "family", "splits", "splits-hex"),
          Set.of("conf"), USAGE);
      Configuration conf = args.clusterConfiguration();
      TableName table = TableName.valueOf(args.required("table"));
      byte[] family = Bytes.toBytes(args.required("family"));
      String splitsFile = args.optional("splits", null);
      String splitsHex = args.optional("splits-hex", null);
      if (splitsFile != null && splitsHex != null) {
        throw new IllegalArgumentException("give --splits or --splits-hex, not both; " + USAGE);
      }
      byte[][] splits = splitsFile != null ? readSplits(splitsFile)
          : splitsHex != null ? parseHexSplits(splitsHex) : new byte[0][];
      boolean created = false;
      int regions;
      try (Connection connection = ConnectionFactory.createConnection(conf);
          Admin admin = connection.getAdmin()) {
        if (!admin.tableExists(table)) {
          // Never compacted: a version's table is written once, by bulk loads whose HFiles hold
          // disjoint key ranges (one per compute unit), so a read consults one file per row and a
          // compaction would only rewrite the whole table on every load (quadratic in the units).
          var descriptor = TableDescriptorBuilder.newBuilder(table)
              .setCompactionEnabled(false)
              .setColumnFamily(ColumnFamilyDescriptorBuilder.newBuilder(family)
                  .setMaxVersions(1).setBloomFilterType(BloomType.ROW).build())
              .build();
          try {
            if (splits.length == 0) {
              admin.createTable(descriptor);
            } else {
              admin.createTable(descriptor, splits);
            }
            created = true;
          } catch (TableExistsException e) {
            created = false;  // a concurrent loader made it first
          }
        }
        regions = admin.getRegions(table).size();
      }
      out.println("{\"table\": " + JsonLine.string(table.getNameAsString()) + ", \"created\": "
          + created + ", \"regions\": " + regions + "}");
      return 0;
    } catch (BadInputException | IllegalArgumentException e) {
      err.println("CreateTable: " + e.getMessage());
      return 2;
    } catch (Exception | LinkageError e) {
      e.printStackTrace(err);
      err.println("CreateTable failed: " + e);
      return 1;
    }
  }

  /** The JVM entry: {@link #run} on this command line, its code the exit code. */
  public static void main(String[] args) {
    System.exit(run(args, System.out, System.err));
  }

  static byte[][] parseHexSplits(String text) throws BadInputException {
    List<byte[]> keys = new ArrayList<>();
    for (String hex : text.split(",", -1)) {
      if (hex.isEmpty() || hex.length() % 2 != 0 || !hex.matches("[0-9a-fA-F]+")) {
        throw new BadInputException("split key '" + hex + "' is not a non-empty even-length hex string");
      }
      byte[] key = Bytes.fromHex(hex);
      if (!keys.isEmpty() && Bytes.compareTo(keys.get(keys.size() - 1), key) >= 0) {
        throw new BadInputException("split keys are not sorted and unique at '" + hex + "'");
      }
      keys.add(key);
    }
    return keys.toArray(new byte[0][]);
  }

  static byte[][] readSplits(String file) throws IOException {
    byte[] data = Files.readAllBytes(Paths.get(file));
    List<byte[]> keys = new ArrayList<>();
    int at = 0;
    while (at < data.length) {
      if (at + 4 > data.length) {
        throw new BadInputException("split file " + file + " ends inside a length");
      }
      int length = Bytes.toInt(data, at);
      at += 4;
      if (length <= 0 || at + length > data.length) {
        throw new BadInputException("split file " + file + " has a bad key length " + length);
      }
      byte[] key = Bytes.copy(data, at, length);
      at += length;
      if (!keys.isEmpty() && Bytes.compareTo(keys.get(keys.size() - 1), key) >= 0) {
        throw new BadInputException("split keys of " + file + " are not sorted and unique");
      }
      keys.add(key);
    }
    return keys.toArray(new byte[0][]);
  }
}
