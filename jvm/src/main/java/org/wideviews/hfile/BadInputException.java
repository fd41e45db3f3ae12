package org.wideviews.hfile;

import java.io.IOException;

/**
 * Input no retry can mend: a cell file breaking its contract (see {@link CellFile}: a truncated or
 * malformed record, cells out of (row, qualifier) order, a repeated (row, qualifier)), an output
 * directory already in use, a missing HFile directory or one holding a family its table lacks. The
 * command-line tools exit with code 2 and print the message, which names the file, record and row
 * (or directory and family) at fault.
 */
public class BadInputException extends IOException {
  private static final long serialVersionUID = 1L;

  public BadInputException(String message) {
    super(message);
  }
}
