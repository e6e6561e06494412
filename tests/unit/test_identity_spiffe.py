import pytest

from mesh.identity.spiffe import Identity, InvalidIdentity

SLEEP = Identity("cluster.local", "default", "sleep")


def test_parse_gives_the_three_parts():
    assert Identity.parse("spiffe://cluster.local/ns/default/sa/sleep") == SLEEP


def test_str_is_the_uri_and_round_trips():
    uri = "spiffe://example.org/ns/bookinfo/sa/bookinfo-productpage"
    assert str(Identity.parse(uri)) == uri
    assert Identity.parse(str(SLEEP)) == SLEEP


def test_principal_is_the_authorization_policy_form():
    assert SLEEP.principal == "cluster.local/ns/default/sa/sleep"


def test_identities_are_hashable_and_ordered():
    other = Identity("cluster.local", "default", "httpbin")
    assert {SLEEP, Identity.parse(str(SLEEP))} == {SLEEP}
    assert sorted([SLEEP, other]) == [other, SLEEP]


@pytest.mark.parametrize(
    "uri",
    [
        "cluster.local/ns/default/sa/sleep",  # no scheme
        "SPIFFE://cluster.local/ns/default/sa/sleep",  # scheme is case-sensitive, as in ztunnel
        "https://cluster.local/ns/default/sa/sleep",
        "spiffe://cluster.local/ns/default/sa",  # four segments
        "spiffe://cluster.local/ns/default/sa/sleep/extra",  # six segments
        "spiffe://cluster.local/ns/default/sa/sleep/",  # trailing slash makes six
        "spiffe://cluster.local/namespace/default/sa/sleep",  # literal must be "ns"
        "spiffe://cluster.local/ns/default/serviceaccount/sleep",
        "spiffe://cluster.local/sa/sleep/ns/default",  # order matters
        "spiffe://cluster.local/NS/default/SA/sleep",
        "",
    ],
)
def test_parse_refuses_anything_but_the_exact_shape(uri):
    with pytest.raises(InvalidIdentity) as e:
        Identity.parse(uri)
    assert repr(uri) in str(e.value)


def test_invalid_identity_is_a_value_error():
    with pytest.raises(ValueError):
        Identity.parse("nope")


@pytest.mark.parametrize(
    "uri, parts",
    [
        ("spiffe:///ns/default/sa/sleep", ("", "default", "sleep")),  # empty trust domain
        ("spiffe://cluster.local/ns//sa/sleep", ("cluster.local", "", "sleep")),  # empty namespace
        ("spiffe://cluster.local/ns/default/sa/", ("cluster.local", "default", "")),  # empty service account
    ],
)
def test_empty_segments_parse_and_round_trip_as_in_ztunnel(uri, parts):
    # ztunnel's Identity::from_str checks only the prefix, the segment count and "ns"/"sa".
    assert Identity.parse(uri) == Identity(*parts)
    assert str(Identity(*parts)) == uri


@pytest.mark.parametrize("parts", [("td/x", "ns", "sa"), ("td", "a/b", "sa"), ("td", "ns", "s/a")])
def test_constructor_refuses_parts_that_break_the_uri(parts):
    with pytest.raises(InvalidIdentity):
        Identity(*parts)
