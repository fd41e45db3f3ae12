package org.wideviews.hfile;

import java.io.FileNotFoundException;
import java.io.IOException;
import java.io.InterruptedIOException;
import java.io.PrintStream;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.IdentityHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import java.util.TreeSet;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FileStatus;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;
import org.apache.hadoop.hbase.TableName;
import org.apache.hadoop.hbase.TableNotFoundException;
import org.apache.hadoop.hbase.client.Admin;
import org.apache.hadoop.hbase.client.Connection;
import org.apache.hadoop.hbase.client.ConnectionFactory;
import org.apache.hadoop.hbase.io.hfile.HFile;
import org.apache.hadoop.hbase.ipc.RemoteWithExtrasException;
import org.apache.hadoop.hbase.tool.BulkLoadHFiles;
import org.apache.hadoop.hbase.tool.BulkLoadHFilesTool;
import org.apache.hadoop.hbase.util.Bytes;
import org.apache.hadoop.ipc.RemoteException;

/**
 * Bulk-loads directories of HFiles ({@code DIR/<family>/<hfile>}, as {@link WriteHFiles} or
 * HFileOutputFormat2 write them) into an existing table with HBase's {@link BulkLoadHFilesTool},
 * waiting out the table's and regions' transient states.
 *
 * <pre>
 * BulkLoad --zk-quorum HOST --zk-port N --table NS:NAME --dir DIR [--dir DIR ...]
 *          [--busy-wait-ms MS] [--conf KEY=VALUE ...]
 * </pre>
 *
 * <p>{@code DIR} is a path or URI of a file system both this JVM and the region servers can read:
 * {@code s3a://bucket/prefix} (hadoop-aws on both classpaths, {@code fs.s3a.*} in their
 * configurations), {@code /path} or {@code file:///path}. Every DIR's HFiles go into one load. The
 * region servers move the HFiles into the table only when DIR is on the cluster's own HDFS; from
 * any other file system (S3, local disk, the local stack's {@code file://} rootdir too: HBase's
 * same-file-system test knows only HDFS) they copy them, so DIR is left as it was and loading it
 * again loads the same cells again. An HFile spanning a region boundary is split by this JVM into
 * {@code DIR/<family>/.tmp/}, which later loads skip.
 *
 * <p>Unlike HBase's own tool, this never creates the table (a missing table is an error), and a
 * file under a family directory that is not an HFile is an error, not a warning.
 *
 * <p>Transient states are retried, with backoff, for up to {@code --busy-wait-ms} (default 120 s):
 * the table not yet available (just created pre-split, disabled, being enabled), a region in
 * transition, moving, splitting or too busy, a RegionServer or master starting or restarting, the
 * cluster unreachable. Loading again after a partly done attempt writes the same cells with the same
 * timestamps, so a retry is safe.
 *
 * <p>Exit codes: 0 with one JSON line on stdout, {@code {"table": "ns:name", "loaded_families":
 * [...], "files": n, "attempts": n, "waited_s": x}} (files counts HFiles loaded into regions, after
 * any split at region boundaries); 2 when the table does not exist, a DIR does not exist or holds
 * no HFile, a file is not an HFile, a DIR holds a family the table lacks, or an argument is bad,
 * with one line on stderr; 1 on any other failure (HBase still busy after the wait, unreachable,
 * an unknown error), with the reason as the last stderr line.
 */
public final class BulkLoad {
  static final String USAGE = "usage: BulkLoad --zk-quorum HOST --zk-port N --table NS:NAME"
      + " --dir DIR [--dir DIR ...] [--busy-wait-ms MS] [--conf KEY=VALUE ...]";

  /**
   * HBase refuses more than 32 HFiles per family and region by default; a big view written in
   * 1 GiB files into a one-region table goes past that, and so does one load of many chunks.
   */
  static final int MAX_FILES_PER_REGION_PER_FAMILY = 4096;

  static final long DEFAULT_BUSY_WAIT_MS = 120_000;
  private static final long FIRST_PAUSE_MS = 200;
  private static final long MAX_PAUSE_MS = 5_000;

  /**
   * Exceptions (by simple class name, local or remote) that name a state HBase leaves by itself: a
   * region closed, moving, opening, splitting or merging, a server starting or stopping, a queue
   * full, a call timed out, a connection lost.
   */
  static final Set<String> TRANSIENT_EXCEPTIONS = Set.of(
      "RegionTooBusyException", "NotServingRegionException", "RegionOfflineException",
      "RegionMovedException", "RegionOpeningException", "TableNotEnabledException",
      "ServerNotRunningYetException", "PleaseHoldException", "MasterNotRunningException",
      "RegionServerStoppedException", "RegionServerAbortedException", "CallQueueTooBigException",
      "CallTimeoutException", "CallDroppedException", "ConnectionClosingException",
      "ConnectionClosedException", "FailedServerException", "NoServerForRegionException",
      "RetriesExhaustedException", "RetriesExhaustedWithDetailsException", "TimeoutIOException",
      "ZooKeeperConnectionException", "ConnectException", "SocketTimeoutException",
      "NoRouteToHostException", "ClosedChannelException", "EOFException",
      "WrongRegionException", "StoppedRpcClientException");

  /** Exceptions that say the input is bad: no retry mends them. */
  static final Set<String> PERMANENT_EXCEPTIONS = Set.of(
      "BadInputException", "CorruptHFileException", "InvalidHFileException",
      "FileNotFoundException", "TableNotFoundException", "NoSuchColumnFamilyException");

  private BulkLoad() {}

  /** What one load did. */
  public record Result(String table, List<String> loadedFamilies, int files, int attempts,
      long waitedMs) {
    public String toJson() {
      return "{\"table\": " + JsonLine.string(table) + ", \"loaded_families\": "
          + JsonLine.strings(loadedFamilies) + ", \"files\": " + files + ", \"attempts\": "
          + attempts + ", \"waited_s\": " + String.format("%.3f", waitedMs / 1000.0) + "}";
    }
  }

  /** HBase stayed in a transient state for the whole wait (exit 1: the caller tries again later). */
  static final class StillBusyException extends IOException {
    private static final long serialVersionUID = 1L;

    StillBusyException(String message, Throwable cause) {
      super(message, cause);
    }
  }

  /** The command line: returns the exit code instead of exiting, for tests. */
  public static int run(String[] argv, PrintStream out, PrintStream err) {
    try {
      Args args = Args.parse(argv, Set.of("zk-quorum", "zk-port", "table", "busy-wait-ms"),
          Set.of("conf", "dir"), USAGE);
      Configuration conf = args.clusterConfiguration();
      TableName table = TableName.valueOf(args.required("table"));
      args.required("dir");
      List<Path> dirs = new ArrayList<>();
      for (String dir : args.all("dir")) {
        dirs.add(new Path(dir));
      }
      long busyWaitMs = args.longValue("busy-wait-ms", DEFAULT_BUSY_WAIT_MS);
      Result result = load(conf, table, dirs, busyWaitMs, err);
      out.println(result.toJson());
      out.flush();
      return 0;
    } catch (BadInputException | TableNotFoundException | IllegalArgumentException e) {
      err.println("BulkLoad: " + e.getMessage());
      return 2;
    } catch (StillBusyException e) {
      err.println("BulkLoad: " + e.getMessage());
      return 1;
    } catch (Exception | LinkageError | OutOfMemoryError e) {
      if (isPermanent(e)) {
        err.println("BulkLoad: " + describe(e));
        return 2;
      }
      e.printStackTrace(err);
      err.println("BulkLoad failed: " + describe(e));
      return 1;
    }
  }

  /** The JVM entry: {@link #run} on this command line, its code the exit code. */
  public static void main(String[] args) {
    System.exit(run(args, System.out, System.err));
  }

  /** {@link #load(Configuration, TableName, List, long, PrintStream)} of one directory, no log. */
  public static Result load(Configuration conf, TableName table, Path dir) throws IOException {
    return load(conf, table, List.of(dir), DEFAULT_BUSY_WAIT_MS, null);
  }

  /**
   * Loads every HFile under {@code dirs} into {@code table} in one load, retrying transient states
   * for up to {@code busyWaitMs}; {@code log} (may be null) gets one line per wait.
   *
   * @throws TableNotFoundException when the table does not exist
   * @throws BadInputException when a dir is missing, holds no HFile, a non-HFile file or a family
   *     the table lacks
   * @throws StillBusyException when HBase stayed in a transient state for the whole wait
   */
  public static Result load(Configuration conf, TableName table, List<Path> dirs, long busyWaitMs,
      PrintStream log) throws IOException {
    Configuration toolConf = new Configuration(conf);
    // BulkLoadHFilesTool would otherwise create a missing table from the HFiles' families.
    toolConf.set(BulkLoadHFiles.CREATE_TABLE_CONF_KEY, "no");
    toolConf.setIfUnset(BulkLoadHFiles.MAX_FILES_PER_REGION_PER_FAMILY,
        Integer.toString(MAX_FILES_PER_REGION_PER_FAMILY));

    long start = System.nanoTime();
    long deadline = start + busyWaitMs * 1_000_000L;
    long pauseMs = FIRST_PAUSE_MS;
    for (int attempt = 1; ; attempt++) {
      try (Connection connection = ConnectionFactory.createConnection(toolConf);
          Admin admin = connection.getAdmin()) {
        Set<String> tableFamilies = tableFamilies(admin, table);
        Map<byte[], List<Path>> hfiles = listHFiles(toolConf, dirs, table, tableFamilies);
        if (!admin.isTableAvailable(table)) {
          // BulkLoadHFilesTool's own check would call this a missing table ("is not currently
          // available"): regions not all assigned yet, or the table disabled.
          throw new StillBusyException("table " + table.getNameAsString()
              + " is not available yet (regions not all online, or disabled)", null);
        }
        Map<BulkLoadHFiles.LoadQueueItem, ByteBuffer> loaded =
            new BulkLoadHFilesTool(toolConf).bulkLoad(table, hfiles);
        Set<String> families = new TreeSet<>();
        for (BulkLoadHFiles.LoadQueueItem item : loaded.keySet()) {
          families.add(Bytes.toString(item.getFamily()));
        }
        long waitedMs = (System.nanoTime() - start) / 1_000_000L;
        return new Result(table.getNameAsString(), new ArrayList<>(families), loaded.size(),
            attempt, waitedMs);
      } catch (IOException e) {
        if (!(e instanceof StillBusyException) && !isTransient(e)) {
          throw e;
        }
        long now = System.nanoTime();
        long remainingMs = (deadline - now) / 1_000_000L;
        if (remainingMs <= 0) {
          throw new StillBusyException("HBase still busy after " + attempt + " attempts over "
              + (now - start) / 1_000_000_000L + " s loading " + table.getNameAsString() + ": "
              + describe(e), e);
        }
        long sleepMs = Math.min(pauseMs, remainingMs);
        if (log != null) {
          log.println("BulkLoad: attempt " + attempt + " met a transient state, retrying in "
              + sleepMs + " ms: " + describe(e));
        }
        sleep(sleepMs);
        pauseMs = Math.min(pauseMs * 2, MAX_PAUSE_MS);
      }
    }
  }

  private static Set<String> tableFamilies(Admin admin, TableName table) throws IOException {
    if (!admin.tableExists(table)) {
      throw new TableNotFoundException("table " + table.getNameAsString() + " does not exist");
    }
    Set<String> families = new TreeSet<>();
    for (byte[] family : admin.getDescriptor(table).getColumnFamilyNames()) {
      families.add(Bytes.toString(family));
    }
    return families;
  }

  /**
   * The HFiles of every dir by family. Refuses what the tool would only report deep in its logs, or
   * skip with a warning: a missing dir, a family the table lacks, a file that is not an HFile, no
   * HFile at all. Skips what the tool skips: "_" entries (_SUCCESS, _tmp, _logs), "." ones (hidden
   * files, the split files of an earlier attempt under .tmp).
   */
  static Map<byte[], List<Path>> listHFiles(Configuration conf, List<Path> dirs, TableName table,
      Set<String> tableFamilies) throws IOException {
    Map<byte[], List<Path>> hfiles = new TreeMap<>(Bytes.BYTES_COMPARATOR);
    for (Path dir : dirs) {
      FileSystem fs = dir.getFileSystem(conf);
      Set<String> unknown = new TreeSet<>();
      for (FileStatus entry : list(fs, dir)) {
        String family = entry.getPath().getName();
        if (!entry.isDirectory() || family.startsWith("_") || family.startsWith(".")) {
          continue;
        }
        if (!tableFamilies.contains(family)) {
          unknown.add(family);
          continue;
        }
        for (FileStatus file : list(fs, entry.getPath())) {
          String name = file.getPath().getName();
          if (file.isDirectory() || name.startsWith("_") || name.startsWith(".")) {
            continue;
          }
          if (!HFile.isHFileFormat(fs, file)) {
            throw new BadInputException("file " + file.getPath() + " (" + file.getLen()
                + " bytes) is not an HFile");
          }
          hfiles.computeIfAbsent(Bytes.toBytes(family), k -> new ArrayList<>())
              .add(file.getPath());
        }
      }
      if (!unknown.isEmpty()) {
        throw new BadInputException("HFile directory " + dir + " holds families " + unknown
            + " that table " + table.getNameAsString() + " lacks (it has " + tableFamilies + ")");
      }
    }
    if (hfiles.isEmpty()) {
      throw new BadInputException("no HFiles under " + dirs);
    }
    return hfiles;
  }

  private static FileStatus[] list(FileSystem fs, Path dir) throws IOException {
    try {
      return fs.listStatus(dir);
    } catch (FileNotFoundException e) {
      throw new BadInputException("HFile directory " + dir + " does not exist");
    }
  }

  /** True when {@code error} or a cause names a state HBase leaves by itself (see the class doc). */
  static boolean isTransient(Throwable error) {
    if (isPermanent(error)) {
      return false;
    }
    for (Throwable t : causes(error)) {
      String message = String.valueOf(t.getMessage());
      if (TRANSIENT_EXCEPTIONS.contains(className(t))
          || message.contains("is not currently available")
          // Regions kept splitting while the tool regrouped the HFiles.
          || message.contains("without completing, bailing out")) {
        return true;
      }
    }
    return false;
  }

  /** True when {@code error} or a cause says the input is bad (the table missing included). */
  static boolean isPermanent(Throwable error) {
    for (Throwable t : causes(error)) {
      String name = className(t);
      boolean unavailable = String.valueOf(t.getMessage()).contains("is not currently available");
      if (PERMANENT_EXCEPTIONS.contains(name) && !unavailable) {
        return true;
      }
    }
    return false;
  }

  /** The simple class name, of the server-side exception for one relayed by RPC. */
  private static String className(Throwable t) {
    String name = t instanceof RemoteException remote ? remote.getClassName()
        : t instanceof RemoteWithExtrasException extras ? extras.getClassName()
        : t.getClass().getName();
    return name.substring(name.lastIndexOf('.') + 1);
  }

  private static List<Throwable> causes(Throwable error) {
    List<Throwable> chain = new ArrayList<>();
    Map<Throwable, Boolean> seen = new IdentityHashMap<>();
    for (Throwable t = error; t != null && seen.put(t, true) == null; t = t.getCause()) {
      chain.add(t);
      for (Throwable suppressed : t.getSuppressed()) {
        chain.add(suppressed);
      }
    }
    return chain;
  }

  /** One line: the outermost message and the innermost cause. */
  static String describe(Throwable error) {
    List<Throwable> chain = causes(error);
    Throwable root = chain.get(chain.size() - 1);
    String text = className(error) + ": " + firstLine(error.getMessage());
    if (root != error) {
      text += " (cause " + className(root) + ": " + firstLine(root.getMessage()) + ")";
    }
    return text;
  }

  private static String firstLine(String text) {
    if (text == null) {
      return "";
    }
    int newline = text.indexOf('\n');
    return newline < 0 ? text : text.substring(0, newline);
  }

  private static void sleep(long ms) throws InterruptedIOException {
    try {
      Thread.sleep(ms);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      throw new InterruptedIOException("interrupted while waiting for HBase");
    }
  }
}
