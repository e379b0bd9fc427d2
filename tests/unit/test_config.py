"""Config loading: Salt's names, warnings for unknown keys, one-line errors for wrong types."""

import logging
from pathlib import Path

import pytest

from saline.config import ConfigError, load_config, returner_names
from saline.returners.base import Option, Returner
from saline.returners.options import masked, resolve


def test_defaults_and_file_values(tmp_path: Path) -> None:
    (tmp_path / "master").write_text("ret_port: 5506\nkeep_jobs: 2\nmysql.host: db1\n")
    opts = load_config("master", tmp_path)
    assert opts["ret_port"] == 5506 and opts["publish_port"] == 4505
    assert opts["keep_jobs_seconds"] == 7200
    assert opts["mysql.host"] == "db1"


def test_unknown_key_warns_with_the_closest_name(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "minion").write_text("master_prot: 4506\n")
    with caplog.at_level(logging.WARNING):
        load_config("minion", tmp_path)
    assert "unknown option 'master_prot'" in caplog.text and "master_port" in caplog.text


def test_wrong_type_names_key_and_file(tmp_path: Path) -> None:
    (tmp_path / "master").write_text("ret_port: lots\n")
    with pytest.raises(ConfigError, match=r"master: option 'ret_port' must be int"):
        load_config("master", tmp_path)


def test_bad_yaml_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "master").write_text("a: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config("master", tmp_path)


def test_returner_names_dedupe_and_keep_order() -> None:
    assert returner_names("mysql, redis,mysql,") == ["mysql", "redis"]
    assert returner_names(["a", "b"]) == ["a", "b"]
    assert returner_names(None) == []


class _Demo(Returner):
    name = "demo"
    options = (Option("host", default="salt"), Option("pass", secret=True, default="salt"),
               Option("port", int, 3306))


def test_option_precedence_matches_salt() -> None:
    cfg = {"demo.host": "flat", "demo": {"port": "3307"}, "alt.demo.host": "alt-host",
           "alt": {"demo": {"pass": "alt-pass"}}, "demo.pass": "None"}
    assert resolve(_Demo, cfg) == {"host": "flat", "pass": "salt", "port": 3307}
    assert resolve(_Demo, cfg, "alt") == {"host": "alt-host", "pass": "alt-pass", "port": 3307}
    assert resolve(_Demo, cfg, "alt", {"port": 1})["port"] == 1
    with pytest.raises(ConfigError, match="unknown option 'nope'"):
        resolve(_Demo, cfg, None, {"nope": 1})
    with pytest.raises(ConfigError, match="option 'port' must be int"):
        resolve(_Demo, {"demo.port": "x"})


def test_secrets_are_masked() -> None:
    shown = masked(_Demo, resolve(_Demo, {"demo.pass": "hunter2"}))
    assert shown["pass"] != "hunter2" and "hunter2" not in repr(shown)
