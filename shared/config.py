"""Settings: the one place that reads the environment.

Values come, in order of precedence, from `WIDEVIEWS_*` environment variables, then from
`$WIDEVIEWS_HOME/stack.json` (written by `wideviews stack up` with the ports it chose), then
the defaults below. Every other module receives a `Settings` (or a deps object built from one).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

Executor = Literal["local", "spark", "emr"]
QueueRole = Literal["ingest", "compute", "load", "publish"]
QUEUE_ROLES: tuple[QueueRole, ...] = ("ingest", "compute", "load", "publish")
PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    """Endpoints, names, ports and timeouts of one wideviews deployment.

    The string under each field is its meaning: pydantic keeps it as the field's description, and
    README.md's settings table is generated from them (`wideviews settings --markdown`).
    """

    model_config = SettingsConfigDict(env_prefix="WIDEVIEWS_", extra="ignore", use_attribute_docstrings=True)

    home: Path = Field(default_factory=lambda: Path(".wideviews").resolve())
    """State directory of the local stack (`stack.json`, logs, HBase data); `--home` or `WIDEVIEWS_HOME`."""
    project_root: Path = PROJECT_ROOT
    """The checkout (or image directory) holding jvm/ and its built jars."""
    region: str = "us-east-1"
    """AWS region of every client."""
    # None means real AWS; the local stack points this at its moto server.
    aws_endpoint_url: str | None = None
    """AWS endpoint of every client; unset on AWS, the moto server's URL locally."""
    aws_access_key_id: str = "testing"
    """Access key used only with `aws_endpoint_url` (moto accepts any); on AWS the role's credentials apply."""
    aws_secret_access_key: str = "testing"
    """Secret key used only with `aws_endpoint_url`."""
    name_prefix: str = "wideviews"
    """Prefix of every bucket (`<prefix>-uploads`, `-staging`), queue (`<prefix>-ingest`, `…-dlq`) and table (`<prefix>-datasets`, `-versions`)."""

    # HBase: Thrift for reads and table admin, ZooKeeper for the bulk-load tool.
    hbase_thrift_host: str = "127.0.0.1"
    """Host of the HBase Thrift server (reads, table admin)."""
    hbase_thrift_port: int = 9090
    """Port of the HBase Thrift server."""
    hbase_zk_host: str = "127.0.0.1"
    """ZooKeeper quorum host of HBase (the bulk-load tool)."""
    hbase_zk_port: int = 2181
    """ZooKeeper client port."""
    hbase_namespace: str = "wideviews"
    """HBase namespace of the version tables."""
    # RPC ports of the local standalone HBase (master and its in-process RegionServer), and its heap.
    hbase_master_port: int = 16000
    """RPC port of the local standalone HMaster."""
    hbase_regionserver_port: int = 16020
    """RPC port of the local standalone RegionServer."""
    hbase_heap_mb: int = 1024
    """Heap of the local HBase JVM, in MiB."""
    hbase_pool_size: int = 8
    """Thrift connections per process."""

    # Where the jvm/ tools are when not in this checkout (an EMR step ships the jar beside the job and
    # uses the cluster's HBase jars): the jar's path and the dependency classpath, `:`-separated.
    jvm_jar_path: Path | None = None
    """The jvm/ tools' jar when not in this checkout (an EMR step ships it beside the job)."""
    jvm_dependency_classpath: str | None = None
    """The jvm/ tools' dependency classpath (`:`-separated) when not in this checkout."""
    # Run WriteHFiles/BulkLoad in one long-lived JVM per process instead of a JVM per call.
    jvm_tool_server: bool = True
    """Run WriteHFiles/BulkLoad in one long-lived JVM per process instead of a JVM per call."""

    # Compute.
    executor: Executor = "local"
    """Where a chunk's job runs: `local` (in the compute worker), `spark` (local Spark) or `emr` (an EMR step)."""
    emr_cluster_id: str | None = None
    """The EMR cluster (`j-…`) that runs the `emr` executor's steps."""
    emr_poll_s: float = 10.0
    """Seconds between `DescribeStep` polls of a running EMR step."""
    # Where `make package-emr`'s build/emr/ (wideviews.zip, spark_job.py, wideviews-jvm.jar) is copied for EMR steps.
    emr_code_uri: str = "s3://wideviews-staging/code"
    """S3 prefix holding `make package-emr`'s files (wideviews.zip, spark_job.py, wideviews-jvm.jar)."""
    # HBase jars on an EMR node, for the jvm/ writer the step runs.
    emr_hbase_classpath: str = "/usr/lib/hbase/lib/*:/usr/lib/hbase/*:/etc/hbase/conf"
    """HBase jars and configuration on an EMR node, for the jvm/ writer the step runs."""
    # spark/emr: chunks per Spark application (one EMR step each); 0 = the whole version in one.
    spark_batch_chunks: int = Field(default=0, ge=0)
    """spark/emr: chunks per Spark application (one EMR step each); 0 = the whole version in one."""
    # spark/emr: Spark partitions per batch, at least; more when a partition would pass this many
    # features, or (at the matrix's mean density) this many non-zeros.
    spark_min_partitions: int = Field(default=4, ge=1)
    """spark/emr: the least number of Spark partitions per batch."""
    spark_partition_features: int = Field(default=2048, ge=1)
    """spark/emr: at most this many features per Spark partition."""
    spark_partition_nnz: int = Field(default=50_000_000, ge=1)
    """spark/emr: at most about this many non-zeros per Spark partition."""
    # spark/emr: memory of one Spark executor's task for a chunk's staging (sets the chunk width there).
    spark_chunk_memory_budget_bytes: int = 4 * 1024 * 1024 * 1024
    """spark/emr: memory of one executor task for a chunk's staging (sets the chunk width there)."""
    spark_local_memory: str = Field(default="3g", pattern=r"^[0-9]+[kmgt]$")
    """spark (local mode): heap of the one JVM that is Spark's driver and executor (Java size: `3g`)."""
    # URI scheme Spark uses for S3: s3a (hadoop-aws, the local stack) or s3 (EMRFS on EMR).
    spark_s3_scheme: Literal["s3a", "s3"] = "s3a"
    """URI scheme Spark reads and writes S3 by: `s3a` (hadoop-aws) or `s3` (EMRFS on EMR)."""
    chunk_features: int = 512
    """Features per column chunk at most (the local executor's unit of work)."""
    # Cores the local executor's kernel uses for one chunk (0: all); Spark tasks use one each.
    compute_threads: int = Field(default=0, ge=0)
    """Cores the local executor's kernel uses for one chunk (0: all)."""
    chunk_memory_budget_bytes: int = 512 * 1024 * 1024
    """Memory budget of one chunk in the local executor; the chunk width follows from it and the number of cells."""
    # local: the cells of one compute unit (a run of chunks computed one after another, written as one
    # set of HFiles per view) are held in memory up to about this much.
    unit_memory_budget_bytes: int = 256 * 1024 * 1024
    """local: a compute unit (chunks computed one after another, one HFile set per view) holds about this much in memory."""
    # A transpose row holds at most this many non-zeros; more spill into `<feature>#<part>` rows.
    features_row_max_nnz: int = 262_144
    """Non-zeros per `features` row at most; more spill into `<feature>#<part>` rows."""
    markers_top_n: int = Field(default=100, ge=1, le=10_000)
    """Marker features kept per group of each grouping (the `markers` view); fixed in a version's plan at ingest."""
    embedding_sample_size: int = Field(default=50_000, ge=1, le=5_000_000)
    """Points at most in the density-aware embedding sample (the `embedding_sample` view); fixed in the plan at ingest."""

    # Ingest limits (zip safety).
    max_upload_bytes: int = 1 << 40
    """Largest upload ZIP accepted, in bytes."""
    max_member_bytes: int = 1 << 40
    """Largest uncompressed ZIP member accepted, in bytes."""
    max_compression_ratio: float = 200.0
    """Largest expansion ratio of a ZIP member (zip-bomb guard)."""
    max_header_bytes: int = 64 * 1024 * 1024
    """Longest CSV header line accepted, in bytes."""
    max_features: int = 200_000
    """Most features (matrix columns) accepted."""

    rows_per_region: int = 20_000
    """Version tables are pre-split so no region starts with more rows than this."""
    region_bytes: int = 4 * 1024 * 1024 * 1024
    """... nor with more than this many bytes of the view's estimated rows (what sizes the transpose's regions at scale)."""

    # Worker loop.
    compute_concurrency: int = Field(default=2, ge=1)
    """Units the compute worker runs at once (local, emr; spark runs one): one unit's HFiles are written and uploaded while the next one computes."""
    load_concurrency: int = Field(default=3, ge=1)
    """Bulk loads the loader runs at once (each mostly waits on HBase and S3; the tool JVM runs them in parallel)."""
    visibility_timeout_s: int = 60
    """SQS visibility timeout of a received message; the worker's heartbeat extends it while the handler runs."""
    max_receive_count: int = 10
    """Receives before SQS dead-letters a message (the queues' redrive policy); the worker's last try handles any error as permanent."""
    wait_time_s: int = 2
    """SQS long-poll wait of each receive, in seconds."""
    retry_base_s: int = 2
    """First backoff of a retried message, in seconds (doubles each time, with jitter)."""
    retry_max_s: int = 300
    """Longest backoff of a retried message, in seconds."""
    # Transient failures (HBase or AWS unreachable) retried this often, backoff capped at retry_max_s.
    max_transient_attempts: int = 40
    """Transient failures (HBase or AWS unreachable) retried this often before the version fails."""

    # Logging: one JSON object per line on stderr (shared/logs.py).
    service: str = ""
    """The service a process runs, on each of its log lines (set per ECS service and on the Lambda)."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """Level of the JSON log lines: DEBUG, INFO, WARNING or ERROR."""

    # Query.
    query_host: str = "127.0.0.1"
    """Address the local query server listens on."""
    query_port: int = 8080
    """Port the local query server listens on."""
    pointer_cache_s: float = 2.0
    """Seconds the query caches a dataset's current-version pointer."""
    max_features_per_request: int = 1000
    """Most features one aggregates request may ask for."""
    query_workers: int = 1
    """Processes of the local query server (uvicorn workers sharing its port); each has its own caches."""
    query_stats_cache_bytes: int = 67_108_864
    """Memory of the query's cache of stats rows (version-pinned, so never stale); 0 turns it off."""

    @classmethod
    def load(cls, **overrides: Any) -> "Settings":
        """Settings from the environment, overlaid on the stack file of `WIDEVIEWS_HOME`."""
        home = Path(overrides.get("home") or os.environ.get("WIDEVIEWS_HOME") or ".wideviews").resolve()
        stack_file = home / "stack.json"
        from_stack: dict[str, Any] = {}
        if stack_file.exists():
            from_stack = json.loads(stack_file.read_text()).get("settings", {})
        env_keys = {k[len("WIDEVIEWS_"):].lower() for k in os.environ if k.startswith("WIDEVIEWS_")}
        # The environment beats the stack file: pydantic-settings reads env itself, so drop those keys.
        base = {k: v for k, v in from_stack.items() if k not in env_keys}
        return cls(**{**base, **overrides, "home": home})

    # Names derived from the prefix, so two stacks never share a bucket, queue or table.
    @property
    def uploads_bucket(self) -> str:
        """The bucket uploads arrive in (`<prefix>-uploads`)."""
        return f"{self.name_prefix}-uploads"

    @property
    def staging_bucket(self) -> str:
        """The bucket of chunks, plans, HFiles and checks (`<prefix>-staging`)."""
        return f"{self.name_prefix}-staging"

    def queue_name(self, role: QueueRole, *, dead_letter: bool = False) -> str:
        """SQS queue name of a role (`ingest`, `compute`, `load`, `publish`), or of its DLQ."""
        return f"{self.name_prefix}-{role}" + ("-dlq" if dead_letter else "")

    @property
    def datasets_table(self) -> str:
        """The DynamoDB table of dataset pointers (key `dataset_id`; written by `shared.lifecycle`
        only, conditional on the `generation` read)."""
        return f"{self.name_prefix}-datasets"

    @property
    def versions_table(self) -> str:
        """The DynamoDB table of version records (keys `dataset_id`, `version_id`)."""
        return f"{self.name_prefix}-versions"

    @property
    def jvm_jar(self) -> Path:
        """The jvm/ tools' jar (this checkout's build unless `jvm_jar_path` is set)."""
        return self.jvm_jar_path or self.project_root / "jvm" / "target" / "wideviews-jvm.jar"

    @property
    def jvm_classpath_file(self) -> Path:
        """The jvm/ tools' dependency classpath file (written by the Maven build)."""
        return self.project_root / "jvm" / "target" / "runtime-classpath.txt"

    @property
    def hbase_conf_dir(self) -> Path:
        """Directory with the local stack's hbase-site.xml: put it first on a JVM's classpath."""
        return self.home / "hbase" / "conf"

    @property
    def spark_s3_classpath_file(self) -> Path:
        """hadoop-aws and the AWS SDK for Spark's s3a:// (resolved by `make setup`)."""
        return self.project_root / "jvm" / "spark-runtime" / "target" / "classpath.txt"

    @property
    def hbase_classpath_file(self) -> Path:
        """The HBase runtime classpath file (resolved by `make setup`)."""
        return self.project_root / "jvm" / "hbase-runtime" / "target" / "classpath.txt"

    def chunk_width(self, n_cells: int) -> int:
        """Features per column chunk: the compute task's memory budget over a dense float64 column
        (the kernel needs about 3x the chunk; dense is the worst case). The local executor's budget is
        the compute worker's; spark/emr's is an executor task's, so their chunks are wider."""
        distributed = self.executor in ("spark", "emr")
        budget = self.spark_chunk_memory_budget_bytes if distributed else self.chunk_memory_budget_bytes
        cap = max(self.chunk_features, self.spark_partition_features) if distributed else self.chunk_features
        return max(1, min(cap, budget // max(1, n_cells * 8 * 3)))

    def chunk_batches(self, n_chunks: int, nnz: int) -> list[tuple[int, int]]:
        """The compute units as chunk ranges [first, end): spark/emr, `spark_batch_chunks` chunks per
        Spark application (0: all); local, as many chunks as keep the unit's cells (~16 bytes per
        non-zero, at the matrix's mean density) within `unit_memory_budget_bytes`, so a dataset
        is bulk-loaded in a few large loads per view rather than one per chunk."""
        if self.executor == "local":
            per_chunk = 16 * nnz / max(1, n_chunks)
            size = max(1, int(self.unit_memory_budget_bytes // max(1.0, per_chunk)))
        else:
            size = self.spark_batch_chunks or n_chunks
        size = max(1, min(size, n_chunks))
        return [(first, min(n_chunks, first + size)) for first in range(0, n_chunks, size)]

    def aws_client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for boto3/aiobotocore clients of this deployment."""
        kwargs: dict[str, Any] = {"region_name": self.region}
        if self.aws_endpoint_url:
            kwargs.update(
                endpoint_url=self.aws_endpoint_url,
                aws_access_key_id=self.aws_access_key_id,
                aws_secret_access_key=self.aws_secret_access_key,
            )
        return kwargs

    def child_env(self) -> dict[str, str]:
        """Environment for a child process (worker, job) that must see these same settings."""
        env = {k: v for k, v in os.environ.items()}
        env["WIDEVIEWS_HOME"] = str(self.home)
        return env
