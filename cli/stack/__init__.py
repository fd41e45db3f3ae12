"""`wideviews stack`: the local stack, as background processes tracked by pid.

`up` starts a moto server (S3, SQS, DynamoDB, EMR API), a standalone HBase (HMaster with its embedded
ZooKeeper and RegionServer, rootdir on local disk) and the HBase Thrift server; creates the buckets,
queues with their dead-letter queues, DynamoDB tables, the HBase namespace and the upload
notification; then starts the four workers and the query server (each only once its module exists).
`down` stops exactly the processes `up` started. Everything lives under one state directory,
`Settings.home`:

```
stack.json            {"settings": {...}, "mode": "full"|"infra", "components": {name: {pid, cmd, log, started_at, start_ticks}}}
stack.lock            held while up/down/restart change processes
logs/<name>.log       stdout and stderr of each component
run/<name>.pid        the pid of each running component
hbase/conf/           hbase-site.xml and log4j.properties (Settings.hbase_conf_dir), for HBase clients
hbase/args/           the java argfiles holding each JVM's classpath
hbase/data/           hbase.rootdir; hbase/zookeeper/ and hbase/tmp/ beside it
```

`down` stops the services first, then HBase (a cluster shutdown through the Admin API, ~10 s,
instead of SIGTERM, which can take 30-40 s) and moto. moto keeps S3, SQS and DynamoDB in memory:
after `down` (or a moto restart) they are empty, while HBase keeps its tables. Class-data archives
of the HBase JVMs are cached beside the classpath file (jvm/hbase-runtime/target/cds/) and make
every start after the first on a machine cheaper.

The package, one concern a module:

- `processes`: stack.json, its lock, pids provably ours, starting and signalling processes;
- `ports`: the ports a stack uses and the settings its children see;
- `hbase`: hbase-site.xml, the JVM command lines and class-data archives, the namespace;
- `resources`: buckets, queues, tables and the upload notification;
- `probes`: health of each component, and waiting on it;
- `lifecycle`: the components, `up`, `down`, `status`, stopping and restarting one;
- `command`: the `wideviews stack` command line.
"""

from __future__ import annotations

from cli.stack.command import register
from cli.stack.lifecycle import (
    INFRA,
    SERVICE_MODULES,
    all_components,
    component_cmd,
    down,
    expected_components,
    init_resources,
    restart_component,
    service_available,
    status,
    stop_component,
    up,
)
from cli.stack.ports import child_env, resolve_ports, stack_settings
from cli.stack.processes import ProcessRecord, StackError, StackState, is_ours, spawn
from cli.stack.resources import ensure_aws_resources, upload_notification

__all__ = [
    "INFRA",
    "SERVICE_MODULES",
    "ProcessRecord",
    "StackError",
    "StackState",
    "all_components",
    "child_env",
    "component_cmd",
    "down",
    "ensure_aws_resources",
    "expected_components",
    "init_resources",
    "is_ours",
    "register",
    "resolve_ports",
    "restart_component",
    "service_available",
    "spawn",
    "stack_settings",
    "status",
    "stop_component",
    "up",
    "upload_notification",
]
