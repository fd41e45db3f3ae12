"""The stack's ports and the settings its children see.

Ports not set by a flag or a `WIDEVIEWS_*` variable are free ports chosen at the first `up` and kept
in stack.json, so a warm `up` finds its HBase data under the same addresses.
"""

from __future__ import annotations

import socket
from typing import Any
from urllib.parse import urlparse

from cli.stack.processes import StackError, StackState, is_ours
from shared.config import Settings


# Settings a child process needs from stack.json, besides any field set explicitly at `up`.
STACK_FIELDS: tuple[str, ...] = (
    "region",
    "aws_endpoint_url",
    "aws_access_key_id",
    "aws_secret_access_key",
    "name_prefix",
    "hbase_thrift_host",
    "hbase_thrift_port",
    "hbase_zk_host",
    "hbase_zk_port",
    "hbase_master_port",
    "hbase_regionserver_port",
    "hbase_namespace",
    "hbase_heap_mb",
    "query_host",
    "query_port",
    "visibility_timeout_s",
    "max_receive_count",
)
# Port settings `up` chooses (free ports) unless set; "moto_port" lives inside aws_endpoint_url.
PORT_FIELDS: tuple[str, ...] = (
    "moto_port",
    "hbase_thrift_port",
    "hbase_zk_port",
    "hbase_master_port",
    "hbase_regionserver_port",
    "query_port",
)
# The component that listens on each port: its port may be kept while it runs.
PORT_OWNERS: dict[str, str] = {
    "moto_port": "moto",
    "hbase_thrift_port": "hbase-thrift",
    "hbase_zk_port": "hbase-master",
    "hbase_master_port": "hbase-master",
    "hbase_regionserver_port": "hbase-master",
    "query_port": "query",
}


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port(taken: set[int]) -> int:
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in taken:
            return port


def moto_port(settings: Settings) -> int | None:
    """The moto server's port, from `aws_endpoint_url` (None without one)."""
    if not settings.aws_endpoint_url:
        return None
    return urlparse(settings.aws_endpoint_url).port


def _port_values(settings: Settings) -> dict[str, int | None]:
    values: dict[str, int | None] = {f: getattr(settings, f) for f in PORT_FIELDS if f != "moto_port"}
    values["moto_port"] = moto_port(settings)
    return values


def resolve_ports(settings: Settings, state: StackState, requested: dict[str, int] | None = None) -> Settings:
    """Settings with every stack port decided.

    A port given in `requested` (command-line flags) or set through a `WIDEVIEWS_*` variable is used
    as is. A port remembered in stack.json is kept while its component runs or the port is free;
    anything else gets a free port on 127.0.0.1.
    """
    requested = {k: v for k, v in (requested or {}).items() if v is not None}
    remembered = state.settings
    remembered_url = remembered.get("aws_endpoint_url")
    remembered_moto = urlparse(remembered_url).port if remembered_url else None
    values = _port_values(settings)
    decided: dict[str, int] = {}
    for name in PORT_FIELDS:
        value = values[name]
        settings_key = "aws_endpoint_url" if name == "moto_port" else name
        remembered_value = remembered_moto if name == "moto_port" else remembered.get(name)
        from_stack_file = settings_key in remembered and value == remembered_value
        explicit = settings_key in settings.model_fields_set and not from_stack_file
        owner = state.components.get(PORT_OWNERS[name])
        if name in requested:
            decided[name] = requested[name]
        elif explicit and value is not None:
            decided[name] = value
        elif from_stack_file and value is not None and ((owner and is_ours(owner)) or _port_is_free(value)):
            decided[name] = value
    taken = set(decided.values())
    for name in PORT_FIELDS:
        if name not in decided:
            decided[name] = _free_port(taken)
            taken.add(decided[name])
    if len(taken) != len(PORT_FIELDS):
        raise StackError(f"two stack components would share a port: {decided}")
    updates: dict[str, Any] = {k: v for k, v in decided.items() if k != "moto_port"}
    updates["aws_endpoint_url"] = f"http://127.0.0.1:{decided['moto_port']}"
    return settings.model_copy(update=updates)


def stack_settings(settings: Settings) -> dict[str, Any]:
    """The `settings` object of stack.json: what a child's `Settings.load()` must see."""
    keys = set(STACK_FIELDS) | (set(settings.model_fields_set) - {"home", "project_root"})
    return settings.model_dump(mode="json", include=keys)


def child_env(settings: Settings) -> dict[str, str]:
    """Environment of a stack child: `WIDEVIEWS_HOME`, plus stack values over any stale `WIDEVIEWS_*` copy."""
    env = settings.child_env()
    for key, value in stack_settings(settings).items():
        env_key = f"WIDEVIEWS_{key.upper()}"
        if env_key in env and value is not None:
            env[env_key] = str(value)
    env["PYTHONUNBUFFERED"] = "1"
    return env
