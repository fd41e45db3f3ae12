# wideviews developer entry points. `make setup` is idempotent and quick when nothing changed:
# every step is a file target with a stamp, redone only when its inputs are newer.
#
#   make setup   .venv (python3.11) with the project and its test extras; the jvm/ jar (Maven);
#                the HBase runtime classpath (Maven); a docker-compose client for validating
#                docker-compose.yml (Debian's package, installed only when none is present); the
#                explorer page (npm ci + esbuild into explorer/dist; Debian's nodejs/npm when there is
#                no npm); Debian's chromium and chromedriver for the browser tests.
#   make test    the whole test suite; integration tests start their own stack
#   make demo    setup, `wideviews stack up`, `wideviews demo` (sample upload -> dot plot), status
#   make down    `wideviews stack down`
#   make package-lambda   build/lambda/wideviews-query.zip, the query Lambda (Lambda's platform wheels)
#   make package-emr      build/emr/: what an EMR step needs
#   make images TAG=…     the four worker images and the local one (needs Docker)

PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
WIDEVIEWS := $(VENV)/bin/wideviews
MVN := mvn -q -B
PYTHON_STAMP := $(VENV)/.wideviews-installed
HBASE_CLASSPATH := jvm/hbase-runtime/target/classpath.txt
SPARK_S3_CLASSPATH := jvm/spark-runtime/target/classpath.txt
JVM_JAR := jvm/target/wideviews-jvm.jar
JVM_SOURCES := $(shell find jvm/src -type f 2>/dev/null)

EXPLORER_BUNDLE := explorer/dist/explorer.js
EXPLORER_SOURCES := $(wildcard explorer/src/*) explorer/build.mjs explorer/package.json explorer/package-lock.json

.PHONY: setup python jvm hbase-classpath spark-s3-classpath compose-client explorer node chromium test test-compose docker-engine demo down package-emr package-lambda images

setup: python jvm hbase-classpath spark-s3-classpath compose-client explorer chromium

python: $(PYTHON_STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

# Reinstalled only when pyproject.toml changes (the install is editable: code changes need nothing).
$(PYTHON_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[all,test]'
	touch $@

hbase-classpath: $(HBASE_CLASSPATH)

# The jars of HBase 2.6.1 (master, RegionServer, Thrift, bulk load) from Maven; the stack starts
# Java with this classpath. Resolved again only when the pom changes.
$(HBASE_CLASSPATH): jvm/hbase-runtime/pom.xml
	$(MVN) -f jvm/hbase-runtime/pom.xml dependency:build-classpath -Dmdep.outputFile=target/classpath.txt
	touch $@

spark-s3-classpath: $(SPARK_S3_CLASSPATH)

# hadoop-aws 3.3.4 + its AWS SDK bundle: Spark's s3a:// filesystem (pyspark ships Hadoop 3.3.4 without it).
$(SPARK_S3_CLASSPATH): jvm/spark-runtime/pom.xml
	$(MVN) -f jvm/spark-runtime/pom.xml dependency:build-classpath -Dmdep.outputFile=target/classpath.txt
	touch $@

ifneq ($(wildcard jvm/pom.xml),)
jvm: $(JVM_JAR)

$(JVM_JAR): jvm/pom.xml $(JVM_SOURCES)
	$(MVN) -f jvm/pom.xml package -DskipTests
	touch $@
else
jvm:
	@echo "jvm/pom.xml does not exist yet: skipping the jvm/ build"
endif

# `docker-compose config -q` validates docker-compose.yml without a Docker engine. Debian's
# docker-compose (1.29) is installed when no client is there and apt-get can run; without one the
# validation test skips itself.
compose-client:
	@if docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing Debian's docker-compose (to validate docker-compose.yml)"; \
	  mkdir -p build; \
	  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends docker-compose; } \
	    >build/apt-docker-compose.log 2>&1 \
	    || echo "warning: docker-compose could not be installed (build/apt-docker-compose.log); its test will skip"; \
	else echo "no docker compose client and no root apt-get: the docker-compose.yml test will skip"; fi

# The explorer page (explorer/): its npm libraries at the locked versions, bundled by esbuild into
# explorer/dist, which the query server serves at /. Rebuilt only when its sources change.
explorer: $(EXPLORER_BUNDLE)

$(EXPLORER_BUNDLE): $(EXPLORER_SOURCES) | node
	cd explorer && npm ci --no-audit --no-fund --loglevel=error && node build.mjs
	touch $@

# npm for the explorer's build: Debian's nodejs and npm when there is none (root and apt-get).
node:
	@if command -v npm >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing Debian's nodejs and npm (to build explorer/)"; mkdir -p build; \
	  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nodejs npm; } \
	    >build/apt-node.log 2>&1 || { echo "nodejs and npm could not be installed (build/apt-node.log)" >&2; exit 1; }; \
	else echo "npm is needed to build explorer/: install Node.js 18 or later" >&2; exit 1; fi

# The browser tests (tests/browser) drive Debian's chromium through its chromedriver; nothing is
# downloaded at test time.
chromium:
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing Debian's chromium and chromium-driver (for tests/browser)"; mkdir -p build; \
	  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium chromium-driver fonts-dejavu-core; } \
	    >build/apt-chromium.log 2>&1 || { echo "chromium could not be installed (build/apt-chromium.log)" >&2; exit 1; }; \
	else echo "warning: no chromium/chromedriver and no root apt-get: tests/browser will fail" >&2; fi

test: setup
	@status=0; $(PY) -m pytest -q -m "not compose" tests || status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests (exit 5): failing" >&2; fi; \
	exit $$status

# The images built and the demo run through docker-compose (tests/deploy/test_compose.py, marker
# `compose`): a first image build takes about 15 minutes here, so not part of `make test`. Needs a Docker engine: the
# test starts one from Debian's docker.io (installed here when missing) where it can, and skips only
# when none can start.
test-compose: setup docker-engine
	$(PY) -m pytest -q -m compose tests/deploy/test_compose.py

docker-engine:
	@if command -v dockerd >/dev/null 2>&1 || docker info >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing Debian's docker.io and debootstrap (for the compose demo)"; mkdir -p build; \
	  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends docker.io debootstrap; } \
	    >build/apt-docker.log 2>&1 || echo "warning: docker.io could not be installed (build/apt-docker.log)"; \
	else echo "no Docker engine and no root apt-get: the compose demo will skip"; fi

demo: setup
	$(WIDEVIEWS) stack up
	$(WIDEVIEWS) demo
	$(WIDEVIEWS) stack status

down:
	@if [ -x $(WIDEVIEWS) ]; then $(WIDEVIEWS) stack down; else echo "no $(WIDEVIEWS): nothing to stop"; fi

# What an EMR step needs under WIDEVIEWS_EMR_CODE_URI: the package zip (--py-files), the job script
# and the jvm/ jar. Copy build/emr/* there (e.g. `aws s3 cp --recursive build/emr s3://…/code/`).
package-emr: jvm
	rm -rf build/emr && mkdir -p build/emr
	$(PY) -c "import pathlib, zipfile; z = zipfile.ZipFile('build/emr/wideviews.zip', 'w', zipfile.ZIP_DEFLATED); [z.write(p) for d in ('shared', 'services') for p in sorted(pathlib.Path(d).rglob('*.py'))]; z.close()"
	cp services/compute/spark_job.py build/emr/spark_job.py
	cp deploy/emr-bootstrap.sh build/emr/emr-bootstrap.sh
	$(PY) deploy/package_lambda.py --requirements compute > build/emr/requirements-compute.txt
	cp $(JVM_JAR) build/emr/wideviews-jvm.jar
	@ls -l build/emr

# The query Lambda's zip: the core and `query` extra as Lambda's (manylinux, CPython 3.11) wheels,
# plus shared/, services/query/ and the built explorer page (explorer/dist, served at /). Fails over
# Lambda's limits; prints the sizes.
package-lambda: python explorer
	$(PY) deploy/package_lambda.py --out build/lambda

# One image per worker, each with its own extra (no moto, pandas or pyspark), tagged as the template
# expects (<repository>:<service>-<TAG>), and the local stack's image for docker-compose.
IMAGE_REPOSITORY ?= wideviews
TAG ?= dev
images:
	for service in ingest compute loader publisher; do \
	  docker build --target app --build-arg EXTRAS=$$service -t $(IMAGE_REPOSITORY):$$service-$(TAG) . || exit 1; \
	done
	docker build --target app --build-arg EXTRAS=local -t wideviews-app:local .
