package org.wideviews.hfile;

import java.io.BufferedReader;
import java.io.ByteArrayOutputStream;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;

/**
 * One long-lived JVM serving many WriteHFiles, BulkLoad and CreateTable runs, so a worker pays the
 * JVM start and HBase class loading once instead of per chunk and view.
 *
 * <p>Protocol on stdin/stdout, one request and one response per line:
 *
 * <pre>
 *   request:  ID \t TOOL \t ARG1 \t ARG2 ...   (TOOL is WriteHFiles, BulkLoad or CreateTable; args as on their command line)
 *   response: {"id": "ID", "exit": N, "stdout": "...", "stderr": "..."}
 * </pre>
 *
 * Requests run concurrently, on up to {@code argv[0]} threads (default 4), and their responses come
 * back in the order they finish, each naming its request's ID. The tools share nothing but Hadoop's
 * thread-safe FileSystem cache: each run builds its own configuration and connection. The exit codes
 * are the tools' own (0 ok, 2 bad input, 1 anything else). EOF on stdin ends the server once the
 * running requests have answered.
 */
public final class ToolServer {
  private ToolServer() {}

  public static void main(String[] argv) throws Exception {
    int threads = argv.length > 0 ? Integer.parseInt(argv[0]) : 4;
    BufferedReader in =
        new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
    PrintStream reply = new PrintStream(System.out, true, StandardCharsets.UTF_8);
    // Anything the libraries print goes to stderr, never into the protocol stream.
    System.setOut(System.err);
    ExecutorService pool = Executors.newFixedThreadPool(threads);
    String line;
    while ((line = in.readLine()) != null) {
      if (line.isBlank()) {
        continue;
      }
      String[] request = line.split("\t", -1);
      pool.execute(() -> {
        String response = serve(request);
        synchronized (reply) {
          reply.println(response);
        }
      });
    }
    pool.shutdown();
    pool.awaitTermination(1, TimeUnit.HOURS);
  }

  /** Runs one request ({@code ID, TOOL, ARG...}); never throws. */
  static String serve(String[] request) {
    ByteArrayOutputStream out = new ByteArrayOutputStream();
    ByteArrayOutputStream err = new ByteArrayOutputStream();
    int exit;
    try (PrintStream o = new PrintStream(out, true, StandardCharsets.UTF_8);
        PrintStream e = new PrintStream(err, true, StandardCharsets.UTF_8)) {
      String tool = request.length > 1 ? request[1] : "";
      String[] args = Arrays.copyOfRange(request, Math.min(2, request.length), request.length);
      exit = switch (tool) {
        case "WriteHFiles" -> WriteHFiles.run(args, o, e);
        case "BulkLoad" -> BulkLoad.run(args, o, e);
        case "CreateTable" -> CreateTable.run(args, o, e);
        default -> {
          e.println("ToolServer: unknown tool " + tool);
          yield 2;
        }
      };
    } catch (Throwable t) {
      exit = 1;
      err.writeBytes(String.valueOf(t).getBytes(StandardCharsets.UTF_8));
    }
    return "{\"id\": " + JsonLine.string(request[0]) + ", \"exit\": " + exit + ", \"stdout\": "
        + JsonLine.string(out.toString(StandardCharsets.UTF_8).strip()) + ", \"stderr\": "
        + JsonLine.string(tail(err.toString(StandardCharsets.UTF_8), 4000)) + "}";
  }

  private static String tail(String text, int max) {
    return text.length() <= max ? text : text.substring(text.length() - max);
  }
}
