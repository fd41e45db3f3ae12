package org.wideviews.hfile;

import java.io.BufferedReader;
import java.io.ByteArrayOutputStream;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.Arrays;

/**
 * One long-lived JVM serving many WriteHFiles and BulkLoad runs, so a worker pays the JVM start and
 * HBase class loading once instead of per chunk and view.
 *
 * <p>Protocol on stdin/stdout, one request and one response per line:
 *
 * <pre>
 *   request:  TOOL \t ARG1 \t ARG2 ...        (TOOL is WriteHFiles, BulkLoad or CreateTable; args as on their command line)
 *   response: {"exit": N, "stdout": "...", "stderr": "..."}
 * </pre>
 *
 * The exit codes are the tools' own (0 ok, 2 bad input, 1 anything else). EOF on stdin ends the server.
 */
public final class ToolServer {
  private ToolServer() {}

  public static void main(String[] argv) throws Exception {
    BufferedReader in =
        new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
    PrintStream reply = new PrintStream(System.out, true, StandardCharsets.UTF_8);
    // Anything the libraries print goes to stderr, never into the protocol stream.
    System.setOut(System.err);
    String line;
    while ((line = in.readLine()) != null) {
      if (line.isBlank()) {
        continue;
      }
      reply.println(serve(line.split("\t", -1)));
    }
  }

  /** Runs one request; never throws. */
  static String serve(String[] request) {
    ByteArrayOutputStream out = new ByteArrayOutputStream();
    ByteArrayOutputStream err = new ByteArrayOutputStream();
    int exit;
    try (PrintStream o = new PrintStream(out, true, StandardCharsets.UTF_8);
        PrintStream e = new PrintStream(err, true, StandardCharsets.UTF_8)) {
      String[] args = Arrays.copyOfRange(request, 1, request.length);
      exit = switch (request[0]) {
        case "WriteHFiles" -> WriteHFiles.run(args, o, e);
        case "BulkLoad" -> BulkLoad.run(args, o, e);
        case "CreateTable" -> CreateTable.run(args, o, e);
        default -> {
          e.println("ToolServer: unknown tool " + request[0]);
          yield 2;
        }
      };
    } catch (Throwable t) {
      exit = 1;
      err.writeBytes(String.valueOf(t).getBytes(StandardCharsets.UTF_8));
    }
    return "{\"exit\": " + exit + ", \"stdout\": "
        + JsonLine.string(out.toString(StandardCharsets.UTF_8).strip()) + ", \"stderr\": "
        + JsonLine.string(tail(err.toString(StandardCharsets.UTF_8), 4000)) + "}";
  }

  private static String tail(String text, int max) {
    return text.length() <= max ? text : text.substring(text.length() - max);
  }
}
