"""The cluster's options (saline.cluster.config): one line naming the option that is wrong, the
replicas a list of servers implies, and subject tokens for any minion id."""

from __future__ import annotations

from pathlib import Path

import pytest

from saline.cluster.config import ClusterError, escape_token, from_opts, unescape_token


def test_no_nats_servers_is_a_single_master() -> None:
    assert from_opts({"cluster_id": "prod"}) is None


@pytest.mark.parametrize("opts, says", [
    ({"nats_servers": ["n1:4222"], "cluster_id": "prod"}, "option 'nats_servers': 'n1:4222' is not a nats://"),
    ({"nats_servers": [4222], "cluster_id": "prod"}, "option 'nats_servers' must be a list"),
    ({"nats_servers": ["nats://n1:4222"]}, "option 'cluster_id' must be set with nats_servers"),
    ({"nats_servers": ["nats://n1:4222"], "cluster_id": "a.b"}, "option 'cluster_id' must be set"),
    ({"nats_servers": ["nats://n1:4222"], "cluster_id": "p", "nats_replicas": 2}, "'nats_replicas' must be 1, 3 or 5"),
    ({"nats_servers": ["nats://n1:4222"], "cluster_id": "p", "nats_tls_ca": "/nonexistent/ca.pem"},
     "option 'nats_tls_ca': /nonexistent/ca.pem is not a readable file"),
])
def test_a_wrong_option_is_one_line_naming_it(opts: dict, says: str) -> None:
    with pytest.raises(ClusterError) as raised:
        from_opts(opts)
    assert says in str(raised.value) and "\n" not in str(raised.value)


def test_cert_and_key_go_together(tmp_path: Path) -> None:
    cert = tmp_path / "c.pem"
    cert.write_text("x")
    with pytest.raises(ClusterError, match="'nats_tls_cert' and 'nats_tls_key' go together"):
        from_opts({"nats_servers": ["tls://n1:4222"], "cluster_id": "p", "nats_tls_cert": str(cert)})


@pytest.mark.parametrize("servers, replicas", [
    (["nats://n1:4222"], 1),
    ("nats://n1:4222, nats://n2:4222", 3),  # two of a three-node cluster's nodes named
    (["nats://n1:4222", "nats://n2:4222", "nats://n3:4222", "nats://n4:4222"], 3),
])
def test_replicas_follow_the_servers_unless_set(servers: object, replicas: int) -> None:
    config = from_opts({"nats_servers": servers, "cluster_id": "prod"})
    assert config is not None and config.replicas == replicas
    assert from_opts({"nats_servers": servers, "cluster_id": "prod", "nats_replicas": 5}).replicas == 5


def test_timeouts_from_the_options_with_their_defaults() -> None:
    config = from_opts({"nats_servers": "nats://n1:4222", "cluster_id": "prod"})
    assert config is not None and (config.connect_timeout, config.setup_timeout) == (5.0, 60.0)
    config = from_opts({"nats_servers": "nats://n1:4222", "cluster_id": "prod", "nats_connect_timeout": 2,
                        "nats_setup_timeout": 90})
    assert config is not None and (config.connect_timeout, config.setup_timeout) == (2.0, 90.0)


def test_names_carry_the_cluster_id() -> None:
    config = from_opts({"nats_servers": ["nats://n1:4222"], "cluster_id": "prod"})
    assert config.stream == "SALINE_prod" and config.dead_stream == "SALINE_prod_DEAD"
    assert config.records_subject == "saline.prod.rec.>" and config.inbox_prefix == "_INBOX_prod"
    assert config.buckets() == [f"saline_prod_{b}" for b in ("keys", "jobs", "routes", "stats", "masters", "presence")]
    assert config.records_stream(3600)["max_age"] == 3600.0 and config.records_stream(60)["duplicate_window"] == 60.0


@pytest.mark.parametrize("mid", ["web1", "web1.example.com", "a*b>c", "with space", "100%", "é-ü", "", "tab\tx"])
def test_any_minion_id_is_one_subject_token_and_comes_back(mid: str) -> None:
    token = escape_token(mid)
    assert token and not any(c in token for c in ".*> \t") and unescape_token(token) == (mid or "\x00")
