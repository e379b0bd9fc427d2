"""The mysql returner over TLS, against a private MariaDB of the test's own that has TLS on.

The shared MariaDB here runs without TLS, so this test starts one in a temporary folder with a
CA and a server certificate made by openssl, and a user that the server admits only over TLS.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pymysql
import pytest

from saline.jid import gen_jid
from saline.localcluster import free_port
from saline.returners import registry
from saline.returners.base import ReturnerError


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def _certificates(folder: Path) -> dict[str, Path]:
    ca_key, ca, key, csr, cert = (folder / n for n in ("ca.key", "ca.pem", "server.key", "server.csr", "server.pem"))
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=saline test CA",
             "-keyout", str(ca_key), "-out", str(ca))
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(csr))
    ext = folder / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
             "-days", "2", "-extfile", str(ext), "-out", str(cert))
    return {"ca": ca, "cert": cert, "key": key}


@pytest.fixture(scope="module")
def tls_mariadb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    root = tmp_path_factory.mktemp("tls-mariadb")
    certs = _certificates(root)
    data = root / "data"
    subprocess.run(["mariadb-install-db", "--no-defaults", f"--datadir={data}", "--user=root",
                    "--auth-root-authentication-method=normal", "--skip-test-db"],
                   check=True, capture_output=True, timeout=120)
    port = free_port()
    proc = subprocess.Popen(["mariadbd", "--no-defaults", f"--datadir={data}", f"--port={port}",
                             "--bind-address=127.0.0.1", f"--socket={root / 'sock'}", "--user=root",
                             "--skip-log-bin", "--innodb-buffer-pool-size=16M", f"--ssl-ca={certs['ca']}",
                             f"--ssl-cert={certs['cert']}", f"--ssl-key={certs['key']}",
                             f"--log-error={root / 'error.log'}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail(f"the private MariaDB with TLS did not start: {(root / 'error.log').read_text()[-1500:]}",
                                pytrace=False)
                time.sleep(0.1)
        admin = pymysql.connect(unix_socket=str(root / "sock"), user="root", autocommit=True)
        with admin.cursor() as cur:
            cur.execute("CREATE DATABASE salt")
            cur.execute("CREATE USER 'salt'@'%' IDENTIFIED BY 'tls-only-pass' REQUIRE SSL")
            cur.execute("GRANT ALL ON salt.* TO 'salt'@'%'")
        admin.close()
        yield {"port": port, **certs, "socket": root / "sock"}
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.fixture(params=["mysqlclient", "pymysql"])
def driver(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _opts(server: dict, master_opts: dict, driver: str, **ssl: str) -> dict:
    return {**master_opts, "mysql.host": "127.0.0.1", "mysql.port": server["port"], "mysql.user": "salt",
            "mysql.pass": "tls-only-pass", "mysql.db": "salt", "mysql.driver": driver,
            **{f"mysql.{k}": v for k, v in ssl.items()}}


def test_ssl_ca_gives_a_tls_connection_that_stores_returns(tls_mariadb: dict, master_opts: dict, driver: str) -> None:
    returner = registry.create("mysql", _opts(tls_mariadb, master_opts, driver, ssl_ca=str(tls_mariadb["ca"])))
    returner.init_schema()
    jid = gen_jid()
    returner.returns([{"id": "tls1", "jid": jid, "fun": "test.ping", "fun_args": [], "return": True,
                       "retcode": 0, "success": True}])
    assert returner.get_jid(jid)["tls1"]["return"] is True
    with returner._conn.cursor() as cur:  # the returner's own session is encrypted
        cur.execute("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
        assert cur.fetchone()[1]
    returner.close()
    admin = pymysql.connect(unix_socket=str(tls_mariadb["socket"]), user="root")
    with admin.cursor() as cur:
        cur.execute("SELECT success FROM salt.salt_returns WHERE jid = %s", (jid,))
        assert cur.fetchone() == ("1",)
    admin.close()
    probe = pymysql.connect(host="127.0.0.1", port=tls_mariadb["port"], user="salt", password="tls-only-pass",
                            ssl={"ca": str(tls_mariadb["ca"])})
    with probe.cursor() as cur:  # the same options give an encrypted session
        cur.execute("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
        assert cur.fetchone()[1]
    probe.close()


def test_without_tls_the_server_refuses_in_one_line(tls_mariadb: dict, master_opts: dict, driver: str) -> None:
    returner = registry.create("mysql", _opts(tls_mariadb, master_opts, driver))
    with pytest.raises(ReturnerError) as caught:
        returner.returns([{"id": "x", "jid": gen_jid(), "fun": "test.ping", "return": True, "success": True}])
    message = str(caught.value)
    assert message.startswith("returner mysql") and "\n" not in message and "tls-only-pass" not in message
    assert "access denied" in message.lower()


def test_a_wrong_ca_is_refused_in_one_line(tls_mariadb: dict, master_opts: dict, tmp_path: Path, driver: str) -> None:
    other = _certificates(tmp_path)
    returner = registry.create("mysql", _opts(tls_mariadb, master_opts, driver, ssl_ca=str(other["ca"])))
    with pytest.raises(ReturnerError) as caught:
        returner.returns([{"id": "x", "jid": gen_jid(), "fun": "test.ping", "return": True, "success": True}])
    assert str(caught.value).startswith("returner mysql") and "\n" not in str(caught.value)


def test_a_client_certificate_without_ca_is_tls_unverified(tls_mariadb: dict, master_opts: dict, driver: str) -> None:
    """ssl_cert/ssl_key alone: TLS (required), the server's certificate not checked (as PyMySQL)."""
    returner = registry.create("mysql", _opts(tls_mariadb, master_opts, driver, ssl_cert=str(tls_mariadb["cert"]),
                                              ssl_key=str(tls_mariadb["key"])))
    returner.init_schema()
    jid = gen_jid()
    returner.returns([{"id": "tls2", "jid": jid, "fun": "test.ping", "return": True, "success": True}])
    assert list(returner.get_jid(jid)) == ["tls2"]
    with returner._conn.cursor() as cur:
        cur.execute("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
        assert cur.fetchone()[1]
    returner.close()
