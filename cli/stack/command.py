"""`wideviews stack up|down|status|restart|init`: the command line over `cli.stack.lifecycle`."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from cli.stack.lifecycle import INFRA, SERVICE_MODULES, down, init_resources, restart_component, status, up
from cli.stack.processes import StackError
from shared.config import Settings

def _print_endpoints(report: dict[str, Any]) -> None:
    print(f"wideviews stack in {report['home']} ({'healthy' if report['healthy'] else 'NOT healthy'})")
    print(f"  S3/SQS/DynamoDB/EMR  {report['s3_endpoint']}")
    print(f"  HBase Thrift         {report['hbase_thrift']}  (ZooKeeper {report['hbase_zookeeper']})")
    print(f"  query                {report['query_url']}")
    print(f"  logs                 {report['logs']}")
    for name, health in report["components"].items():
        state = "healthy" if health["healthy"] else ("running, not answering" if health["running"] else "stopped")
        pid = health["pid"] if health["pid"] is not None else "-"
        print(f"  {name:<20} {state:<24} pid {pid}")


def _cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    ports = {
        "moto_port": args.moto_port,
        "hbase_thrift_port": args.thrift_port,
        "hbase_zk_port": args.zk_port,
        "query_port": args.query_port,
    }
    try:
        settings = up(settings, infra_only=args.infra_only, ports=ports, timeout_s=args.timeout)
    except StackError as exc:
        print(f"wideviews stack up failed: {exc}", file=sys.stderr)
        print("`wideviews stack down` stops what was started.", file=sys.stderr)
        return 1
    _print_endpoints(status(settings))
    return 0


def _cmd_down(args: argparse.Namespace, settings: Settings) -> int:
    stopped = down(settings)
    print(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}")
    return 0


def _cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    report = status(settings)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_endpoints(report)
    return 0 if report["healthy"] else 1


def _cmd_restart(args: argparse.Namespace, settings: Settings) -> int:
    try:
        restart_component(settings, args.component)
    except StackError as exc:
        print(f"restarting {args.component} failed: {exc}", file=sys.stderr)
        return 1
    return 0


def _cmd_init(args: argparse.Namespace, settings: Settings) -> int:
    try:
        init_resources(settings, timeout_s=args.timeout)
    except StackError as exc:
        print(f"wideviews stack init failed: {exc}", file=sys.stderr)
        return 1
    print("resources ready")
    return 0


def register(subparsers: Any) -> None:
    """Add `wideviews stack up|down|status|restart|init`."""
    stack = subparsers.add_parser("stack", help="the local stack: moto, HBase + Thrift, the services")
    commands = stack.add_subparsers(dest="stack_command", required=True)

    up_parser = commands.add_parser("up", help="start what is missing, create resources, wait until healthy")
    up_parser.add_argument("--infra-only", action="store_true", help="moto, HBase, Thrift and resources; no services")
    up_parser.add_argument("--moto-port", type=int, help="port of the moto server (default: a free port)")
    up_parser.add_argument("--thrift-port", type=int, help="port of the HBase Thrift server (default: a free port)")
    up_parser.add_argument("--zk-port", type=int, help="port of HBase's ZooKeeper (default: a free port)")
    up_parser.add_argument("--query-port", type=int, help="port of the query HTTP server (default: a free port)")
    up_parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for health")
    up_parser.set_defaults(run=_cmd_up)

    down_parser = commands.add_parser("down", help="stop the processes this stack started")
    down_parser.set_defaults(run=_cmd_down)

    status_parser = commands.add_parser("status", help="endpoints and health; exit 1 unless all healthy")
    status_parser.add_argument("--json", action="store_true", help="print JSON")
    status_parser.set_defaults(run=_cmd_status)

    restart_parser = commands.add_parser("restart", help="restart one component and wait until healthy")
    restart_parser.add_argument("component", choices=[*INFRA, *SERVICE_MODULES])
    restart_parser.set_defaults(run=_cmd_restart)

    init_parser = commands.add_parser("init", help="create the resources on endpoints started elsewhere (containers)")
    init_parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the endpoints")
    init_parser.set_defaults(run=_cmd_init)
