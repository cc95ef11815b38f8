"""Property-based fuzzing of the API from its own OpenAPI document (schemathesis, via WSGI).

schemathesis reads /openapi.json from the app and generates requests for every operation, both
valid ones (positive) and ones that break the documented schema (negative: wrong types,
out-of-range numbers, pattern violations, odd strings). Whatever it sends, the API must never
answer 5xx, and every answer must match what the document promises (status code, content
type, body schema).

The operations are listed from api/openapi.yaml at collection time, and each test builds its
hypothesis strategy from the schema the live app serves. (schemathesis.pytest.from_fixture,
the usual way to get a fixture-built app, does not work with this pytest version.)
"""

from pathlib import Path

import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from schemathesis import GenerationMode
from schemathesis.checks import negative_data_rejection
from schemathesis.checks import positive_data_acceptance

from adclick import access
from api import create_app
from tests.api_fixtures import chdb_url  # noqa: F401 - a fixture
from tests.api_fixtures import fresh_database
from tests.api_fixtures import load_dataset

DB = "t_api_fuzz"
EXAMPLES = 100
OPENAPI = yaml.safe_load((Path(__file__).resolve().parent.parent / "api" / "openapi.yaml")
                         .read_text())
OPERATIONS = [(path, method.upper(), mode) for path, item in OPENAPI["paths"].items()
              for method, operation in item.items()
              if method in ("get", "post", "put", "patch", "delete")
              # An operation without inputs has nothing to break: no negative cases exist.
              for mode in ([GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
                           if operation.get("parameters") or operation.get("requestBody")
                           else [GenerationMode.POSITIVE])]
# Two checks are off, every other check of schemathesis is on:
# - positive_data_acceptance: the document cannot express the API's cross-parameter rules (from
#   needs to, not both minutes and from, from < to, span <= 1440) nor which strings are valid
#   SQL, so a schema-valid request may rightly get a 400.
# - negative_data_rejection: a negative case whose only flaw is a missing Authorization header
#   gets the real key back from call(headers=...), so a valid request is reported as "invalid
#   data accepted" (seen as ST201 on `?count=1`). The 400 rules are pinned by test_api instead.
EXCLUDED_CHECKS = [positive_data_acceptance, negative_data_rejection]


@pytest.fixture(scope="module")
def fuzz_app(chdb_url):  # noqa: F811
    client = fresh_database(chdb_url, DB)
    load_dataset(client, DB)
    app = create_app({"CLICKHOUSE_URL": chdb_url, "DATABASE": DB, "QUERY_TIMEOUT_S": 2,
                      "RATE_LIMIT_PER_S": 0, "MAX_CONCURRENT_PER_KEY": 0})
    return app, access.create_key(client, DB, "fuzz", "admin")[0]


@pytest.fixture(scope="module")
def served_schema(fuzz_app):
    app, _ = fuzz_app
    return schemathesis.openapi.from_wsgi("/openapi.json", app)


@pytest.mark.parametrize("path,method,mode", OPERATIONS,
                         ids=[f"{m} {p} {mode.value}" for p, m, mode in OPERATIONS])
def test_api_conforms_and_never_fails(served_schema, fuzz_app, path, method, mode):
    _, key = fuzz_app
    headers = {"Authorization": f"Bearer {key}"}
    strategy = served_schema[path][method].as_strategy(generation_mode=mode)

    @given(case=strategy)
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck),
              database=None)
    def check(case):
        # Given as the call's headers, schemathesis knows the key is real and probes the
        # operation again without it and with a spoiled one, expecting 401 then.
        response = case.call(headers=headers)
        assert response.status_code < 500, (case.path_parameters, case.query, case.body,
                                            response.text[:500])
        case.validate_response(response, headers=headers, excluded_checks=EXCLUDED_CHECKS)

    check()
