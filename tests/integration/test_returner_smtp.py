"""smtp: mails as a real SMTP server (aiosmtpd) receives them: session, login, STARTTLS, headers, body."""

from __future__ import annotations

import datetime as dt
import email.utils
import logging
import ssl
from pathlib import Path
from typing import Any, Iterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from saline.config import ConfigError
from saline.jid import gen_jid
from saline.returners import registry
from saline.returners.base import BackendUnavailable, ReturnerError
from tests.contract.cases.smtp import PASSWORD, USER, Mailbox, start


@pytest.fixture
def box() -> Iterator[tuple[Mailbox, int]]:
    mailbox = Mailbox()
    controller = start(mailbox)
    yield mailbox, controller.port
    controller.stop()


def opts(master_opts: dict[str, Any], port: int, **more: Any) -> dict[str, Any]:
    return {**master_opts, "smtp": {"from": "salt@example.com", "to": "ops@example.com, oncall@example.com",
                                    "host": "127.0.0.1", "port": port, "username": USER, "password": PASSWORD, **more}}


def body(mail: Any) -> str:
    return mail.get_content().replace("\r\n", "\n")  # as sent: CRLF line ends


def ret(jid: str, minion: str, value: Any = True) -> dict[str, Any]:
    return {"id": minion, "jid": jid, "fun": "test.arg", "fun_args": ["a", {"k": 1}], "return": value,
            "retcode": 0, "success": True}


def test_salts_mail_one_session_per_batch(box: tuple[Mailbox, int], master_opts: dict[str, Any],
                                          caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    mailbox, port = box
    r = registry.create("smtp", opts(master_opts, port, fields="id,fun"))
    jid = gen_jid()
    r.returns([ret(jid, "web1", {"ü": [1, None]}), ret(jid, "web2", "multi\nline")])
    assert mailbox.sessions == 1 and len(mailbox.mails) == 2
    sender, rcpts, mail = mailbox.mails[0]
    assert sender == "salt@example.com" and rcpts == ["ops@example.com", "oncall@example.com"]
    assert mail["From"] == "salt@example.com" and mail["To"] == "ops@example.com, oncall@example.com"
    assert mail["Subject"] == "Email from Salt web1 test.arg"
    assert abs(email.utils.parsedate_to_datetime(mail["Date"]) - dt.datetime.now(dt.timezone.utc)) < dt.timedelta(minutes=1)
    assert mail["X-Salt-Jid"] == jid and mail["X-Salt-Minion"] == "web1" and mail["Message-ID"]
    assert body(mail) == (f"id: web1\nfunction: test.arg\nfunction args: ['a', {{'k': 1}}]\njid: {jid}\n"
                                  "return: {'ü': [1, None]}\n")
    assert PASSWORD not in caplog.text


def test_template_file_subject_template_and_events(box: tuple[Mailbox, int], master_opts: dict[str, Any],
                                                   tmp_path: Path) -> None:
    mailbox, port = box
    template = tmp_path / "mail.j2"
    template.write_text("{{ id }} ran {{ fun }}: {% if success %}ok{% else %}FAILED{% endif %}\n")
    r = registry.create("smtp", opts(master_opts, port, template=str(template), subject="[salt] {{ id }}"))
    r.returns([ret(gen_jid(), "db1")])
    r.event_returns([{"tag": "salt/job/1/ret/db2", "data": {"id": "db2", "fun": "test.ping", "success": False}},
                     {"tag": "salt/auth", "data": {}}])  # Salt mails only events with data
    first, event = (m for _, _, m in mailbox.mails)
    assert first["Subject"] == "[salt] db1" and body(first) == "db1 ran test.arg: ok\n"
    assert event["X-Salt-Tag"] == "salt/job/1/ret/db2" and body(event) == "db2 ran test.ping: FAILED\n"
    assert len(mailbox.mails) == 2


def test_config_errors(master_opts: dict[str, Any], tmp_path: Path) -> None:
    for more, message in (({"gpgowner": "salt"}, "smtp.gpgowner .* is not supported"),
                          ({"renderer": "mako"}, "only the jinja renderer"),
                          ({"template": str(tmp_path / "missing")}, "cannot read smtp.template"),
                          ({"subject": "{{ unclosed"}, "template error")):
        with pytest.raises(ConfigError, match=message):
            registry.create("smtp", opts(master_opts, 25, **more))


def test_refusals(box: tuple[Mailbox, int], master_opts: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    mailbox, port = box
    wrong = registry.create("smtp", opts(master_opts, port, password="Not-The-Password"))
    with pytest.raises(BackendUnavailable, match=r"^returner smtp: SMTP server 127.0.0.1:\d+ said 535: ") as info:
        wrong.returns([ret(gen_jid(), "a")])
    assert "Not-The-Password" not in str(info.value) and "Not-The-Password" not in caplog.text
    r = registry.create("smtp", opts(master_opts, port))
    mailbox.refuse_data = "552 5.3.4 Message too big"
    with pytest.raises(ReturnerError, match="said 552: 5.3.4 Message too big") as info:
        r.returns([ret(gen_jid(), "a")])
    assert not isinstance(info.value, BackendUnavailable)
    mailbox.refuse_data = "451 4.3.0 Try again later"
    with pytest.raises(BackendUnavailable, match="said 451"):
        r.returns([ret(gen_jid(), "a")])
    mailbox.refuse_data = None
    r.check()


def _certificate(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


def test_starttls_checks_the_certificate(master_opts: dict[str, Any], tmp_path: Path) -> None:
    cert, key = _certificate(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    mailbox = Mailbox()
    controller = start(mailbox, tls_context=context, require_starttls=True)
    try:
        trusted = registry.create("smtp", opts(master_opts, controller.port, tls=True, ssl_ca=str(cert)))
        trusted.returns([ret(gen_jid(), "tls1")])
        unchecked = registry.create("smtp", opts(master_opts, controller.port, tls=True, ssl_verify=False))
        unchecked.returns([ret(gen_jid(), "tls2")])
        assert [m["X-Salt-Minion"] for _, _, m in mailbox.mails] == ["tls1", "tls2"]
        strict = registry.create("smtp", opts(master_opts, controller.port, tls=True))  # self-signed: refused
        with pytest.raises(BackendUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
            strict.returns([ret(gen_jid(), "tls3")])
        plain = registry.create("smtp", opts(master_opts, controller.port))  # the server insists on STARTTLS
        with pytest.raises(BackendUnavailable, match="said 530"):
            plain.returns([ret(gen_jid(), "tls4")])
    finally:
        controller.stop()
