#!/bin/bash
# EMR bootstrap action (every node, before Spark and HBase start): the Python packages the compute
# job imports on the executors, pinned as in pyproject.toml's `compute` extra. Argument: the S3 URI
# of requirements-compute.txt (`make package-emr` writes it to build/emr/). The template's cluster
# runs PySpark with Python 3.11 (spark-env PYSPARK_PYTHON=/usr/bin/python3.11, which EMR 7.9 ships);
# Spark itself comes with EMR and is not installed here.
set -euo pipefail
requirements_uri="${1:?usage: emr-bootstrap.sh s3://bucket/prefix/requirements-compute.txt}"
python="$(command -v python3.11 || command -v python3)"
aws s3 cp "$requirements_uri" /tmp/wideviews-requirements.txt
sudo "$python" -m pip install --quiet --no-cache-dir --requirement /tmp/wideviews-requirements.txt
"$python" -c "import numba, scipy, pyarrow, pydantic; print('wideviews compute dependencies installed')"
