# The local stack as containers (docker-compose.yml) and the production worker images, all on one
# Debian 12 base (its Python 3.11, OpenJDK 17 and Maven). Targets:
#   jvm-build  Maven resolves the HBase runtime from jvm/hbase-runtime/pom.xml (the same pom as
#              `make setup`; with hadoop-aws for s3a://) and builds jvm/ (HFile writing, bulk load)
#   hbase      JRE + those jars + deploy/compose/hbase-site.xml: the standalone HMaster or the Thrift server
#   app        Python 3.11 + the project + a JRE and the jars: runs moto, any service, or the CLI.
#              EXTRAS picks the pyproject extra installed: `local` (default: every service, moto, the
#              CLI; what docker-compose runs) or one service's (`ingest`, `compute`, `loader`,
#              `publisher`, `query`: the production images, without moto, pandas or pyspark):
#                docker build --target app --build-arg EXTRAS=compute -t wideviews:compute-TAG .
#              (`make images` builds the four). The entrypoint is `python -m`: the command names the
#              module, e.g. `services.compute.main`.
# BASE_IMAGE is any Debian 12 image (default debian:bookworm-slim); the classic builder is enough
# (no BuildKit syntax), so Debian's own docker.io builds it. EXTRA_CA_CERTS (PEM text, optional) is
# trusted by apt, Maven and pip inside the build, for networks whose HTTPS goes through a proxy with
# its own certificate authority (deploy/compose_demo.py passes the host's local CAs); one file per
# certificate, as Java's keystore hook takes only the first of a file.
ARG BASE_IMAGE=debian:bookworm-slim

FROM ${BASE_IMAGE} AS jvm-build
ARG EXTRA_CA_CERTS=""
RUN apt-get update -q \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends ca-certificates maven openjdk-17-jdk-headless \
 && rm -rf /var/lib/apt/lists/* \
 && if [ -n "$EXTRA_CA_CERTS" ]; then printf '%s\n' "$EXTRA_CA_CERTS" \
      | awk '/BEGIN CERTIFICATE/ {n++} n {print > ("/usr/local/share/ca-certificates/extra-" n ".crt")}' \
      && update-ca-certificates; fi
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

FROM ${BASE_IMAGE} AS hbase
RUN apt-get update -q \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends openjdk-17-jre-headless \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /data
COPY --from=jvm-build /opt/hbase/lib /opt/hbase/lib
COPY deploy/compose/hbase-site.xml deploy/compose/log4j.properties /opt/hbase/conf/
# The JDK 17 openings HBase needs (shared/jvm.py ADD_OPENS holds the same list).
ENV JDK_JAVA_OPTIONS="--add-opens=java.base/java.lang=ALL-UNNAMED --add-opens=java.base/java.lang.reflect=ALL-UNNAMED --add-opens=java.base/java.nio=ALL-UNNAMED --add-opens=java.base/sun.nio.ch=ALL-UNNAMED --add-opens=java.base/java.util=ALL-UNNAMED --add-opens=java.base/java.util.concurrent=ALL-UNNAMED --add-opens=java.base/java.io=ALL-UNNAMED --add-opens=java.base/java.net=ALL-UNNAMED --add-opens=java.base/jdk.internal.misc=ALL-UNNAMED -Dorg.apache.hbase.thirdparty.io.netty.tryReflectionSetAccessible=true -Djava.net.preferIPv4Stack=true"
VOLUME /data
EXPOSE 2181 16000 16020 9090
ENTRYPOINT ["java", "-cp", "/opt/hbase/conf:/opt/hbase/lib/*"]
CMD ["-Xmx1g", "org.apache.hadoop.hbase.master.HMaster", "start"]

FROM ${BASE_IMAGE} AS app
ARG EXTRAS=local
ARG EXTRA_CA_CERTS=""
RUN apt-get update -q \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends ca-certificates python3 python3-venv openjdk-17-jre-headless \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/venv \
 && if [ -n "$EXTRA_CA_CERTS" ]; then printf '%s\n' "$EXTRA_CA_CERTS" \
      | awk '/BEGIN CERTIFICATE/ {n++} n {print > ("/usr/local/share/ca-certificates/extra-" n ".crt")}' \
      && update-ca-certificates; fi
# pip trusts the system's authorities (with EXTRA_CA_CERTS), not only its own bundle.
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 WIDEVIEWS_HOME=/var/lib/wideviews PIP_CERT=/etc/ssl/certs/ca-certificates.crt
WORKDIR /app
# Dependencies first (cached while only the code changes), then the code, installed editable so
# Settings.project_root is /app and finds jvm/ below it.
COPY pyproject.toml ./
RUN mkdir -p shared services cli && touch shared/__init__.py services/__init__.py cli/__init__.py \
 && pip install --no-cache-dir --disable-pip-version-check -e ".[${EXTRAS}]" && rm -rf shared services cli
COPY shared/ shared/
COPY services/ services/
COPY cli/ cli/
RUN pip install --no-cache-dir --disable-pip-version-check --no-deps -e .
COPY --from=jvm-build /opt/hbase/lib /opt/hbase/lib
COPY --from=jvm-build /opt/hbase/classpath.txt jvm/hbase-runtime/target/classpath.txt
COPY --from=jvm-build /opt/wideviews-jvm/lib /opt/wideviews-jvm/lib
COPY --from=jvm-build /opt/wideviews-jvm/wideviews-jvm.jar /opt/wideviews-jvm/runtime-classpath.txt jvm/target/
RUN mkdir -p /var/lib/wideviews
VOLUME /var/lib/wideviews
ENTRYPOINT ["python", "-m"]
CMD ["cli.main", "--help"]
