"""SQL returners bind parameters: hostile text in a return, in the function's arguments and in
what the minion itself produces is stored as text by a real job to the mysql returner."""

from __future__ import annotations

import json
import re
from typing import Callable

import pymysql
import pytest

from tests.faults.conftest import Cluster, figure, logs, wait_for
from tests.faults.test_backend_outage import salt_user

pytestmark = pytest.mark.e2e

HOSTILE = "'); DROP TABLE salt_returns; --"
MORE = ["\\'; DELETE FROM jids; #", "\" OR \"1\"=\"1", "x` ; DROP TABLE `jids", "%s %(x)s {0}", "--; /* */"]


def _rows(db: dict, sql: str, args: tuple = ()) -> list[tuple]:
    conn = pymysql.connect(host=db["host"], port=db["port"], user=db["user"], password=db["pass"], database=db["db"])
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return list(cur.fetchall())
    finally:
        conn.close()


def test_hostile_text_is_stored_as_text(make_cluster: Callable[..., Cluster], mysql_db: dict) -> None:
    db = salt_user(mysql_db)
    cluster = make_cluster({"return": "mysql", "event_return": "mysql", "mysql.host": db["host"],
                            "mysql.port": db["port"], "mysql.user": db["user"], "mysql.pass": db["pass"],
                            "mysql.db": db["db"], "mysql.create_schema": True})
    cluster.start_master()
    cluster.start_minions("m1")
    jids = []
    # in the return and the arguments
    echo = cluster.cli("saline", "m1", "test.echo", HOSTILE, "-v")
    assert echo.returncode == 0, echo.stderr
    jids.append(re.search(r"jid (\d{20})", echo.stdout).group(1))
    args = cluster.cli("saline", "m1", "test.arg", *MORE, "-v")
    jids.append(re.search(r"jid (\d{20})", args.stdout).group(1))
    # produced by the minion itself (a command's output), not typed on the master
    made = cluster.cli("saline", "m1", "cmd.run", "printf '%s' \"');\" ' DROP TABLE salt_returns; --'", "-v")
    jids.append(re.search(r"jid (\d{20})", made.stdout).group(1))
    rows = wait_for(lambda: len(r := _rows(db, "SELECT jid, `return`, full_ret FROM salt_returns")) >= 3 and r,
                    30, "three rows in salt_returns")
    by_jid = {jid: (ret, full) for jid, ret, full in rows}
    assert json.loads(by_jid[jids[0]][0]) == HOSTILE
    assert json.loads(by_jid[jids[0]][1])["fun_args"] == [HOSTILE]
    from saline.modules.args import parse_cli_args

    assert json.loads(by_jid[jids[1]][0])["args"] == parse_cli_args(MORE)  # as typed, read as Salt reads it
    assert json.loads(by_jid[jids[2]][0]) == HOSTILE
    # the tables are all there, with what they should hold
    tables = {r[0] for r in _rows(db, "SHOW TABLES")}
    assert {"jids", "salt_returns", "salt_events"} <= tables, tables
    loads = _rows(db, "SELECT `load` FROM jids WHERE jid = %s", (jids[0],))
    assert json.loads(loads[0][0])["arg"] == [HOSTILE]
    events = _rows(db, "SELECT COUNT(*) FROM salt_events WHERE data LIKE %s", (f"%{HOSTILE[:10]}%",))[0][0]
    assert events >= 2, logs(cluster)
    figure("sql_injection", hostile_values=1 + len(MORE) + 1, rows=len(rows), tables_intact=True,
           events_with_text=events)
