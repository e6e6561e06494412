"""What the server-side apply tests share: the article's objects, fixed timestamps, and views of
managedFields (one entry; the fields each manager owns)."""

import copy
import pathlib

import yaml

from lab.apiserver.rest.ssa import managers

ARTICLE = pathlib.Path(__file__).resolve().parents[2] / "topologies" / "article"
T0, T1, T2 = "2024-05-01T10:00:00Z", "2024-05-01T11:00:00Z", "2024-05-01T12:00:00Z"


def article(name, kind):
    return next(d for d in yaml.safe_load_all((ARTICLE / f"{name}.yaml").read_text()) if d and d["kind"] == kind)


DEPLOYMENT = article("httpbin-ambient", "Deployment")


def deployment(**spec):
    d = copy.deepcopy(DEPLOYMENT)
    d["spec"].update(spec)
    return d


def containers(obj):
    return obj["spec"]["template"]["spec"]["containers"]


def entry(obj, manager, operation):
    return next(e for e in obj["metadata"]["managedFields"] if e["manager"] == manager and e["operation"] == operation)


def owned(obj):
    return {k: v["fields"] for k, v in managers(obj).items()}
