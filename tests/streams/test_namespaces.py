"""Stream keys: a default-namespace stream keeps its bare name; others carry their namespace,
and no key of one form can equal one of the other."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from broker.streams.namespaces import (
    Namespace,
    is_stream_key,
    keys_for_arn,
    name_of,
    namespace_of,
    stream_arn,
    stream_key,
)

DEFAULT = Namespace(account_id="000000000000", region="us-east-1")
names = st.text(alphabet="abcXYZ019_.-", min_size=1, max_size=128)
namespaces = st.builds(
    Namespace,
    account_id=st.sampled_from(["000000000000", "111111111111", "222222222222"]),
    region=st.sampled_from(["us-east-1", "eu-west-1", "ap-southeast-2"]),
)


@given(names, namespaces)
def test_keys_round_trip(name: str, namespace: Namespace) -> None:
    key = stream_key(name, namespace, default=DEFAULT)
    assert name_of(key) == name
    assert namespace_of(key, default=DEFAULT) == namespace
    assert is_stream_key(key) == (namespace != DEFAULT)
    # The state machine finds the stream from its ARN without knowing the default.
    assert key in keys_for_arn(stream_arn(name, namespace))


@given(names, namespaces, names, namespaces)
def test_distinct_streams_have_distinct_keys(
    a: str, first: Namespace, b: str, second: Namespace
) -> None:
    if (a, first) != (b, second):
        assert stream_key(a, first, default=DEFAULT) != stream_key(b, second, default=DEFAULT)


def test_the_default_namespace_keeps_bare_names() -> None:
    # Images and journals written before namespaces keep their meaning.
    assert stream_key("orders", DEFAULT, default=DEFAULT) == "orders"
    other = Namespace(account_id="111111111111", region="eu-west-1")
    assert stream_key("orders", other, default=DEFAULT) == "111111111111/eu-west-1/orders"
    assert stream_arn("orders", other) == "arn:aws:kinesis:eu-west-1:111111111111:stream/orders"


def test_arns_that_name_no_stream_give_no_keys() -> None:
    assert keys_for_arn("arn:aws:kinesis:us-east-1:000000000000:stream/") == ()
    assert keys_for_arn("arn:aws:kinesis:us-east-1:000000000000:stream/a/b/c") == ()
    assert keys_for_arn("not an arn") == ()
