"""What the validation tests share: the article's manifests (read from topologies/article, the one
copy of them), helpers that load a manifest and return its error line, and kubectl's wording of the
name rules, spelled out once."""

import pathlib

import pytest

from lab.apiserver.validation import ManifestError, load
from lab.runtime import images

ARTICLE = pathlib.Path(__file__).resolve().parents[2] / "topologies" / "article"


def article(*names: str) -> str:
    """The article's manifest files, verbatim, joined as one multi-document YAML text."""
    return "---\n".join((ARTICLE / f"{name}.yaml").read_text() for name in names)


HTTPBIN_LEGACY = article("httpbin-legacy")
HTTPBIN_AMBIENT = article("httpbin-ambient")
SLEEP_AMBIENT = article("sleep-ambient")
ROGUE_CLIENT = article("rogue-client")
MESH_POLICIES = article("waypoint", "jwt-policy", "l7-authz-policy")

KNOWN_IMAGES = ", ".join(images.known_images())

# The API server's messages for the name rules (k8s.io/apimachinery/pkg/util/validation).
LABEL_RULE = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
    "and must start and end with an alphanumeric character (e.g. 'my-name', or '123-abc')"
)
SUBDOMAIN_RULE = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' "
    "or '.', and must start and end with an alphanumeric character (e.g. 'example.com')"
)
LABEL_VALUE_RULE = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' "
    "or '.', and must start and end with an alphanumeric character (e.g. 'MyValue', or "
    "'my_value', or '12345')"
)
NAME_PART_RULE = (
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
    "alphanumeric character (e.g. 'MyName', or 'my.name', or '123-abc')"
)


def refused(text: str, source: str = "test.yaml") -> ManifestError:
    with pytest.raises(ManifestError) as info:
        load(text, source)
    return info.value


def one_line(text: str, source: str = "test.yaml") -> str:
    """The error line of input with exactly one problem."""
    error = refused(text, source)
    assert len(error.problems) == 1, error.lines()
    return str(error)


def deployment(
    container: str = "", *, extra_spec: str = "", labels: str = "app: web", selector: str = "matchLabels: {app: web}"
) -> str:
    container = container or "{name: web, image: busybox}"
    return f"""\
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: apps}}
spec:
  selector: {{{selector}}}
{extra_spec}  template:
    metadata:
      labels: {{{labels}}}
    spec:
      containers:
      - {container}
"""


def service_doc(spec: str, name: str = "web") -> str:
    return f"apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec: {spec}\n"
