package org.wideviews.hfile;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.io.OutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Stream;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.hbase.Cell;
import org.apache.hadoop.hbase.CellUtil;
import org.apache.hadoop.hbase.HBaseConfiguration;
import org.apache.hadoop.hbase.KeyValueUtil;
import org.apache.hadoop.hbase.io.hfile.CacheConfig;
import org.apache.hadoop.hbase.io.hfile.HFile;
import org.apache.hadoop.hbase.io.hfile.HFileScanner;
import org.apache.hadoop.hbase.regionserver.HStoreFile;
import org.apache.hadoop.hbase.util.Bytes;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class WriteHFilesTest {
  private static final long TIMESTAMP = 1_700_000_000_123L;

  @TempDir Path tmp;

  /** One cell as the test expects it back. */
  record Cellish(byte[] row, byte[] qualifier, byte[] value) {
    static Cellish of(byte[] row, String qualifier, byte[] value) {
      return new Cellish(row, qualifier.getBytes(StandardCharsets.UTF_8), value);
    }

    static Cellish of(String row, String qualifier, String value) {
      return new Cellish(row.getBytes(StandardCharsets.UTF_8),
          qualifier.getBytes(StandardCharsets.UTF_8), value.getBytes(StandardCharsets.UTF_8));
    }
  }

  /** Run of the command line: exit code, stdout, stderr. */
  record Run(int code, String out, String err) {}

  /** Writes the cell file format independently of CellFile: three big-endian length-prefixed fields. */
  static void writeCellFile(Path path, List<Cellish> cells) throws IOException {
    try (OutputStream file = Files.newOutputStream(path);
        DataOutputStream out = new DataOutputStream(file)) {
      for (Cellish cell : cells) {
        for (byte[] field : new byte[][] {cell.row(), cell.qualifier(), cell.value()}) {
          out.writeInt(field.length);
          out.write(field);
        }
      }
    }
  }

  static Run run(String... args) {
    ByteArrayOutputStream out = new ByteArrayOutputStream();
    ByteArrayOutputStream err = new ByteArrayOutputStream();
    int code = WriteHFiles.run(args, new PrintStream(out, true), new PrintStream(err, true));
    return new Run(code, out.toString(StandardCharsets.UTF_8), err.toString(StandardCharsets.UTF_8));
  }

  /** Writing {@code input} into family f exits 2 (bad input) with {@code message} in stderr. */
  void assertRefused(Path input, String message) {
    Run result = run("--input", input.toString(), "--output", tmp.resolve("out").toString(),
        "--family", "f");
    assertEquals(2, result.code(), result.err());
    assertTrue(result.err().contains(message), result.err());
  }

  static List<Cell> readHFile(Path path) throws IOException {
    Configuration conf = HBaseConfiguration.create();
    FileSystem fs = FileSystem.getLocal(conf);
    List<Cell> cells = new ArrayList<>();
    HFile.Reader reader = HFile.createReader(fs, new org.apache.hadoop.fs.Path(path.toString()),
        CacheConfig.DISABLED, true, conf);
    try {
      assertEquals("ROW", Bytes.toString(reader.getHFileInfo().get(HStoreFile.BLOOM_FILTER_TYPE_KEY)));
      assertTrue(reader.getHFileInfo().containsKey(HStoreFile.BULKLOAD_TIME_KEY));
      HFileScanner scanner = reader.getScanner(conf, false, false);
      if (scanner.seekTo()) {
        do {
          cells.add(KeyValueUtil.copyToNewKeyValue(scanner.getCell()));
        } while (scanner.next());
      }
      scanner.close();
    } finally {
      reader.close(true);
    }
    return cells;
  }

  static List<String> jsonFiles(String json) {
    Matcher list = Pattern.compile("\"files\": \\[(.*?)\\]").matcher(json);
    assertTrue(list.find(), json);
    List<String> files = new ArrayList<>();
    Matcher item = Pattern.compile("\"([^\"]+)\"").matcher(list.group(1));
    while (item.find()) {
      files.add(item.group(1));
    }
    return files;
  }

  static long jsonNumber(String json, String key) {
    Matcher m = Pattern.compile("\"" + key + "\": (\\d+)").matcher(json);
    assertTrue(m.find(), json);
    return Long.parseLong(m.group(1));
  }

  static void assertCells(List<Cellish> expected, List<Cell> actual) {
    assertEquals(expected.size(), actual.size());
    for (int i = 0; i < expected.size(); i++) {
      Cell cell = actual.get(i);
      assertArrayEquals(expected.get(i).row(), CellUtil.cloneRow(cell), "row of cell " + i);
      assertArrayEquals(Bytes.toBytes("f"), CellUtil.cloneFamily(cell), "family of cell " + i);
      assertArrayEquals(expected.get(i).qualifier(), CellUtil.cloneQualifier(cell), "qualifier " + i);
      assertArrayEquals(expected.get(i).value(), CellUtil.cloneValue(cell), "value of cell " + i);
      assertEquals(TIMESTAMP, cell.getTimestamp());
    }
  }

  static List<Path> filesIn(Path dir) throws IOException {
    if (!Files.exists(dir)) {
      return List.of();
    }
    try (Stream<Path> files = Files.list(dir)) {
      return files.sorted().toList();
    }
  }

  @Test
  void writesBinaryCellsInUnsignedOrderWithExactBytes() throws IOException {
    // 0x7f < 0x80 < 0xff unsigned; a signed comparison would reject this order.
    List<Cellish> cells = List.of(
        Cellish.of(new byte[] {0x00, 0x01}, "a", new byte[] {}),
        Cellish.of(new byte[] {0x7f}, "a", new byte[] {1, 2, 3}),
        Cellish.of(new byte[] {0x7f}, "b", new byte[] {(byte) 0xff, 0x00}),
        Cellish.of(new byte[] {(byte) 0x80}, "", new byte[] {9}),
        Cellish.of(new byte[] {(byte) 0x80}, "q\u00e9", new byte[1000]),
        Cellish.of(new byte[] {(byte) 0xff, (byte) 0xff}, "z", "last".getBytes(StandardCharsets.UTF_8)));
    Path input = tmp.resolve("cells.bin");
    writeCellFile(input, cells);
    Path output = tmp.resolve("out");

    Run result = run("--input", input.toString(), "--output", output.toString(), "--family", "f",
        "--timestamp", Long.toString(TIMESTAMP));

    assertEquals(0, result.code(), result.err());
    assertEquals(6, jsonNumber(result.out(), "cells"));
    assertEquals(4, jsonNumber(result.out(), "rows"));
    List<String> files = jsonFiles(result.out());
    assertEquals(1, files.size());
    assertEquals(output.resolve("f"), Path.of(files.get(0)).getParent());
    assertEquals(Files.size(Path.of(files.get(0))), jsonNumber(result.out(), "bytes"));
    // No .crc beside the HFile: the directory is uploaded and bulk-loaded as is.
    assertEquals(List.of(Path.of(files.get(0))), filesIn(output.resolve("f")));
    assertCells(cells, readHFile(Path.of(files.get(0))));
  }

  @Test
  void concatenatesInputsAndRollsFilesOnlyAtRowBoundaries() throws IOException {
    List<Cellish> cells = new ArrayList<>();
    for (int row = 0; row < 40; row++) {
      for (int q = 0; q < 5; q++) {
        cells.add(Cellish.of(String.format("row%03d", row), "q" + q, "v" + row + "." + q));
      }
    }
    Path first = tmp.resolve("a.bin");
    Path second = tmp.resolve("b.bin");
    // Split inside row 17, between its qualifiers: the stream, not each file, holds whole rows.
    writeCellFile(first, cells.subList(0, 87));
    writeCellFile(second, cells.subList(87, cells.size()));
    Path output = tmp.resolve("out");

    Run result = run("--input", first.toString(), "--input", second.toString(), "--output",
        output.toString(), "--family", "f", "--timestamp", Long.toString(TIMESTAMP),
        "--max-file-bytes", "2000");

    assertEquals(0, result.code(), result.err());
    assertEquals(200, jsonNumber(result.out(), "cells"));
    assertEquals(40, jsonNumber(result.out(), "rows"));
    List<String> files = jsonFiles(result.out());
    assertTrue(files.size() > 3, result.out());
    List<Cell> all = new ArrayList<>();
    byte[] lastRowOfPrevious = null;
    for (String file : files) {
      List<Cell> inFile = readHFile(Path.of(file));
      assertEquals(0, CellUtil.cloneQualifier(inFile.get(0))[1] - '0', "file starts a row: " + file);
      if (lastRowOfPrevious != null) {
        assertFalse(Arrays.equals(lastRowOfPrevious, CellUtil.cloneRow(inFile.get(0))));
      }
      lastRowOfPrevious = CellUtil.cloneRow(inFile.get(inFile.size() - 1));
      all.addAll(inFile);
    }
    assertCells(cells, all);
  }

  @Test
  void unsortedRowsExitTwoNamingTheRowAndLeaveNoHFile() throws IOException {
    List<Cellish> cells = new ArrayList<>();
    for (int row = 0; row < 100; row++) {
      cells.add(Cellish.of(String.format("gene%03d", row), "x", "1"));
    }
    cells.add(Cellish.of("gene050", "y", "1"));
    Path input = tmp.resolve("unsorted.bin");
    writeCellFile(input, cells);
    Path output = tmp.resolve("out");

    Run result = run("--input", input.toString(), "--output", output.toString(), "--family", "f",
        "--max-file-bytes", "100");

    assertEquals(2, result.code(), result.err());
    assertEquals("", result.out());
    assertEquals(1, result.err().strip().lines().count(), result.err());
    assertTrue(result.err().contains("'gene050'"), result.err());
    assertTrue(result.err().contains("record 100 of " + input), result.err());
    assertEquals(List.of(), filesIn(output.resolve("f")));
  }

  @Test
  void unsortedAcrossTwoFilesNamesTheSecondFile() throws IOException {
    Path first = tmp.resolve("a.bin");
    Path second = tmp.resolve("b.bin");
    writeCellFile(first, List.of(Cellish.of("m", "q", "1")));
    writeCellFile(second, List.of(Cellish.of("b\u0001", "q", "1")));

    Run result = run("--input", first.toString(), "--input", second.toString(), "--output",
        tmp.resolve("out").toString(), "--family", "f");

    assertEquals(2, result.code(), result.err());
    assertTrue(result.err().contains("row 'b\\x01'"), result.err());
    assertTrue(result.err().contains("record 0 of " + second), result.err());
  }

  @Test
  void repeatedCellExitsTwo() throws IOException {
    Path input = tmp.resolve("dup.bin");
    writeCellFile(input, List.of(Cellish.of("r", "q", "1"), Cellish.of("r", "q", "2")));

    assertRefused(input, "cell repeated: row 'r' qualifier 'q'");
  }

  @Test
  void truncatedRecordExitsTwoNamingTheLastGoodRow() throws IOException {
    Path input = tmp.resolve("cut.bin");
    writeCellFile(input, List.of(Cellish.of("r1", "q", "value"), Cellish.of("r2", "q", "value")));
    byte[] bytes = Files.readAllBytes(input);
    Files.write(input, Arrays.copyOf(bytes, bytes.length - 2));

    assertRefused(input, "malformed record 1 of " + input + " (after row 'r1')");
  }

  @Test
  void emptyRowIsMalformed() throws IOException {
    Path input = tmp.resolve("empty-row.bin");
    writeCellFile(input, List.of(Cellish.of("", "q", "v")));

    assertRefused(input, "row length 0");
  }

  @Test
  void refusesAFamilyDirectoryThatAlreadyHoldsFiles() throws IOException {
    Path input = tmp.resolve("cells.bin");
    writeCellFile(input, List.of(Cellish.of("r", "q", "v")));
    Path output = tmp.resolve("out");
    assertEquals(0, run("--input", input.toString(), "--output", output.toString(), "--family",
        "f").code());

    Run again = run("--input", input.toString(), "--output", output.toString(), "--family", "f");

    assertEquals(2, again.code(), again.err());
    assertTrue(again.err().contains("already holds files"), again.err());
  }

  @Test
  void badArgumentsExitTwoWithUsage() {
    Run result = run("--output", "x", "--family", "f");

    assertEquals(2, result.code());
    assertTrue(result.err().contains("usage: WriteHFiles"), result.err());
  }
}
