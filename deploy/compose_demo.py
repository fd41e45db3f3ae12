"""Build the images and run the demo through the docker-compose stack; `make test-compose` runs it.

    python deploy/compose_demo.py [--work DIR] [--cells N] [--genes N] [--keep]

1. A Docker engine: the one `docker info` reaches, else (as root, with Debian's docker.io) a private
   `dockerd` on a socket under the work directory, stopped at the end. Exit 75 when none can start.
   Certificate authorities added to this host (/usr/local/share/ca-certificates) are passed to the
   builds as EXTRA_CA_CERTS.
2. The base image `debian:bookworm-slim`: present, pulled, or (no registry reachable) made from
   Debian's packages with `debootstrap --variant=minbase bookworm` and `docker import`.
3. `docker-compose build`, `up -d` under a project name of its own on free host ports, then on the
   host `wideviews demo` against the containers' endpoints (upload, wait for PUBLISHED, dot plot),
   and a read of the published dataset from the query container.
4. `docker-compose down -v` (unless --keep).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
BASE_IMAGE = "debian:bookworm-slim"
EX_TEMPFAIL = 75


def log(message: str) -> None:
    """Print a progress line with the time."""
    print(f"[compose-demo {time.strftime('%H:%M:%S')}] {message}", flush=True)


def run(cmd: list[str], env: dict[str, str], *, check: bool = True, timeout: float = 3600, quiet: bool = False) -> subprocess.CompletedProcess[str]:
    """Run a command (logged); exit naming its output when it fails and `check`."""
    log("$ " + " ".join(cmd))
    done = subprocess.run(cmd, env=env, cwd=PROJECT_ROOT, text=True, capture_output=quiet, timeout=timeout)
    if check and done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(cmd)}\n{(done.stdout or '')[-3000:]}{(done.stderr or '')[-3000:]}")
    return done


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def engine_answers(env: dict[str, str]) -> bool:
    """Whether a Docker engine answers `docker info`."""
    if not shutil.which("docker"):
        return False
    return subprocess.run(["docker", "info"], env=env, capture_output=True, timeout=60).returncode == 0


def start_private_engine(work: Path, env: dict[str, str]) -> subprocess.Popen[bytes] | None:
    """A dockerd of our own, or None when it cannot start.

    overlay2 first; vfs (no kernel support needed) only when overlay2 fails, because vfs copies every
    layer in full: the app image's layers then take tens of GB.
    """
    dockerd = shutil.which("dockerd")
    if dockerd is None or os.geteuid() != 0:
        return None
    root = work / "docker"
    root.mkdir(parents=True, exist_ok=True)
    env["DOCKER_HOST"] = f"unix://{root}/docker.sock"
    for driver in ("overlay2", "vfs"):
        log(f"starting a private dockerd ({env['DOCKER_HOST']}, storage driver {driver})")
        process = subprocess.Popen(
            [dockerd, "--data-root", str(root / "data"), "--exec-root", str(root / "exec"), "--pidfile", str(root / "dockerd.pid"),
             "--host", env["DOCKER_HOST"], "--storage-driver", driver],
            stdout=open(root / "dockerd.log", "ab"),  # noqa: SIM115 - the daemon outlives this statement
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        for _ in range(60):
            if engine_answers(env):
                return process
            if process.poll() is not None:
                break
            time.sleep(1)
        process.terminate()
        process.wait(timeout=60)
    return None


def ensure_base_image(work: Path, env: dict[str, str]) -> None:
    """Make the Debian base image available: local, pulled, or built with debootstrap."""
    if subprocess.run(["docker", "image", "inspect", BASE_IMAGE], env=env, capture_output=True).returncode == 0:
        return
    if subprocess.run(["docker", "pull", BASE_IMAGE], env=env, capture_output=True, timeout=600).returncode == 0:
        return
    debootstrap = shutil.which("debootstrap")
    if debootstrap is None:
        raise SystemExit(f"no {BASE_IMAGE}: no registry answered and debootstrap is not installed")
    rootfs = work / "rootfs"
    log(f"no registry: building {BASE_IMAGE} from Debian's packages (debootstrap)")
    run([debootstrap, "--variant=minbase", "bookworm", str(rootfs), "http://deb.debian.org/debian"], env, quiet=True)
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    subprocess.run(["docker", "import", "-", BASE_IMAGE], stdin=tar.stdout, env=env, check=True, capture_output=True)
    tar.wait()
    shutil.rmtree(rootfs, ignore_errors=True)


def wait_http(url: str, timeout_s: float) -> None:
    """Wait until `url` answers (any 2xx), or exit after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            time.sleep(2)
    raise SystemExit(f"timed out waiting for {url}")


def main() -> int:
    """Build the images, start the compose stack, run the demo through it; the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=PROJECT_ROOT / "build" / "compose-demo")
    parser.add_argument("--cells", type=int, default=600)
    parser.add_argument("--genes", type=int, default=120)
    parser.add_argument("--keep", action="store_true", help="leave the containers running")
    args = parser.parse_args()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("WIDEVIEWS_")}
    # Certificate authorities added to this host (a proxy's) are trusted inside the builds too.
    local_cas = sorted(Path("/usr/local/share/ca-certificates").glob("*.crt"))
    if local_cas and "EXTRA_CA_CERTS" not in env:
        env["EXTRA_CA_CERTS"] = "\n".join(path.read_text().strip() for path in local_cas)
    engine = None
    if not engine_answers(env):
        engine = start_private_engine(work, env)
        if engine is None:
            print("no Docker engine answers and none could be started here (dockerd missing, not root, or it failed)")
            return EX_TEMPFAIL
    compose = ["docker", "compose"] if subprocess.run(["docker", "compose", "version"], env=env, capture_output=True).returncode == 0 else ["docker-compose"]
    project = f"wvdemo{os.getpid()}"
    ports = {"MOTO_HOST_PORT": free_port(), "THRIFT_HOST_PORT": free_port(), "QUERY_HOST_PORT": free_port()}
    env.update({k: str(v) for k, v in ports.items()})
    up = [*compose, "-p", project]
    try:
        ensure_base_image(work, env)
        started = time.monotonic()
        run([*up, "build"], env, timeout=5400)
        log(f"images built in {time.monotonic() - started:.0f} s")
        run([*up, "up", "-d"], env, timeout=600)
        query = f"http://127.0.0.1:{ports['QUERY_HOST_PORT']}"
        wait_http(f"{query}/healthz", 600)
        cli_env = {
            **env,
            "WIDEVIEWS_HOME": str(work / "cli-home"),
            "WIDEVIEWS_AWS_ENDPOINT_URL": f"http://127.0.0.1:{ports['MOTO_HOST_PORT']}",
            "WIDEVIEWS_HBASE_THRIFT_PORT": str(ports["THRIFT_HOST_PORT"]),
            "WIDEVIEWS_QUERY_PORT": str(ports["QUERY_HOST_PORT"]),
        }
        demo = run([sys.executable, "-m", "cli.main", "demo", "--cells", str(args.cells), "--genes", str(args.genes), "--timeout", "1800"], cli_env, check=False, timeout=2400)
        if demo.returncode != 0:
            run([*up, "logs", "--tail", "60"], env, check=False)
            raise SystemExit(f"the demo through the compose stack failed ({demo.returncode})")
        with urllib.request.urlopen(f"{query}/v1/datasets/demo", timeout=30) as response:
            body = json.loads(response.read())
        assert body["n_cells"] == args.cells and body["n_features"] == args.genes, body
        log(f"published through docker-compose: version {body['version']}, {body['n_cells']} cells x {body['n_features']} features")
        return 0
    finally:
        if not args.keep:
            run([*up, "down", "-v", "--remove-orphans"], env, check=False, timeout=600)
        if engine is not None and not args.keep:
            engine.terminate()
            engine.wait(timeout=60)


if __name__ == "__main__":
    sys.exit(main())
