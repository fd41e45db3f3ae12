package org.wideviews.hfile;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.hbase.HBaseConfiguration;
import org.apache.hadoop.hbase.HConstants;

/**
 * The {@code --name value} command line of the wideviews tools. Every option takes one value; an
 * option listed as repeatable may be given several times, any other at most once. A malformed
 * command line raises {@link IllegalArgumentException} carrying the usage text, which the tools
 * report with exit code 2.
 */
final class Args {
  private final Map<String, List<String>> values;
  private final String usage;

  private Args(Map<String, List<String>> values, String usage) {
    this.values = values;
    this.usage = usage;
  }

  static Args parse(String[] argv, Set<String> single, Set<String> repeatable, String usage) {
    Map<String, List<String>> values = new LinkedHashMap<>();
    for (int i = 0; i < argv.length; i++) {
      String arg = argv[i];
      String name = arg.startsWith("--") ? arg.substring(2) : null;
      if (name == null || !(single.contains(name) || repeatable.contains(name))) {
        throw new IllegalArgumentException("unknown argument '" + arg + "'; " + usage);
      }
      if (i + 1 >= argv.length) {
        throw new IllegalArgumentException(arg + " needs a value; " + usage);
      }
      List<String> list = values.computeIfAbsent(name, k -> new ArrayList<>());
      if (!list.isEmpty() && !repeatable.contains(name)) {
        throw new IllegalArgumentException(arg + " given twice; " + usage);
      }
      list.add(argv[++i]);
    }
    return new Args(values, usage);
  }

  String required(String name) {
    List<String> list = values.get(name);
    if (list == null) {
      throw new IllegalArgumentException("--" + name + " is required; " + usage);
    }
    return list.get(0);
  }

  String optional(String name, String fallback) {
    List<String> list = values.get(name);
    return list == null ? fallback : list.get(0);
  }

  List<String> all(String name) {
    return values.getOrDefault(name, List.of());
  }

  long longValue(String name, long fallback) {
    String text = optional(name, null);
    if (text == null) {
      return fallback;
    }
    try {
      return Long.parseLong(text);
    } catch (NumberFormatException e) {
      throw new IllegalArgumentException("--" + name + " must be an integer, not '" + text + "'");
    }
  }

  /** HBase's configuration (hbase-default.xml, then any hbase-site.xml on the classpath) plus {@code --conf K=V}. */
  Configuration configuration() {
    Configuration conf = HBaseConfiguration.create();
    for (String pair : all("conf")) {
      int eq = pair.indexOf('=');
      if (eq <= 0) {
        throw new IllegalArgumentException("--conf takes KEY=VALUE, not '" + pair + "'");
      }
      conf.set(pair.substring(0, eq), pair.substring(eq + 1));
    }
    return conf;
  }

  /** {@link #configuration} with HBase's ZooKeeper from {@code --zk-quorum} and {@code --zk-port}. */
  Configuration clusterConfiguration() {
    Configuration conf = configuration();
    conf.set(HConstants.ZOOKEEPER_QUORUM, required("zk-quorum"));
    conf.set(HConstants.ZOOKEEPER_CLIENT_PORT, required("zk-port"));
    return conf;
  }
}
