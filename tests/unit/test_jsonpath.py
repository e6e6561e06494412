"""kubectl's jsonpath templates: paths, ranges, filters, printing and kubectl's error messages."""

import pytest

from lab.cli.jsonpath import JSONPathError, render


def pod(name, phase, app=None, ip=None, containers=("main",)):
    meta = {"name": name, "namespace": "ambient-apps"}
    if app:
        meta["labels"] = {"app": app, "app.kubernetes.io/name": app}
    status = {"phase": phase}
    if ip:
        status["podIP"] = ip
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {"containers": [{"name": c, "image": "curlimages/curl"} for c in containers], "restartCount": 0},
        "status": status,
    }


def failure(template: str, data=None, **options) -> str:
    """The message of the JSONPathError rendering TEMPLATE raises (over PODS by default)."""
    with pytest.raises(JSONPathError) as info:
        render(template, PODS if data is None else data, **options)
    return str(info.value)


PODS = {
    "apiVersion": "v1",
    "kind": "List",
    "items": [
        pod("sleep-ambient-7d4", "Running", app="sleep-ambient", ip="10.244.0.5", containers=("sleep",)),
        pod(
            "httpbin-legacy-5c8",
            "Running",
            app="httpbin-legacy",
            ip="10.244.1.7",
            containers=("httpbin", "istio-proxy"),
        ),
        pod("rogue-client-9f1", "Pending"),
    ],
}


@pytest.mark.parametrize(
    "template, expected",
    [
        ("{.items[0].metadata.name}", "sleep-ambient-7d4"),
        ("{.kind}", "List"),
        ("{.items[*].metadata.name}", "sleep-ambient-7d4 httpbin-legacy-5c8 rogue-client-9f1"),
        ("{.items[-1].metadata.name}", "rogue-client-9f1"),
        ("{.items[-2].metadata.name}", "httpbin-legacy-5c8"),
        ("{.items[0:2].metadata.name}", "sleep-ambient-7d4 httpbin-legacy-5c8"),
        ("{.items[1:].metadata.name}", "httpbin-legacy-5c8 rogue-client-9f1"),
        ("{.items[:1].metadata.name}", "sleep-ambient-7d4"),
        ("{.items[::2].metadata.name}", "sleep-ambient-7d4 rogue-client-9f1"),
        ("{.items[0,2].metadata.name}", "sleep-ambient-7d4 rogue-client-9f1"),
        ("{.items[1].spec.containers[*].name}", "httpbin istio-proxy"),
        ("{.items[1].metadata.labels.*}", "httpbin-legacy httpbin-legacy"),
        (
            "{.items[0].metadata.*}",
            'sleep-ambient-7d4 ambient-apps {"app":"sleep-ambient","app.kubernetes.io/name":"sleep-ambient"}',
        ),
        ("{..podIP}", "10.244.0.5 10.244.1.7"),
        ("{.items[1]..name}", "httpbin-legacy-5c8 httpbin istio-proxy"),
        ('{.items[?(@.status.phase=="Running")].metadata.name}', "sleep-ambient-7d4 httpbin-legacy-5c8"),
        ("{.items[?(@.status.phase!='Running')].metadata.name}", "rogue-client-9f1"),
        ("{.items[?(@.metadata.labels.app)].metadata.name}", "sleep-ambient-7d4 httpbin-legacy-5c8"),
        ('{.items[?(@.metadata.labels.app=="httpbin-legacy")].status.podIP}', "10.244.1.7"),
        ("{.items[0].metadata.labels['app.kubernetes.io/name']}", "sleep-ambient"),
        ('{.items[0].metadata.labels["app.kubernetes.io/name"]}', "sleep-ambient"),
        ("{.items[0].metadata.labels.app\\.kubernetes\\.io/name}", "sleep-ambient"),
        ("{.items[0]['metadata']['name']}", "sleep-ambient-7d4"),
        ("{@.kind}", "List"),
        ("{$.items[0].status.phase}", "Running"),
        ("{ .items[0].status.phase }", "Running"),
        # literals and text around the actions
        ('{"\\t"}', "\t"),
        ('{"\\n"}', "\n"),
        ("{'a\\'b'}", "a'b"),
        ('{"{}"}', "{}"),
        ('{"\\u00e9\\x41"}', "\u00e9A"),
        ("kind is {.kind}!", "kind is List!"),
        ('{.kind}{" "}{.apiVersion}', "List v1"),
    ],
)
def test_paths_literals_and_text(template, expected):
    assert render(template, PODS) == expected


def test_the_articles_pod_name_lookup():
    template = "{.items[0].metadata.name}"
    only_sleep = {"kind": "List", "items": [PODS["items"][0]]}
    assert render(template, only_sleep) == "sleep-ambient-7d4"


def test_range_repeats_its_body_with_each_item_as_the_current_object():
    template = '{range .items[*]}{.metadata.name}{"\\t"}{.status.phase}{"\\n"}{end}'
    assert render(template, PODS) == (
        "sleep-ambient-7d4\tRunning\nhttpbin-legacy-5c8\tRunning\nrogue-client-9f1\tPending\n"
    )


def test_plain_text_inside_range_and_after_end():
    template = "{range .items[*]}[{.metadata.name}] {end}done"
    assert render(template, PODS) == ("[sleep-ambient-7d4] [httpbin-legacy-5c8] [rogue-client-9f1] done")


def test_nested_ranges():
    template = '{range .items[*]}{.metadata.name}:{range .spec.containers[*]} {.name}{end}{"\\n"}{end}'
    assert render(template, PODS) == (
        "sleep-ambient-7d4: sleep\nhttpbin-legacy-5c8: httpbin istio-proxy\nrogue-client-9f1: main\n"
    )


def test_range_over_nothing_still_renders_what_follows():
    assert render('{range .items[*]}{.metadata.name}{end}{"none"}', {"items": []}) == "none"


def test_a_range_without_end_runs_to_the_end_of_the_template():
    assert render("{range .items[*]}{.metadata.name};", PODS) == (
        "sleep-ambient-7d4;httpbin-legacy-5c8;rogue-client-9f1;"
    )


@pytest.mark.parametrize("template", [".items[0].metadata.name", "items[0].metadata.name"])
def test_a_template_without_braces_is_one_relaxed_path(template):
    assert render(template, PODS) == "sleep-ambient-7d4"


def test_relaxed_recursive_descent():
    assert render("..podIP", PODS) == "10.244.0.5 10.244.1.7"


@pytest.mark.parametrize(
    "value, expected",
    [
        ("text", "text"),
        (3, "3"),
        (0, "0"),
        (True, "true"),
        (False, "false"),
        (0.5, "0.5"),
        (3.0, "3"),
        (1e6, "1e+06"),
        (123456.0, "123456"),
        (1.5e-05, "1.5e-05"),
        (None, "<nil>"),
        ({"b": 1, "a": [1, "x"]}, '{"a":[1,"x"],"b":1}'),
        ([{"ip": "10.0.0.1"}], '[{"ip":"10.0.0.1"}]'),
        ({"html": "<a&b>"}, '{"html":"\\u003ca\\u0026b\\u003e"}'),
        ({"name": "caf\u00e9"}, '{"name":"caf\u00e9"}'),
    ],
)
def test_values_print_as_kubectl_prints_them(value, expected):
    assert render("{.v}", {"v": value}) == expected


def test_numbers_and_booleans_in_filters():
    data = {
        "items": [
            {"n": "a", "replicas": 1, "ready": True},
            {"n": "b", "replicas": 3, "ready": False},
            {"n": "c", "replicas": 2.5},
        ]
    }
    assert render("{.items[?(@.replicas>1)].n}", data) == "b c"
    assert render("{.items[?(@.replicas<=1)].n}", data) == "a"
    assert render("{.items[?(@.replicas>=2.5)].n}", data) == "b c"
    assert render("{.items[?(@.replicas==3)].n}", data) == "b"
    assert render("{.items[?(@.ready==true)].n}", data) == "a"
    assert render("{.items[?(@.ready!=true)].n}", data) == "b"  # c has no `ready`


def test_filters_compare_two_fields_of_an_item():
    data = {
        "items": [
            {"n": "ok", "spec": {"replicas": 2}, "status": {"readyReplicas": 2}},
            {"n": "short", "spec": {"replicas": 2}, "status": {"readyReplicas": 1}},
        ]
    }
    assert render("{.items[?(@.status.readyReplicas==@.spec.replicas)].n}", data) == "ok"


def test_filter_on_conditions_like_kubectl_wait():
    node = {
        "status": {"conditions": [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "True"}]}
    }
    assert render('{.status.conditions[?(@.type=="Ready")].status}', node) == "True"


def test_missing_keys_print_nothing_by_default_like_kubectl_get():
    assert render("{.items[0].metadata.annotations}", PODS) == ""
    assert render("name={.metadata.nope}.", {"metadata": {}}) == "name=."
    assert render("{.items[*].status.podIP}", PODS) == "10.244.0.5 10.244.1.7"


def test_missing_keys_are_errors_when_not_allowed():
    assert failure("{.items[0].metadata.annotations}", allow_missing_keys=False) == (
        'error: error executing jsonpath "{.items[0].metadata.annotations}": '
        "Error executing template: annotations is not found"
    )


def test_filters_skip_items_missing_the_compared_key():
    template = "{.items[?(@.status.podIP=='10.244.1.7')].metadata.name}"
    assert render(template, PODS) == "httpbin-legacy-5c8"


def test_strict_filters_fail_on_a_missing_compared_key_but_existence_tests_never_do():
    template = "{.items[?(@.status.podIP=='10.244.1.7')].metadata.name}"
    with pytest.raises(JSONPathError, match="Error executing template: podIP is not found$"):
        render(template, PODS, allow_missing_keys=False)
    exists = "{.items[?(@.metadata.labels)].metadata.name}"
    assert render(exists, PODS, allow_missing_keys=False) == "sleep-ambient-7d4 httpbin-legacy-5c8"


def test_index_out_of_range_is_kubectls_error():
    assert failure("{.items[0].metadata.name}", {"kind": "List", "items": []}) == (
        'error: error executing jsonpath "{.items[0].metadata.name}": '
        "Error executing template: array index out of bounds: index 0, length 0"
    )


EXECUTING, PARSING = "error executing jsonpath \"{}\": Error executing template: {}", "error parsing jsonpath {}, {}"


@pytest.mark.parametrize(
    "stage, template, detail",
    [
        (EXECUTING, "{.items[3]}", "array index out of bounds: index 3, length 3"),
        (EXECUTING, "{.items[-4]}", "array index out of bounds: index -1, length 3"),
        (EXECUTING, "{.items[0:5]}", "array index out of bounds: index 4, length 3"),
        (EXECUTING, "{.items[2:1]}", "starting index 2 is greater than ending index 1"),
        (EXECUTING, "{.items[0:2:0]}", "step must be > 0"),
        (EXECUTING, "{.kind[0]}", "string is not array or slice"),
        (EXECUTING, "{.items[0].metadata[0]}", "map[string]interface {} is not array or slice"),
        (EXECUTING, "{.kind[?(@.x=='y')]}", "List is not array or slice and cannot be filtered"),
        (EXECUTING, "{.items[?(@.spec.containers[*].name=='x')]}", "can only compare one element at a time"),
        (EXECUTING, "{.items[?(@.metadata.name>1)]}", "incompatible types for comparison"),
        (EXECUTING, "{.items[?(@.metadata>1)]}", "invalid type for comparison"),
        (PARSING, "{.items[0].metadata.name", "unclosed action"),
        (PARSING, "{end}", "not in range, nothing to end"),
        (PARSING, "{metadata.name}", "unrecognized identifier metadata"),
        (PARSING, "{.items[?(@.a=1)]}", "unrecognized filter operator ="),
        (PARSING, "{.items[?(@.a==1]}", "unterminated filter"),
        (PARSING, "{.items[x]}", "invalid array index x"),
        (PARSING, "{.items[]}", "invalid array index "),
        (PARSING, "{.a....b}", "invalid multiple recursive descent"),
        (PARSING, '{"abc}', "unterminated quoted string"),
        (PARSING, "{.a !}", "unrecognized character in action: U+0021 '!'"),
    ],
)
def test_execution_and_parse_errors(stage, template, detail):
    assert failure(template) == "error: " + stage.format(template, detail)


def test_error_messages_quote_the_template_like_go():
    assert failure('{.items[5]}{"\\n"}').startswith('error: error executing jsonpath "{.items[5]}{\\"\\\\n\\"}": ')


def test_an_empty_slice_is_not_an_error():
    assert render("{.items[*].metadata.name}", {"items": []}) == ""
    assert render("{.items[1:1]}", PODS) == ""


def test_empty_template():
    with pytest.raises(JSONPathError, match="^error: template format specified but no template given$"):
        render("", PODS)
