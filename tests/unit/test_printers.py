"""kubectl-shaped output: ages, -o yaml/json/name, and the columns a kind's table offers.

Per-kind tables are in test_printers_tables.py, describe in test_printers_describe.py."""

import json

import pytest
import yaml

from lab.cli import printers
from lab.cli.printers import age, human_duration, names
from tests.unit.printer_samples import NOW, POLICY, POLICY_SPEC_LINES, ago, out

# --- age ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "seconds, expected",
    [
        (0, "0s"),
        (45, "45s"),
        (119, "119s"),
        (120, "2m"),
        (125, "2m5s"),
        (300, "5m"),
        (599, "9m59s"),
        (600, "10m"),
        (179 * 60 + 59, "179m"),
        (3 * 3600, "3h"),
        (3 * 3600 + 10 * 60, "3h10m"),
        (8 * 3600 - 1, "7h59m"),
        (8 * 3600, "8h"),
        (47 * 3600, "47h"),
        (48 * 3600, "2d"),
        (3 * 86400 + 4 * 3600, "3d4h"),
        (7 * 86400 + 23 * 3600, "7d23h"),
        (8 * 86400, "8d"),
        (400 * 86400, "400d"),
        (729 * 86400, "729d"),
        (730 * 86400, "2y"),
        (800 * 86400, "2y70d"),
        (8 * 365 * 86400, "8y"),
        (-1.5, "0s"),
        (-2, "<invalid>"),
    ],
)
def test_human_duration_is_kubectls(seconds, expected):
    assert human_duration(seconds) == expected


def test_age_from_timestamps():
    assert age(ago(seconds=45), NOW) == "45s"
    assert age(ago(minutes=2, seconds=5), NOW) == "2m5s"
    assert age(ago(days=400), NOW) == "400d"
    assert age("2024-05-01T11:59:59.900000Z", NOW) == "0s"
    assert age("2024-05-01T13:59:00+02:00", NOW) == "60s"
    assert age(None, NOW) == "<unknown>"
    assert age("", NOW) == "<unknown>"


def test_a_naive_now_is_taken_as_utc():
    assert age(ago(minutes=5), NOW.replace(tzinfo=None)) == "5m"


# --- -o yaml, -o json, -o name ------------------------------------------------------------------


def test_to_yaml_is_block_style_in_insertion_order():
    assert printers.to_yaml(POLICY) == out(
        "apiVersion: security.istio.io/v1beta1",
        "kind: AuthorizationPolicy",
        "metadata:",
        "  name: require-sleep-identity",
        "  namespace: ambient-apps",
        "spec:",
        *POLICY_SPEC_LINES,
    )


def test_to_yaml_scalars_round_trip():
    data = {
        "script": "echo hi\necho there\n",
        "port": "8080",
        "empty": {},
        "none": [],
        "long": "x" * 300,
        "flag": True,
        "n": 3,
    }
    text = printers.to_yaml(data)
    assert "script: |\n  echo hi\n  echo there\n" in text
    assert "port: '8080'\n" in text
    assert "empty: {}\nnone: []\n" in text
    assert f"long: {'x' * 300}\n" in text
    assert yaml.safe_load(text) == data


def test_to_json_is_indented_by_four():
    assert printers.to_json({"a": {"b": [1, "caf\u00e9"]}}) == out(
        "{", '    "a": {', '        "b": [', "            1,", '            "caf\u00e9"', "        ]", "    }", "}"
    )
    assert json.loads(printers.to_json(POLICY)) == POLICY


def test_names_use_kubectls_resource_prefixes():
    objects = [
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "sleep"}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "httpbin"}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "httpbin"}},
        POLICY,
        {"apiVersion": "gateway.networking.k8s.io/v1beta1", "kind": "Gateway", "metadata": {"name": "waypoint"}},
        {"metadata": {"name": "no-type-meta"}},
    ]
    assert names("Deployment", objects) == out(
        "pod/sleep",
        "deployment.apps/httpbin",
        "service/httpbin",
        "authorizationpolicy.security.istio.io/require-sleep-identity",
        "gateway.gateway.networking.k8s.io/waypoint",
        "deployment.apps/no-type-meta",
    )
    assert names("Pod", []) == ""
