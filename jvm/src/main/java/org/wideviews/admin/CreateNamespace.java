package org.wideviews.admin;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.hbase.HBaseConfiguration;
import org.apache.hadoop.hbase.NamespaceDescriptor;
import org.apache.hadoop.hbase.NamespaceExistException;
import org.apache.hadoop.hbase.client.Admin;
import org.apache.hadoop.hbase.client.Connection;
import org.apache.hadoop.hbase.client.ConnectionFactory;

/**
 * Creates HBase namespaces if they do not exist yet: {@code CreateNamespace <zk host> <zk port> <namespace>...}.
 *
 * <p>The Thrift1 API that happybase speaks has no namespace calls, so `wideviews stack up` runs this once per
 * HBase root directory. It is a single file on purpose: the stack runs it with the JDK's source launcher
 * ({@code java -cp <hbase classpath> CreateNamespace.java ...}) when the jvm/ jar is not built, and from the jar
 * (class {@code org.wideviews.admin.CreateNamespace}) when it is. Prints one line per namespace, "created NAME" or
 * "exists NAME"; exits non-zero on any other error.
 */
public final class CreateNamespace {
  private CreateNamespace() {}

  public static void main(String[] args) throws Exception {
    if (args.length < 3) {
      System.err.println("usage: CreateNamespace <zookeeper host> <zookeeper port> <namespace>...");
      System.exit(2);
    }
    Configuration conf = HBaseConfiguration.create();
    conf.set("hbase.zookeeper.quorum", args[0]);
    conf.set("hbase.zookeeper.property.clientPort", args[1]);
    try (Connection connection = ConnectionFactory.createConnection(conf);
        Admin admin = connection.getAdmin()) {
      for (int i = 2; i < args.length; i++) {
        String name = args[i];
        try {
          admin.createNamespace(NamespaceDescriptor.create(name).build());
          System.out.println("created " + name);
        } catch (NamespaceExistException e) {
          System.out.println("exists " + name);
        }
      }
    }
  }
}
