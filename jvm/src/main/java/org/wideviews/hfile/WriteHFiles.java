package org.wideviews.hfile;

import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FileStatus;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;
import org.apache.hadoop.hbase.client.ColumnFamilyDescriptorBuilder;
import org.apache.hadoop.hbase.util.Bytes;

/**
 * Turns sorted cell files (see {@link CellFile} for the format) into HFiles ready for HBase's bulk
 * load: {@code DIR/FAMILY/<hex name>}, ROW bloom filter, the metadata HFileOutputFormat2 writes.
 *
 * <pre>
 * WriteHFiles --input FILE [--input FILE ...] --output DIR --family F
 *             [--max-file-bytes N] [--timestamp MS] [--conf KEY=VALUE ...]
 * </pre>
 *
 * <ul>
 *   <li>The inputs are read in the order given as one stream, which must be sorted by (row,
 *       qualifier) without repeats.
 *   <li>{@code DIR} is a local path or a Hadoop file system URI; {@code DIR/F} must be empty or
 *       absent.
 *   <li>A new HFile is started at the first row boundary after {@code --max-file-bytes} (default 1
 *       GiB) of KeyValues, so a row never spans two files.
 *   <li>Every cell gets the timestamp {@code --timestamp} (ms since the epoch; default now).
 * </ul>
 *
 * <p>Exit codes: 0 with one JSON line on stdout, {@code {"cells": n, "rows": n, "files": [...],
 * "bytes": n}} (files as local paths, or URIs off the local disk; bytes is their total size); 2
 * when the input breaks the contract (cells out of order, a repeated cell, a malformed record, a
 * bad argument), with one line on stderr naming the file, record and row; 1 on any other failure.
 * On failure the HFiles this run wrote are deleted.
 */
public final class WriteHFiles {
  public static final long DEFAULT_MAX_FILE_BYTES = 1L << 30;

  static final String USAGE = "usage: WriteHFiles --input FILE [--input FILE ...] --output DIR"
      + " --family F [--max-file-bytes N] [--timestamp MS] [--conf KEY=VALUE ...]";

  private WriteHFiles() {}

  /** What one run wrote. */
  public record Summary(long cells, long rows, List<String> files, long bytes) {
    public String toJson() {
      return "{\"cells\": " + cells + ", \"rows\": " + rows + ", \"files\": "
          + JsonLine.strings(files) + ", \"bytes\": " + bytes + "}";
    }
  }

  /** The command line: returns the exit code instead of exiting, for tests. */
  public static int run(String[] argv, PrintStream out, PrintStream err) {
    try {
      Args args = Args.parse(argv, Set.of("output", "family", "max-file-bytes", "timestamp"),
          Set.of("input", "conf"), USAGE);
      List<java.nio.file.Path> inputs = new ArrayList<>();
      for (String input : args.all("input")) {
        inputs.add(Paths.get(input));
      }
      if (inputs.isEmpty()) {
        throw new IllegalArgumentException("--input is required; " + USAGE);
      }
      Path output = new Path(args.required("output"));
      byte[] family = Bytes.toBytes(args.required("family"));
      long maxFileBytes = args.longValue("max-file-bytes", DEFAULT_MAX_FILE_BYTES);
      long timestamp = args.longValue("timestamp", System.currentTimeMillis());
      Summary summary =
          write(args.configuration(), inputs, output, family, maxFileBytes, timestamp);
      out.println(summary.toJson());
      out.flush();
      return 0;
    } catch (BadInputException | IllegalArgumentException e) {
      err.println("WriteHFiles: " + e.getMessage());
      return 2;
    } catch (Exception | LinkageError | OutOfMemoryError e) {
      e.printStackTrace(err);
      err.println("WriteHFiles failed: " + e);
      return 1;
    }
  }

  /** The JVM entry: {@link #run} on this command line, its code the exit code. */
  public static void main(String[] args) {
    System.exit(run(args, System.out, System.err));
  }

  /**
   * Writes the cells of {@code inputs} into HFiles under {@code outputDir/family}.
   *
   * @param timestamp the timestamp of every cell, ms since the epoch
   * @throws BadInputException when the inputs break the cell file contract
   */
  public static Summary write(Configuration conf, List<java.nio.file.Path> inputs, Path outputDir,
      byte[] family, long maxFileBytes, long timestamp) throws IOException {
    ColumnFamilyDescriptorBuilder.isLegalColumnFamilyName(family);
    FileSystem fs = outputDir.getFileSystem(conf);
    // HFile blocks carry their own checksums; no .crc files beside local HFiles.
    fs.setWriteChecksum(false);
    Path familyDir = new Path(outputDir, Bytes.toString(family));
    if (fs.exists(familyDir) && fs.listStatus(familyDir).length > 0) {
      throw new BadInputException(familyDir + " already holds files; write into an empty directory");
    }
    fs.mkdirs(familyDir);

    HFileSink sink = new HFileSink(conf, fs, familyDir, family, timestamp, maxFileBytes, null);
    byte[] previousRow = null;
    byte[] previousQualifier = null;
    try (sink) {
      for (java.nio.file.Path input : inputs) {
        try (CellFile cellFile = CellFile.open(input)) {
          while (cellFile.next()) {
            byte[] row = cellFile.row();
            byte[] qualifier = cellFile.qualifier();
            boolean newRow = previousRow == null;
            if (!newRow) {
              int byRow = Bytes.compareTo(previousRow, row);
              if (byRow > 0 || (byRow == 0 && Bytes.compareTo(previousQualifier, qualifier) >= 0)) {
                throw outOfOrder(cellFile, previousRow, previousQualifier, row, qualifier);
              }
              newRow = byRow != 0;
            }
            sink.append(row, qualifier, cellFile.value(), newRow);
            previousRow = row;
            previousQualifier = qualifier;
          }
        }
      }
      sink.finish();
    }

    long bytes = 0;
    List<String> files = new ArrayList<>();
    for (Path path : sink.written()) {
      FileStatus status = fs.getFileStatus(path);
      bytes += status.getLen();
      files.add(display(fs.makeQualified(path)));
    }
    return new Summary(sink.cells(), sink.rows(), files, bytes);
  }

  private static BadInputException outOfOrder(CellFile at, byte[] previousRow,
      byte[] previousQualifier, byte[] row, byte[] qualifier) {
    boolean repeat = Bytes.equals(previousRow, row) && Bytes.equals(previousQualifier, qualifier);
    String what = repeat
        ? "cell repeated: row " + CellFile.quote(row) + " qualifier " + CellFile.quote(qualifier)
        : "cells out of order: row " + CellFile.quote(row) + " qualifier "
            + CellFile.quote(qualifier) + " comes after row " + CellFile.quote(previousRow)
            + " qualifier " + CellFile.quote(previousQualifier);
    return new BadInputException(
        what + " (record " + at.recordIndex() + " of " + at.source() + ")");
  }

  private static String display(Path qualified) {
    return "file".equals(qualified.toUri().getScheme())
        ? qualified.toUri().getPath()
        : qualified.toString();
  }
}
