package org.wideviews.hfile;

import org.apache.hadoop.hbase.io.ImmutableBytesWritable;
import org.apache.spark.api.python.Converter;

/**
 * PySpark key converter for {@code saveAsNewAPIHadoopFile} with HFileOutputFormat2, the partner of
 * {@link KeyValueConverter}: turns the row key ({@code bytes} as is, {@code str} as UTF-8) into
 * the {@link ImmutableBytesWritable} HFileOutputFormat2 expects as key.
 */
public class ImmutableBytesWritableConverter implements Converter<Object, Object> {
  private static final long serialVersionUID = 1L;

  @Override
  public Object convert(Object obj) {
    return new ImmutableBytesWritable(KeyValueConverter.bytes(obj, "row"));
  }
}
