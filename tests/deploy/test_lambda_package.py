"""The query Lambda's package: built as `make package-lambda` builds it, under Lambda's size limits,
without the heavy packages, holding the built explorer page, and answering API Gateway events (the
health check, the page at / and its script) from a clean interpreter."""

from __future__ import annotations

import base64
import copy
import json
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(PROJECT_ROOT / "deploy"))
import package_lambda  # noqa: E402  (deploy/ is scripts, not a package)

FORBIDDEN = ("pyspark", "numba", "llvmlite", "moto", "pandas", "scipy", "pyarrow", "aiobotocore")

# An HTTP API (payload 2.0) event as API Gateway sends it for GET /healthz.
HEALTHZ_EVENT = {
    "version": "2.0",
    "routeKey": "GET /healthz",
    "rawPath": "/healthz",
    "rawQueryString": "",
    "headers": {"host": "abc123.execute-api.us-east-1.amazonaws.com", "user-agent": "curl/8.0", "accept": "*/*"},
    "requestContext": {
        "accountId": "123456789012",
        "apiId": "abc123",
        "domainName": "abc123.execute-api.us-east-1.amazonaws.com",
        "domainPrefix": "abc123",
        "http": {"method": "GET", "path": "/healthz", "protocol": "HTTP/1.1", "sourceIp": "192.0.2.1", "userAgent": "curl/8.0"},
        "requestId": "req-1",
        "routeKey": "GET /healthz",
        "stage": "$default",
        "time": "01/Dec/2026:06:00:00 +0000",
        "timeEpoch": 1796104800000,
    },
    "isBase64Encoded": False,
}


def http_api_event(path: str) -> dict[str, object]:
    """The HTTP API event of GET `path` (API Gateway's route `GET /` or `GET /{proxy+}`)."""
    event = copy.deepcopy(HEALTHZ_EVENT)
    route = "GET /" if path == "/" else "GET /{proxy+}"
    event.update(routeKey=route, rawPath=path)
    event["requestContext"].update(routeKey=route, http={**event["requestContext"]["http"], "path": path})  # type: ignore[union-attr]
    return event


def response_body(response: dict[str, object]) -> bytes:
    """A proxy result's body as bytes (Mangum base64-encodes the ones it does not take for text)."""
    body = str(response["body"])
    return base64.b64decode(body) if response.get("isBase64Encoded") else body.encode()


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("lambda")
    done = subprocess.run([sys.executable, str(PROJECT_ROOT / "deploy" / "package_lambda.py"), "--out", str(out)], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    return out


def test_package_is_under_lambdas_limits_and_holds_no_heavy_package(package: Path) -> None:
    archive = package / package_lambda.ZIP_NAME
    with zipfile.ZipFile(archive) as z:
        unzipped = sum(info.file_size for info in z.infolist())
        top_levels = {name.split("/")[0] for name in z.namelist()}
    assert unzipped < package_lambda.MAX_UNZIPPED_BYTES, unzipped
    assert archive.stat().st_size < package_lambda.MAX_ZIPPED_BYTES
    assert {"services", "shared", "happybase", "thriftpy2", "numpy", "pydantic", "boto3"} <= top_levels
    assert not {t for t in top_levels for f in FORBIDDEN if t == f or t.startswith(f + "-")}, sorted(top_levels)
    # Only the query service's code: the workers' modules are not in it.
    assert not any(name.startswith(("services/compute", "services/ingest", "services/loader", "cli/")) for name in z.namelist())
    # The explorer page, every file byte for byte as built (its Plotly chunk too), where the app looks
    # for it (beside shared/ and services/).
    dist = PROJECT_ROOT / "explorer" / "dist"
    built = sorted(path for path in dist.rglob("*") if path.is_file())
    assert {path.name for path in built} >= set(package_lambda.EXPLORER_FILES)
    with zipfile.ZipFile(archive) as z:
        assert sorted(name for name in z.namelist() if name.startswith("explorer/")) == [f"explorer/dist/{path.relative_to(dist)}" for path in built]
        for path in built:
            assert z.read(f"explorer/dist/{path.relative_to(dist)}") == path.read_bytes(), path


def test_package_build_refuses_an_unbuilt_explorer(tmp_path: Path) -> None:
    (tmp_path / "explorer" / "dist").mkdir(parents=True)
    (tmp_path / "explorer" / "dist" / "index.html").write_text("<!doctype html>")
    with pytest.raises(SystemExit, match=r"explorer page is not built \(explorer.js, explorer.css missing .*make explorer"):
        package_lambda.check_explorer_built(tmp_path)


def test_handler_answers_an_api_gateway_event_in_a_clean_venv(package: Path, tmp_path: Path) -> None:
    clean = tmp_path / "venv"
    venv.create(clean, with_pip=False)  # nothing installed: only the zip's contents, as on Lambda
    task_root = tmp_path / "task"
    with zipfile.ZipFile(package / package_lambda.ZIP_NAME) as z:
        z.extractall(task_root)
    events = [HEALTHZ_EVENT, http_api_event("/"), http_api_event("/explorer.js")]
    code = (
        "import json, sys\n"
        "from services.query.lambda_handler import handler\n"
        f"responses = [handler(event, None) for event in json.loads({json.dumps(json.dumps(events))})]\n"
        "print(json.dumps({'responses': responses, 'heavy': sorted(m for m in sys.modules if m.split('.')[0] in " + repr(FORBIDDEN) + ")}))\n"
    )
    done = subprocess.run(
        [str(clean / "bin" / "python"), "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=str(tmp_path),
        # As Lambda runs it: the task root on the path, no user site, the settings of the template.
        env={"PYTHONPATH": str(task_root), "PYTHONNOUSERSITE": "1", "WIDEVIEWS_HOME": str(tmp_path / "home"), "WIDEVIEWS_NAME_PREFIX": "wideviews", "WIDEVIEWS_REGION": "us-east-1", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["heavy"] == []
    health, page, script = result["responses"]
    assert health["statusCode"] == 200
    assert json.loads(health["body"]) == {"status": "ok"}
    # The explorer page behind API Gateway: / is its index.html, and its script is the built bundle.
    dist = PROJECT_ROOT / "explorer" / "dist"
    assert (page["statusCode"], page["headers"]["content-type"].split(";")[0]) == (200, "text/html")
    assert response_body(page) == (dist / "index.html").read_bytes()
    assert script["statusCode"] == 200
    assert response_body(script) == (dist / "explorer.js").read_bytes()
