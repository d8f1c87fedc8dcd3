"""`serve` on a network (issue 5): a token is required off loopback, secrets come from files or the
environment, TLS from --cert/--key, and the token never shows in what the server prints or logs."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import ipaddress
import os
import re
import signal
import ssl
import sys
from pathlib import Path

import aiohttp
import pytest

from server.cli import main, parser
from server.cli_security import OptionError, security_config, ssl_context

REPO = Path(__file__).resolve().parents[2]
TOKEN = "cli-token-0123456789abcdef"


def serve_args(*argv: str) -> argparse.Namespace:
    return parser().parse_args(["serve", *argv])


def test_a_public_host_without_a_token_is_refused_with_what_to_do(capsys):
    for host in ("0.0.0.0", "192.0.2.10", "::", "example.org"):
        with pytest.raises(OptionError, match="access token is required") as err:
            security_config(serve_args("--host", host), env={})
        assert "INFINITETALK_TOKEN" in str(err.value) and "--token-file" in str(err.value)
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        assert security_config(serve_args("--host", host), env={})["token"] is None
    assert main(["serve", "--host", "0.0.0.0", "--port", "0"]) == 2  # before anything listens
    assert "access token is required" in capsys.readouterr().err


def test_the_token_comes_from_the_option_the_file_or_the_environment(tmp_path):
    f = tmp_path / "token"
    f.write_text("from-the-file-123\n")
    env = {"INFINITETALK_TOKEN": "from-the-env-456"}
    assert security_config(serve_args("--host", "0.0.0.0", "--token", "from-the-option"), env)["token"] == "from-the-option"
    assert security_config(serve_args("--host", "0.0.0.0", "--token-file", str(f)), env)["token"] == "from-the-file-123"
    assert security_config(serve_args("--host", "0.0.0.0"), env)["token"] == "from-the-env-456"
    with pytest.raises(OptionError, match="too short"):
        security_config(serve_args("--token", "abc"), {})
    (tmp_path / "empty").write_text("")
    with pytest.raises(OptionError, match="empty"):
        security_config(serve_args("--token-file", str(tmp_path / "empty")), {})
    with pytest.raises(OptionError, match="cannot read"):
        security_config(serve_args("--token-file", str(tmp_path / "absent")), {})


def test_origins_ice_servers_and_tls_options_are_checked(tmp_path):
    with pytest.raises(OptionError, match="scheme://host"):
        security_config(serve_args("--allow-origin", "app.example.com"), {})
    with pytest.raises(OptionError, match="stun:, stuns:, turn: or turns:"):
        security_config(serve_args("--ice-server", "http://turn.example.org"), {})
    with pytest.raises(OptionError, match="needs credentials"):
        security_config(serve_args("--ice-server", "turn:turn.example.org:3478"), {})
    secret = tmp_path / "turn-secret"
    secret.write_text("coturn-secret\n")
    cfg = security_config(serve_args("--ice-server", "stun:stun.example.org", "--ice-server", "turn:t.example.org",
                                     "--turn-secret-file", str(secret), "--idle-timeout", "60"), {})
    assert cfg["turn_secret"] == "coturn-secret" and len(cfg["ice_servers"]) == 2
    assert cfg["ws_idle_timeout_s"] == cfg["rtc_idle_timeout_s"] == 60
    cfg = security_config(serve_args("--ice-server", "turn:t.example.org", "--turn-username", "u"),
                          {"INFINITETALK_TURN_CREDENTIAL": "pw"})
    assert (cfg["ice_servers"][0].username, cfg["ice_servers"][0].credential) == ("u", "pw")
    with pytest.raises(OptionError, match="go together"):
        ssl_context(serve_args("--cert", str(tmp_path / "c.pem")))
    (tmp_path / "c.pem").write_text("not a certificate")
    with pytest.raises(OptionError, match="cannot load the TLS certificate"):
        ssl_context(serve_args("--cert", str(tmp_path / "c.pem"), "--key", str(tmp_path / "c.pem")))


def self_signed(folder: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


async def test_serve_over_tls_with_a_token_from_the_environment_never_prints_it(tmp_path):
    cert, key = self_signed(tmp_path)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server.cli", "serve", "--port", "0", "--avatar-dir", str(tmp_path / "avatars"),
        "--log-level", "debug", "--cert", str(cert), "--key", str(key), cwd=REPO,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "INFINITETALK_TOKEN": TOKEN},
    )
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
        m = re.match(r"infinitetalk-live: open (https://127\.0\.0\.1:\d+/) in a browser", line)
        assert m, line
        url = m.group(1)
        note = (await asyncio.wait_for(proc.stdout.readline(), 10)).decode()
        assert "access token is required" in note and TOKEN not in note
        tls = ssl.create_default_context(cafile=str(cert))
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=tls)) as http:
            async with http.get(url + "healthz") as r:
                assert r.status == 200
            async with http.get(url + "metrics") as r:
                assert r.status == 401
            async with http.get(url + "metrics", headers={"Authorization": "Bearer wrong-guess-123"}) as r:
                assert r.status == 401
            async with http.get(url + "metrics", headers={"Authorization": f"Bearer {TOKEN}"}) as r:
                assert r.status == 200
            ws = await http.ws_connect(url.replace("https", "wss") + f"ws?token={TOKEN}")
            await ws.send_json({"type": "hello", "version": 1})
            assert (await asyncio.wait_for(ws.receive_json(), 20))["type"] == "ready"
            proc.send_signal(signal.SIGTERM)
            while (msg := await asyncio.wait_for(ws.receive(), 10)).type != aiohttp.WSMsgType.CLOSE:
                pass
            assert msg.data == 1001
            await ws.close()
        assert await asyncio.wait_for(proc.wait(), 10) == 0
        out = line + note + (await proc.stdout.read()).decode()
        err = (await proc.stderr.read()).decode()
        assert "DEBUG" in err and "websocket session" in err  # it did log, at debug level
        assert TOKEN not in out and TOKEN not in err and "wrong-guess-123" not in err
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def test_a_token_file_may_name_several_tokens_each_a_client(tmp_path):
    f = tmp_path / "tokens"
    f.write_text("# who may use this server\nalice  alice-token-0123456789\n\nkiosk kiosk-token-9876543210  # lobby\n"
                 "bare-token-on-its-own-1234\n")
    config = security_config(serve_args("--host", "0.0.0.0", "--token-file", str(f)), {})
    assert config["token"] is None
    assert config["tokens"] == (("alice", "alice-token-0123456789"), ("kiosk", "kiosk-token-9876543210"),
                                ("line-5", "bare-token-on-its-own-1234"))
    f.write_text("alice short\n")
    with pytest.raises(OptionError, match="'alice' is too short"):
        security_config(serve_args("--token-file", str(f)), {})
    f.write_text("a one-token-0123456789\na two-token-0123456789\n")
    with pytest.raises(OptionError, match="unique"):
        security_config(serve_args("--token-file", str(f)), {})
    f.write_text("a b c-token-0123456789\n")
    with pytest.raises(OptionError, match="line 1: expected TOKEN or NAME TOKEN"):
        security_config(serve_args("--token-file", str(f)), {})
