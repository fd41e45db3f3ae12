# syntax=docker/dockerfile:1
# The local stack as containers (see docker-compose.yml). Targets:
#   jvm-build  Maven resolves the HBase runtime from jvm/hbase-runtime/pom.xml (the same pom as
#              `make setup`) and builds jvm/ (HFile writing, bulk load, CreateNamespace)
#   hbase      JRE + those jars: runs the standalone HMaster or the Thrift server
#   app        Python 3.11 + the project + a JRE and the jars: runs moto, any service, or the CLI.
#              EXTRAS picks the pyproject extra installed: `local` (default: every service, moto, the
#              CLI; what docker-compose runs) or one service's (`ingest`, `compute`, `loader`,
#              `publisher`, `query`: the production images, without moto, pandas or pyspark):
#                docker build --target app --build-arg EXTRAS=compute -t wideviews:compute-TAG .
#              The entrypoint is `python -m`: the command names the module (services.compute.main).

FROM maven:3.9-eclipse-temurin-17 AS jvm-build
WORKDIR /src
COPY jvm/ jvm/
# Jars copied to fixed directories, and the classpath files written with those paths: the same
# classpath files the stack reads on a developer's machine, pointing into the image.
RUN mvn -q -B -f jvm/hbase-runtime/pom.xml dependency:copy-dependencies -DoutputDirectory=/opt/hbase/lib \
 && mvn -q -B -f jvm/hbase-runtime/pom.xml dependency:build-classpath \
        -Dmdep.prefix=/opt/hbase/lib -Dmdep.outputFile=/opt/hbase/classpath.txt
RUN mvn -q -B -f jvm/pom.xml package -DskipTests -Dmdep.prefix=/opt/wideviews-jvm/lib \
 && mvn -q -B -f jvm/pom.xml dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory=/opt/wideviews-jvm/lib \
 && cp jvm/target/wideviews-jvm.jar jvm/target/runtime-classpath.txt /opt/wideviews-jvm/

FROM eclipse-temurin:17-jre AS hbase
COPY --from=jvm-build /opt/hbase/lib /opt/hbase/lib
# Standalone HBase: HMaster with its ZooKeeper and RegionServer in one JVM, data on the volume at
# /data. Other containers reach it as `hbase` (ZooKeeper 2181, master 16000, RegionServer 16020).
RUN mkdir -p /opt/hbase/conf /data && cat > /opt/hbase/conf/hbase-site.xml <<'XML'
<?xml version="1.0"?>
<configuration>
  <property><name>hbase.cluster.distributed</name><value>false</value></property>
  <property><name>hbase.rootdir</name><value>file:///data/hbase</value></property>
  <property><name>hbase.tmp.dir</name><value>/data/tmp</value></property>
  <property><name>hbase.zookeeper.property.dataDir</name><value>/data/zookeeper</value></property>
  <property><name>hbase.zookeeper.quorum</name><value>hbase</value></property>
  <property><name>hbase.zookeeper.property.clientPort</name><value>2181</value></property>
  <property><name>hbase.master.port</name><value>16000</value></property>
  <property><name>hbase.regionserver.port</name><value>16020</value></property>
  <property><name>hbase.master.info.port</name><value>-1</value></property>
  <property><name>hbase.regionserver.info.port</name><value>-1</value></property>
  <property><name>hbase.unsafe.stream.capability.enforce</name><value>false</value></property>
  <property><name>hbase.master.wait.on.regionservers.mintostart</name><value>1</value></property>
  <property><name>hbase.master.wait.on.regionservers.maxtostart</name><value>1</value></property>
  <!-- s3a:// against the moto container: the RegionServer bulk-loads HFiles straight from the staging
       bucket (shared/jvm.py s3a_properties says why each option is also given per bucket). -->
  <property><name>fs.s3a.impl</name><value>org.apache.hadoop.fs.s3a.S3AFileSystem</value></property>
  <property><name>fs.s3a.endpoint</name><value>http://moto:5000</value></property>
  <property><name>fs.s3a.path.style.access</name><value>true</value></property>
  <property><name>fs.s3a.connection.ssl.enabled</name><value>false</value></property>
  <property><name>fs.s3a.aws.credentials.provider</name><value>org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider</value></property>
  <property><name>fs.s3a.access.key</name><value>testing</value></property>
  <property><name>fs.s3a.secret.key</name><value>testing</value></property>
  <property><name>fs.s3a.bucket.wideviews-staging.endpoint</name><value>http://moto:5000</value></property>
  <property><name>fs.s3a.bucket.wideviews-staging.path.style.access</name><value>true</value></property>
  <property><name>fs.s3a.bucket.wideviews-staging.connection.ssl.enabled</name><value>false</value></property>
  <property><name>fs.s3a.bucket.wideviews-staging.aws.credentials.provider</name><value>org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider</value></property>
  <property><name>fs.s3a.bucket.wideviews-staging.access.key</name><value>testing</value></property>
  <property><name>fs.s3a.bucket.wideviews-staging.secret.key</name><value>testing</value></property>
</configuration>
XML
RUN cat > /opt/hbase/conf/log4j.properties <<'PROPS'
log4j.rootLogger=INFO,console
log4j.appender.console=org.apache.log4j.ConsoleAppender
log4j.appender.console.target=System.out
log4j.appender.console.layout=org.apache.log4j.PatternLayout
log4j.appender.console.layout.ConversionPattern=%d{ISO8601} %-5p [%t] %c{2}: %m%n
log4j.logger.org.apache.zookeeper=WARN
PROPS
# The JDK 17 openings HBase needs (shared/jvm.py ADD_OPENS holds the same list).
ENV JDK_JAVA_OPTIONS="--add-opens=java.base/java.lang=ALL-UNNAMED --add-opens=java.base/java.lang.reflect=ALL-UNNAMED --add-opens=java.base/java.nio=ALL-UNNAMED --add-opens=java.base/sun.nio.ch=ALL-UNNAMED --add-opens=java.base/java.util=ALL-UNNAMED --add-opens=java.base/java.util.concurrent=ALL-UNNAMED --add-opens=java.base/java.io=ALL-UNNAMED --add-opens=java.base/java.net=ALL-UNNAMED --add-opens=java.base/jdk.internal.misc=ALL-UNNAMED -Dorg.apache.hbase.thirdparty.io.netty.tryReflectionSetAccessible=true -Djava.net.preferIPv4Stack=true"
VOLUME /data
EXPOSE 2181 16000 16020 9090
ENTRYPOINT ["java", "-cp", "/opt/hbase/conf:/opt/hbase/lib/*"]
CMD ["-Xmx1g", "org.apache.hadoop.hbase.master.HMaster", "start"]

FROM python:3.11-slim-bookworm AS app
ARG EXTRAS=local
RUN apt-get update -q \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends openjdk-17-jre-headless \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
# Dependencies first (cached while only the code changes), then the code, installed editable so
# Settings.project_root is /app and finds jvm/ below it.
COPY pyproject.toml ./
RUN mkdir -p shared services cli && touch shared/__init__.py services/__init__.py cli/__init__.py \
 && pip install --no-cache-dir -e ".[${EXTRAS}]" && rm -rf shared services cli
COPY shared/ shared/
COPY services/ services/
COPY cli/ cli/
RUN pip install --no-cache-dir --no-deps -e .
COPY --from=jvm-build /opt/hbase/lib /opt/hbase/lib
COPY --from=jvm-build /opt/hbase/classpath.txt jvm/hbase-runtime/target/classpath.txt
COPY --from=jvm-build /opt/wideviews-jvm/lib /opt/wideviews-jvm/lib
COPY --from=jvm-build /opt/wideviews-jvm/wideviews-jvm.jar /opt/wideviews-jvm/runtime-classpath.txt jvm/target/
ENV PYTHONUNBUFFERED=1 WIDEVIEWS_HOME=/var/lib/wideviews
RUN mkdir -p /var/lib/wideviews
VOLUME /var/lib/wideviews
ENTRYPOINT ["python", "-m"]
CMD ["cli.main", "--help"]
