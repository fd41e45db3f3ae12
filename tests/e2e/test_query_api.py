"""The read API: the Lambda handler we deploy answers API Gateway events exactly as the HTTP server
answers HTTP, and every malformed request is a 400/404 with a JSON message."""

from __future__ import annotations

import json
import uuid

import pytest

from cli.sample import sample_frames, write_upload_zip
from services.query.app import QueryApp
from services.query.lambda_handler import handler
from shared.config import Settings
from tests.e2e.reference import Reference, assert_aggregates_match, cli, http_json, query_url

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
def published(stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Reference]:
    matrix, metadata = sample_frames(250, 80, seed=21)
    path = write_upload_zip(tmp_path_factory.mktemp("api") / "api.zip", matrix, metadata)
    dataset_id = f"api-{uuid.uuid4().hex[:8]}"
    done = cli(stack, "upload", str(path), "--dataset", dataset_id, "--wait", "--timeout", "600")
    assert done.returncode == 0, done.stderr
    return dataset_id, Reference.from_zip(path)


def _rest_event(path: str, query: dict[str, str] | None = None) -> dict:
    return {
        "resource": "/{proxy+}",
        "path": path,
        "httpMethod": "GET",
        "queryStringParameters": query,
        "multiValueQueryStringParameters": {k: [v] for k, v in (query or {}).items()} or None,
        "requestContext": {"stage": "prod"},
    }


def _http_api_event(path: str, raw_query: str) -> dict:
    return {"version": "2.0", "rawPath": path, "rawQueryString": raw_query, "requestContext": {"http": {"method": "GET", "path": path}}}


def test_lambda_handler_answers_like_the_http_server(stack: Settings, published: tuple[str, Reference]) -> None:
    dataset_id, ref = published
    app = QueryApp(stack)
    features = ",".join(ref.matrix.columns[:30])
    params = {"grouping": "cell_type", "features": features, "stats": "mean,var,median,frac_expressing"}
    rest = handler(_rest_event(f"/v1/datasets/{dataset_id}/aggregates", params), None, app=app)
    assert rest["statusCode"] == 200 and rest["headers"]["Content-Type"] == "application/json"
    body = json.loads(rest["body"])
    assert_aggregates_match(body, ref, "cell_type")
    status, over_http = http_json(query_url(stack, f"/v1/datasets/{dataset_id}/aggregates", **params))
    assert status == 200 and over_http == body
    v2 = handler(_http_api_event(f"/v1/datasets/{dataset_id}/aggregates", f"grouping=cell_type&features={features}&stats=mean,var,median,frac_expressing"), None, app=app)
    assert json.loads(v2["body"]) == body
    missing = handler(_rest_event(f"/v1/datasets/{dataset_id}/features/NOPE/values"), None, app=app)
    assert missing["statusCode"] == 404 and "NOPE" in json.loads(missing["body"])["message"]


@pytest.mark.parametrize(
    ("path", "params", "status", "message"),
    [
        ("/v1/datasets/Bad:Id", {}, 400, "invalid dataset id"),
        ("/v1/datasets/a..b", {}, 400, "invalid dataset id"),
        ("/v1/datasets/{ds}/aggregates", {"grouping": "cell_type"}, 400, "features is required"),
        ("/v1/datasets/{ds}/aggregates", {"grouping": "cell_type", "features": ",".join(f"G{i}" for i in range(1001))}, 400, "at most 1000 features"),
        ("/v1/datasets/{ds}/aggregates", {"grouping": "cell_type", "features": "GENE00001", "stats": "mean,mode"}, 400, "unknown stats"),
        ("/v1/datasets/{ds}/aggregates", {"grouping": "cell_type", "features": "GENE\x01"}, 400, "invalid feature name"),
        ("/v1/datasets/{ds}/aggregates", {"grouping": "cell_type", "features": "X" * 2000}, 400, "invalid feature name"),
        ("/v1/datasets/{ds}/aggregates", {"grouping": "nope", "features": "GENE00001"}, 404, "grouping 'nope'"),
        ("/v1/datasets/{ds}/aggregates", {"grouping": "cell_type", "features": "GENE00001,NOPE"}, 404, "NOPE"),
        ("/v1/datasets/{ds}/aggregates", {"grouping": "cell_type", "features": "GENE00001", "version": "zz"}, 400, "32 hex"),
        ("/v1/datasets/{ds}/aggregates", {"grouping": "cell_type", "features": "GENE00001", "version": "0" * 32}, 404, "not available"),
        ("/v1/datasets/{ds}/nothing", {}, 404, "no route"),
        ("/v1/datasets/no-such-dataset-here", {}, 404, "not found"),
    ],
)
def test_malformed_requests_get_json_errors(stack: Settings, published: tuple[str, Reference], path: str, params: dict[str, str], status: int, message: str) -> None:
    dataset_id, _ = published
    got, body = http_json(query_url(stack, path.replace("{ds}", dataset_id), **params))
    assert got == status, body
    assert message in body["message"]


def test_dataset_listing_names_sizes_and_version(stack: Settings, published: tuple[str, Reference]) -> None:
    dataset_id, ref = published
    status, body = http_json(query_url(stack, "/v1/datasets"))
    assert status == 200
    entry = next(d for d in body["datasets"] if d["dataset"] == dataset_id)
    assert (entry["n_cells"], entry["n_features"]) == ref.matrix.shape
    assert len(entry["version"]) == 32
