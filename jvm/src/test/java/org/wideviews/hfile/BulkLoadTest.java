package org.wideviews.hfile;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.PrintStream;
import java.net.ConnectException;
import java.nio.charset.StandardCharsets;
import org.apache.hadoop.hbase.NotServingRegionException;
import org.apache.hadoop.hbase.RegionTooBusyException;
import org.apache.hadoop.hbase.TableNotFoundException;
import org.apache.hadoop.hbase.client.RetriesExhaustedException;
import org.apache.hadoop.hbase.io.hfile.CorruptHFileException;
import org.apache.hadoop.hbase.ipc.RemoteWithExtrasException;
import org.apache.hadoop.hbase.util.Bytes;
import org.apache.hadoop.ipc.RemoteException;
import org.junit.jupiter.api.Test;

/** How BulkLoad tells a state HBase leaves by itself from bad input; no cluster needed. */
class BulkLoadTest {
  private static void assertTransientOnly(IOException e) {
    assertTrue(BulkLoad.isTransient(e));
    assertFalse(BulkLoad.isPermanent(e));
  }

  private static void assertPermanentOnly(IOException e) {
    assertTrue(BulkLoad.isPermanent(e));
    assertFalse(BulkLoad.isTransient(e));
  }

  @Test
  void aTableNotYetAvailableIsTransientThoughHBaseCallsItNotFound() {
    // What BulkLoadHFilesTool throws for a table whose regions are not all online, or disabled.
    assertTransientOnly(new TableNotFoundException(
        "Table 'wideviews:d_v_features' is not currently available."));
  }

  @Test
  void aMissingTableIsPermanent() {
    assertPermanentOnly(new TableNotFoundException("table wideviews:t does not exist"));
  }

  @Test
  void busyRegionsAndRestartingServersAreTransientThroughWrappersAndRpc() {
    assertTrue(BulkLoad.isTransient(new RetriesExhaustedException("gave up",
        new RegionTooBusyException("over memstore limit"))));
    assertTrue(BulkLoad.isTransient(new IOException("BulkLoad encountered an unrecoverable problem",
        new RemoteWithExtrasException("org.apache.hadoop.hbase.NotServingRegionException",
            "region is closing", false))));
    assertTrue(BulkLoad.isTransient(new RemoteException(
        "org.apache.hadoop.hbase.ipc.ServerNotRunningYetException", "Server is not running yet")));
    assertTrue(BulkLoad.isTransient(new NotServingRegionException("splitting")));
    assertTrue(BulkLoad.isTransient(new IOException("call failed", new ConnectException("refused"))));
    // The tool's own give-up when regions keep splitting under it.
    assertTrue(BulkLoad.isTransient(
        new IOException("Retry attempted 11 times without completing, bailing out")));
  }

  @Test
  void aCorruptHFileIsPermanentEvenInsideATransientWrapper() {
    assertPermanentOnly(new RetriesExhaustedException("gave up", new RemoteWithExtrasException(
        "org.apache.hadoop.hbase.io.hfile.CorruptHFileException", "Problem reading HFile", true)));
    assertTrue(BulkLoad.isPermanent(new CorruptHFileException("bad trailer")));
  }

  @Test
  void anUnknownFailureIsNeitherAndGoesBackToTheQueue() {
    IOException unknown = new IOException("something nobody foresaw");
    assertFalse(BulkLoad.isTransient(unknown));
    assertFalse(BulkLoad.isPermanent(unknown));
  }

  @Test
  void theCommandLineNeedsADirectory() {
    ByteArrayOutputStream err = new ByteArrayOutputStream();
    int exit = BulkLoad.run(new String[] {"--zk-quorum", "h", "--zk-port", "1", "--table", "t"},
        new PrintStream(new ByteArrayOutputStream()), new PrintStream(err, true,
            StandardCharsets.UTF_8));
    assertEquals(2, exit);
    assertTrue(err.toString(StandardCharsets.UTF_8).contains("--dir is required"));
  }

  @Test
  void splitKeysGivenInHexAreDecodedAndMustBeSorted() throws IOException {
    assertArrayEquals(new byte[][] {{0x00, (byte) 0xff}, Bytes.toBytes("G1"), Bytes.toBytes("z")},
        CreateTable.parseHexSplits("00ff,4731,7a"));
    assertThrows(BadInputException.class, () -> CreateTable.parseHexSplits("7a,4731"));
    assertThrows(BadInputException.class, () -> CreateTable.parseHexSplits("4731,,7a"));
    assertThrows(BadInputException.class, () -> CreateTable.parseHexSplits("47g1"));
  }
}
