"""Signaling channels on a 3-node cluster of real processes (broker/video/signaling*.py).

A channel's sessions live on its home node, which every node computes alike from the metadata
(rendezvous hashing over the ACTIVE nodes): GetSignalingChannelEndpoint asked on any node names
the same endpoint, so a master and a viewer that asked different nodes meet there, and a
WebSocket opened on another node is refused with a 400 that names the home. When the home is
killed (SIGKILL) and fenced, the endpoint moves to a survivor, and clients that reconnect
through GetSignalingChannelEndpoint (as the KVS SDKs do when their socket closes) meet again.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.parse
from typing import Any

import boto3
import botocore.config
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.support import ClusterProcesses, wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def _kvs(port: int) -> Any:
    return boto3.client(
        "kinesisvideo",
        endpoint_url=f"http://127.0.0.1:{port}",
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="y",
        config=botocore.config.Config(retries={"total_max_attempts": 1}, read_timeout=10),
    )


def _endpoint(port: int, arn: str, role: str) -> str:
    answer = _kvs(port).get_signaling_channel_endpoint(
        ChannelARN=arn,
        SingleMasterChannelEndpointConfiguration={"Protocols": ["WSS"], "Role": role},
    )
    endpoint: str = answer["ResourceEndpointList"][0]["ResourceEndpoint"]
    return endpoint


def _url(endpoint: str, arn: str, client_id: str | None = None) -> str:
    query = {"X-Amz-ChannelARN": arn}
    if client_id:
        query["X-Amz-ClientId"] = client_id
    return f"{endpoint}/?{urllib.parse.urlencode(query)}"


def _offer_reaches_master(master_endpoint: str, viewer_endpoint: str, arn: str) -> None:
    with (
        connect(_url(master_endpoint, arn), open_timeout=10) as master,
        connect(_url(viewer_endpoint, arn, "viewer"), open_timeout=10) as viewer,
    ):
        payload = base64.b64encode(b'{"type":"offer","sdp":"v=0"}').decode()
        viewer.send(json.dumps({"action": "SDP_OFFER", "messagePayload": payload}))
        got = json.loads(master.recv(timeout=10))
        assert (got["senderClientId"], got["messagePayload"]) == ("viewer", payload)


def test_a_channel_is_served_by_one_home_node_that_moves_when_it_dies(
    cluster: ClusterProcesses,
) -> None:
    ports = [node.http_port for node in cluster.nodes]
    arn = _kvs(ports[0]).create_signaling_channel(ChannelName="door")["ChannelARN"]
    wait_until(
        lambda: all(
            "door" in str(_kvs(port).list_signaling_channels()["ChannelInfoList"]) for port in ports
        ),
        deadline_s=30,
        what="every node to see the channel",
    )
    homes = {_endpoint(port, arn, role) for port in ports for role in ("MASTER", "VIEWER")}
    assert len(homes) == 1, homes
    (home,) = homes
    home_port = int(home.rsplit(":", 1)[1])
    others = [port for port in ports if port != home_port]
    # The master asked one node, the viewer another: they meet at the home.
    _offer_reaches_master(
        _endpoint(others[0], arn, "MASTER"), _endpoint(others[1], arn, "VIEWER"), arn
    )
    with pytest.raises(InvalidStatus) as refused:
        connect(_url(f"ws://127.0.0.1:{others[0]}", arn, "lost"), open_timeout=10)
    assert refused.value.response.status_code == 400
    assert f"127.0.0.1:{home_port}".encode() in refused.value.response.body  # names the home

    victim = next(node for node in cluster.nodes if node.http_port == home_port)
    victim.kill()
    deadline = time.monotonic() + 60

    def moved() -> bool:
        try:
            return _endpoint(others[0], arn, "MASTER") != home
        except Exception:
            return False  # a survivor may be electing a new metadata leader

    wait_until(moved, deadline_s=max(1.0, deadline - time.monotonic()), what="a new home")
    new_home = _endpoint(others[1], arn, "VIEWER")
    assert new_home == _endpoint(others[0], arn, "MASTER") != home
    _offer_reaches_master(new_home, new_home, arn)
