package org.wideviews.hfile;

import java.io.FileNotFoundException;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FileStatus;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;
import org.apache.hadoop.hbase.HConstants;
import org.apache.hadoop.hbase.TableName;
import org.apache.hadoop.hbase.TableNotFoundException;
import org.apache.hadoop.hbase.client.Admin;
import org.apache.hadoop.hbase.client.Connection;
import org.apache.hadoop.hbase.client.ConnectionFactory;
import org.apache.hadoop.hbase.tool.BulkLoadHFiles;
import org.apache.hadoop.hbase.tool.BulkLoadHFilesTool;
import org.apache.hadoop.hbase.util.Bytes;

/**
 * Bulk-loads a directory of HFiles ({@code DIR/<family>/<hfile>}, as {@link WriteHFiles} or
 * HFileOutputFormat2 write it) into an existing table with HBase's {@link BulkLoadHFilesTool}.
 *
 * <pre>
 * BulkLoad --zk-quorum HOST --zk-port N --table NS:NAME --dir DIR [--conf KEY=VALUE ...]
 * </pre>
 *
 * <p>{@code DIR} is a path or URI of a file system the region servers can read ({@code /path} and
 * {@code file:///path} are the same local directory). The region servers move the HFiles into the
 * table only when DIR is on the cluster's own HDFS; from any other file system, local disk included
 * (the local stack's {@code file://} rootdir too: HBase's same-file-system test knows only HDFS),
 * they copy them, so DIR is left as it was and loading it again loads the same cells again.
 *
 * <p>Unlike HBase's own tool, this never creates the table: a missing table is an error.
 *
 * <p>Exit codes: 0 with one JSON line on stdout, {@code {"table": "ns:name", "loaded_families":
 * [...], "files": n}} (files counts HFiles loaded into regions, after any split at region
 * boundaries); 2 when the table does not exist, DIR does not exist, DIR holds a family the table
 * lacks, or an argument is bad, with one line on stderr; 1 on any other failure (HBase
 * unreachable, region busy...), with the error on stderr.
 */
public final class BulkLoad {
  static final String USAGE = "usage: BulkLoad --zk-quorum HOST --zk-port N --table NS:NAME"
      + " --dir DIR [--conf KEY=VALUE ...]";

  /**
   * HBase refuses more than 32 HFiles per family and region by default; a big view written in
   * 1 GiB files into a one-region table goes past that.
   */
  static final int MAX_FILES_PER_REGION_PER_FAMILY = 4096;

  private BulkLoad() {}

  /** What one load did. */
  public record Result(String table, List<String> loadedFamilies, int files) {
    public String toJson() {
      return "{\"table\": " + JsonLine.string(table) + ", \"loaded_families\": "
          + JsonLine.strings(loadedFamilies) + ", \"files\": " + files + "}";
    }
  }

  public static void main(String[] args) {
    System.exit(run(args, System.out, System.err));
  }

  /** The command line: returns the exit code instead of exiting, for tests. */
  public static int run(String[] argv, PrintStream out, PrintStream err) {
    try {
      Args args = Args.parse(argv, Set.of("zk-quorum", "zk-port", "table", "dir"),
          Set.of("conf"), USAGE);
      Configuration conf = args.configuration();
      conf.set(HConstants.ZOOKEEPER_QUORUM, args.required("zk-quorum"));
      conf.set(HConstants.ZOOKEEPER_CLIENT_PORT, args.required("zk-port"));
      TableName table = TableName.valueOf(args.required("table"));
      Result result = load(conf, table, new Path(args.required("dir")));
      out.println(result.toJson());
      out.flush();
      return 0;
    } catch (BadInputException | TableNotFoundException | IllegalArgumentException e) {
      err.println("BulkLoad: " + e.getMessage());
      return 2;
    } catch (Exception | LinkageError | OutOfMemoryError e) {
      e.printStackTrace(err);
      err.println("BulkLoad failed: " + e);
      return 1;
    }
  }

  /**
   * Loads every HFile under {@code dir} into {@code table}.
   *
   * @throws TableNotFoundException when the table does not exist
   * @throws BadInputException when dir is missing or holds a family the table lacks
   */
  public static Result load(Configuration conf, TableName table, Path dir) throws IOException {
    Configuration toolConf = new Configuration(conf);
    // BulkLoadHFilesTool would otherwise create a missing table from the HFiles' families.
    toolConf.set(BulkLoadHFiles.CREATE_TABLE_CONF_KEY, "no");
    toolConf.setIfUnset(BulkLoadHFiles.MAX_FILES_PER_REGION_PER_FAMILY,
        Integer.toString(MAX_FILES_PER_REGION_PER_FAMILY));

    Set<String> tableFamilies = new TreeSet<>();
    try (Connection connection = ConnectionFactory.createConnection(toolConf);
        Admin admin = connection.getAdmin()) {
      if (!admin.tableExists(table)) {
        throw new TableNotFoundException("table " + table.getNameAsString() + " does not exist");
      }
      for (byte[] family : admin.getDescriptor(table).getColumnFamilyNames()) {
        tableFamilies.add(Bytes.toString(family));
      }
    }
    checkFamilies(dir.getFileSystem(toolConf), dir, table, tableFamilies);

    Map<BulkLoadHFiles.LoadQueueItem, ByteBuffer> loaded =
        new BulkLoadHFilesTool(toolConf).bulkLoad(table, dir);
    Set<String> families = new TreeSet<>();
    for (BulkLoadHFiles.LoadQueueItem item : loaded.keySet()) {
      families.add(Bytes.toString(item.getFamily()));
    }
    return new Result(table.getNameAsString(), new ArrayList<>(families), loaded.size());
  }

  /** Refuses what the tool would only report deep in its logs: no DIR, or a family the table lacks. */
  private static void checkFamilies(FileSystem fs, Path dir, TableName table,
      Set<String> tableFamilies) throws IOException {
    FileStatus[] entries;
    try {
      entries = fs.listStatus(dir);
    } catch (FileNotFoundException e) {
      throw new BadInputException("HFile directory " + dir + " does not exist");
    }
    Set<String> unknown = new TreeSet<>();
    for (FileStatus entry : entries) {
      String name = entry.getPath().getName();
      // The tool skips "_" entries (_SUCCESS, _tmp, _logs); "." ones are hidden files.
      if (entry.isDirectory() && !name.startsWith("_") && !name.startsWith(".")
          && !tableFamilies.contains(name)) {
        unknown.add(name);
      }
    }
    if (!unknown.isEmpty()) {
      throw new BadInputException("HFile directory " + dir + " holds families " + unknown
          + " that table " + table.getNameAsString() + " lacks (it has " + tableFamilies + ")");
    }
  }
}
