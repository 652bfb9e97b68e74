"""`kaito-gitops run` as a newcomer meets it: help, defaults and errors that say what to change."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from reconciler.cli import build_parser
from reconciler.metrics import Metrics
from reconciler.runconfig import RunConfig, resolve


def run_cli(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "reconciler", *args], capture_output=True, text=True, timeout=120, cwd=cwd
    )


def parse(*argv: str):
    return build_parser().parse_args(["run", *argv])


def test_every_run_flag_has_a_line_its_default_and_its_environment_variable():
    sub = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    run = sub.choices["run"]
    flags = [a for a in run._actions if a.option_strings and a.dest not in ("help", "config")]
    assert len(flags) >= 40
    for a in flags:
        assert a.help and f"KAITO_GITOPS_{a.dest.upper()}" in a.help, a.option_strings
        default = getattr(RunConfig(), a.dest)
        if default not in ("", [], False):
            assert repr(default) in a.help, (a.option_strings, a.help)


@pytest.mark.parametrize(("target", "listen"), [("local", "127.0.0.1:8080"), ("kubernetes", ":8080")])
def test_the_local_target_listens_on_loopback_by_default(target, listen):
    assert resolve(parse("--repo", ".", "--target", target), environ={}).listen == listen
    assert resolve(parse("--repo", ".", "--target", target, "--listen", ""), environ={}).listen == ""
    given = resolve(parse("--repo", ".", "--target", target), environ={"KAITO_GITOPS_LISTEN": ":9000"})
    assert given.listen == ":9000"


def test_a_busy_listen_port_names_the_flag_to_change(tmp_path, git_remote):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        out = run_cli(
            "run",
            "--repo",
            str(git_remote.url),
            "--target",
            "render",
            "--out",
            str(tmp_path / "out"),
            "--listen",
            f"127.0.0.1:{port}",
            "--status",
            "off",
            "--cache-dir",
            str(tmp_path / "c"),
            cwd=tmp_path,
        )
    assert out.returncode == 2
    assert "internal error" not in out.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in out.stderr and "KAITO_GITOPS_LISTEN" in out.stderr


def test_a_mistyped_local_repository_is_a_usage_error_at_start(tmp_path):
    out = run_cli("run", "--repo", str(tmp_path / "no-such-repo"), "--target", "local", cwd=tmp_path)
    assert out.returncode == 2 and "no such directory" in out.stderr
    (tmp_path / "plain").mkdir()
    out = run_cli("run", "--repo", str(tmp_path / "plain"), "--target", "local", cwd=tmp_path)
    assert out.returncode == 2 and "is not a git repository" in out.stderr


def test_status_before_the_first_pass_says_the_daemon_writes_it(tmp_path):
    subprocess.run(["git", "init", "-q", "-b", "main", str(tmp_path / "r")], check=True)
    out = run_cli("status", "--repo", str(tmp_path / "r"), cwd=tmp_path)
    assert out.returncode == 2
    assert "writes it on its first pass" in out.stderr


def test_webhook_is_not_served_without_a_secret(tmp_path):
    from reconciler.runcmd import ops_server

    class Stub:
        class source:
            branch = "main"

        class settings:
            interval = 60

        heartbeat = 0.0

        metrics = Metrics()

        class synced:
            @staticmethod
            def is_set() -> bool:
                return True

        def poke(self) -> None:
            raise AssertionError("an unsigned webhook must not trigger anything")

    import httpx

    server = ops_server(Stub(), ("127.0.0.1", 0)).start()
    try:
        r = httpx.post(f"http://127.0.0.1:{server.port}/webhook", json={"ref": "refs/heads/main"})
        assert r.status_code == 404 and "not configured" in r.text
        assert b'kaito_gitops_webhook_requests_total{code="404"} 1.0' in Stub.metrics.text()
    finally:
        server.stop()
