"""A throwaway PostgreSQL server on this machine: a new cluster in a temporary folder, on a
free local port, stopped and removed on exit. For the tests and benchmarks of shared studies
(and for trying ``--storage postgresql://`` without a database administrator).

It needs the server binaries (Debian's ``postgresql`` package puts them in
``/usr/lib/postgresql/VERSION/bin``). ``initdb`` and ``postgres`` refuse to run as root: as
root, the server runs as the ``postgres`` user, in a folder that user owns.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class NoServer(RuntimeError):
    """No PostgreSQL server can be run here (the reason is the message)."""


def server_bin() -> Path | None:
    """The folder holding initdb, pg_ctl and postgres, if any."""
    found = shutil.which("initdb")
    dirs = [Path(found).resolve().parent] if found else []
    dirs += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for d in dirs:
        if all((d / name).is_file() for name in ("initdb", "pg_ctl", "postgres")):
            return d
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def local_postgres(user: str = "nerfzip") -> Iterator[str]:
    """Start a server; yield its URL (``postgresql://USER@127.0.0.1:PORT/postgres``, trust
    authentication on the loopback address only); stop it and remove its files on exit."""
    bindir = server_bin()
    if bindir is None:
        raise NoServer("no PostgreSQL server binaries (initdb, pg_ctl, postgres): install "
                       "Debian's postgresql package")
    as_user: list[str] = []
    root = os.geteuid() == 0
    # as root, /tmp: a TMPDIR under root's home would be closed to the postgres user
    base = Path(tempfile.mkdtemp(prefix="nerfzip-pg-", dir="/tmp" if root else None))
    if root:
        import pwd

        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(base)
            raise NoServer("running as root and there is no postgres user to run the server "
                           "as") from None
        os.chown(base, pw.pw_uid, pw.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = base / "data", free_port()

    def run(*cmd: object) -> None:
        subprocess.run([*as_user, *map(str, cmd)], check=True, capture_output=True, text=True,
                       timeout=120)

    try:
        run(bindir / "initdb", "-D", data, "-A", "trust", "-U", user, "--no-sync")
        run(bindir / "pg_ctl", "-D", data, "-l", base / "log", "-w", "-t", "60", "-o",
            f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -F", "start")
    except subprocess.CalledProcessError as e:
        log = (base / "log").read_text() if (base / "log").exists() else ""
        shutil.rmtree(base, ignore_errors=True)
        raise RuntimeError(f"PostgreSQL did not start: {e.stderr}\n{log}") from None
    try:
        yield f"postgresql://{user}@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate",
                        "-w", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(base, ignore_errors=True)
