"""Each deployable holds only what its service imports: the extras of pyproject.toml against real imports.

Every service's entry module is imported in a fresh interpreter; the third-party distributions
whose modules it loaded must all be declared by that service's extra (with the core), and the
read path must not load the heavy compute or local-stack packages at all.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
from importlib import metadata

import pytest
from packaging.requirements import Requirement

# entry module -> the extra its image or package installs
SERVICES: dict[str, str] = {
    "services.query.lambda_handler": "query",
    "services.query.server": "query",
    "services.ingest.main": "ingest",
    "services.compute.main": "compute",
    "services.loader.main": "loader",
    "services.publisher.main": "publisher",
}
# Never in the query package (Lambda's 250 MB) and never loaded by the read path.
NOT_IN_QUERY = {"pyspark", "numba", "llvmlite", "moto", "pandas", "scipy", "pyarrow", "aiobotocore"}
# Never in a worker image: the local stack's fake AWS and the developer-only Spark.
NOT_IN_WORKERS = {"moto", "pyspark", "pandas"}
# Imported only when present (each importer guards the ImportError), so not a requirement.
OPTIONAL_IMPORTS = {
    "certifi": "botocore takes its CA bundle when installed",
    "charset-normalizer": "numpy.f2py (loaded by scipy) tries it for Fortran sources",
    "pyyaml": "numba reads a .numba_config.yaml with it when installed",
    # The test extra (schemathesis, the query tests' client) installs httpx; aiobotocore then takes it
    # as its HTTP backend, and httpx loads its command line's packages when they are there.
    "httpx": "aiobotocore's optional HTTP backend, used when installed",
    "httpcore": "httpx's transport (with httpx)",
    "anyio": "httpx's async layer (with httpx)",
    "sniffio": "anyio's event-loop detection (with httpx)",
    "h11": "httpcore's HTTP/1.1 (with httpx)",
    "click": "httpx's command line, loaded when installed",
    "rich": "httpx's command line, loaded when installed",
    "pygments": "rich's highlighting (with httpx's command line)",
    "markdown-it-py": "rich's markdown (with httpx's command line)",
    "mdurl": "markdown-it-py's URLs (with httpx's command line)",
    # The test extra's scanpy (the markers' reference) brings joblib and with it cloudpickle.
    "cloudpickle": "pyarrow pickles with it when installed (and guards its ImportError)",
    "scipy": "numba imports it when installed (its LAPACK bindings); ingest, which uses numba, needs none of it",
}


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _applies(requirement: Requirement, extras: set[str]) -> bool:
    if requirement.marker is None:
        return True
    return any(requirement.marker.evaluate({"extra": extra}) for extra in (extras or {""}))


def declared_closure(extra: str) -> set[str]:
    """Distributions `pip install wideviews[extra]` brings in: the core, the extra, and their requirements, transitively."""
    own = [Requirement(r) for r in metadata.requires("wideviews") or []]
    # Self-references (`wideviews[worker]`) expand to more extras of this package.
    wanted = {extra}
    while True:
        more = {e for r in own if _canonical(r.name) == "wideviews" and _applies(r, wanted) for e in r.extras} - wanted
        if not more:
            break
        wanted |= more
    stack = [(r, set(r.extras)) for r in own if _canonical(r.name) != "wideviews" and _applies(r, wanted)]
    seen: set[tuple[str, frozenset[str]]] = set()
    while stack:
        requirement, extras = stack.pop()
        name = _canonical(requirement.name)
        if (name, frozenset(extras)) in seen:
            continue
        seen.add((name, frozenset(extras)))
        with contextlib.suppress(metadata.PackageNotFoundError):
            for sub in metadata.requires(name) or []:
                parsed = Requirement(sub)
                if _applies(parsed, extras):
                    stack.append((parsed, set(parsed.extras)))
    return {name for name, _ in seen}


def imported_distributions(module: str) -> set[str]:
    """Third-party distributions whose modules a fresh interpreter loads when importing `module`."""
    code = "import json, sys; before = set(sys.modules); import {}; print(json.dumps(sorted(set(sys.modules) - before)))"
    done = subprocess.run([sys.executable, "-c", code.format(module)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    # Modules loaded before the import (site hooks such as setuptools' _distutils_hack) are not the service's.
    top_levels = {name.split(".")[0] for name in json.loads(done.stdout.splitlines()[-1])}
    owners = metadata.packages_distributions()
    found: set[str] = set()
    for top in top_levels - set(sys.stdlib_module_names):
        for dist in owners.get(top, []):
            found.add(_canonical(dist))
    found.discard("wideviews")
    return found - set(OPTIONAL_IMPORTS)


@pytest.mark.parametrize("module", sorted(SERVICES))
def test_service_imports_only_what_its_extra_declares(module: str) -> None:
    extra = SERVICES[module]
    imported = imported_distributions(module)
    declared = declared_closure(extra)
    assert imported, f"{module} loaded no third-party distribution at all: the check is not looking"
    assert imported <= declared, f"{module} imports {sorted(imported - declared)}, not in wideviews[{extra}]"
    forbidden = NOT_IN_QUERY if extra == "query" else NOT_IN_WORKERS
    assert not imported & forbidden, f"{module} loads {sorted(imported & forbidden)}"


@pytest.mark.parametrize("extra", ["query", "ingest", "compute", "loader", "publisher"])
def test_extras_leave_out_the_heavy_packages(extra: str) -> None:
    declared = declared_closure(extra)
    forbidden = NOT_IN_QUERY if extra == "query" else NOT_IN_WORKERS
    assert not declared & forbidden, f"wideviews[{extra}] would install {sorted(declared & forbidden)}"
    # The closure is real: the core and the extra's own packages are in it.
    assert {"boto3", "pydantic", "numpy"} <= declared
    assert ("fastapi" in declared) == (extra == "query")
    # numba: compute's kernel, and ingest's CSV parser.
    assert ("numba" in declared) == (extra in ("compute", "ingest"))
