package org.wideviews.hfile;

import java.util.List;
import java.util.stream.Collectors;

/** The one-line JSON summaries the tools print on stdout: only strings, string lists and numbers. */
final class JsonLine {
  private JsonLine() {}

  static String string(String text) {
    StringBuilder out = new StringBuilder(text.length() + 2).append('"');
    for (int i = 0; i < text.length(); i++) {
      char c = text.charAt(i);
      switch (c) {
        case '"' -> out.append("\\\"");
        case '\\' -> out.append("\\\\");
        case '\n' -> out.append("\\n");
        case '\r' -> out.append("\\r");
        case '\t' -> out.append("\\t");
        default -> {
          if (c < 0x20) {
            out.append(String.format("\\u%04x", (int) c));
          } else {
            out.append(c);
          }
        }
      }
    }
    return out.append('"').toString();
  }

  static String strings(List<String> texts) {
    return texts.stream().map(JsonLine::string).collect(Collectors.joining(", ", "[", "]"));
  }
}
