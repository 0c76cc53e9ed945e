"""Where a study lives: an embedded SQLite file by default, or any database Optuna's RDB
storage speaks (PostgreSQL for several machines sharing one study).

A URL is checked before anything is written: a malformed or unsupported one, a database that
cannot be reached or a file that is not a study database is one line naming the URL (password
hidden), and nothing is created or changed.
"""

from __future__ import annotations

import random
import time
import warnings
from pathlib import Path
from typing import Any

from nerfzip.errors import NerfzipError

SCHEMES = ("sqlite", "postgresql")
CONNECT_TIMEOUT_S = 5
HEARTBEAT_S = 30
"""A running trial beats this often; one silent for ``GRACE_S`` (its worker was killed) is
marked failed by the next worker and run again once (``RetryFailedTrialCallback``)."""
GRACE_S = 120
SCHEMA_TRIES = 4


def default_url(out: Path) -> str:
    return f"sqlite:///{(out / 'study.db').resolve()}"


def shown(url: str) -> str:
    """The URL with its password hidden (for messages)."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - a URL too broken to parse is shown as given
        return url


def check_url(url: str) -> Any:
    """The parsed URL of ``--storage``; a malformed or unsupported one is a one-line error."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    hint = "expected sqlite:///FILE or postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE"
    try:
        u = make_url(url)
    except (ArgumentError, ValueError):
        raise NerfzipError(f"--storage {url}: malformed URL ({hint})") from None
    backend = u.get_backend_name()
    if backend not in SCHEMES:
        raise NerfzipError(f"--storage {shown(url)}: unsupported database {backend!r} ({hint})")
    if backend == "postgresql":
        if not u.database or not u.host:
            raise NerfzipError(f"--storage {shown(url)}: needs a host and a database ({hint})")
        if u.drivername == "postgresql":  # no driver named: the one installed (psycopg2 first)
            u = u.set(drivername=f"postgresql+{installed_driver()}")
        try:
            u.get_dialect().import_dbapi()
        except ImportError:
            raise NerfzipError(f"--storage {shown(url)}: the PostgreSQL driver is not installed "
                               "(pip install psycopg2-binary)") from None
    elif not u.database or u.database == ":memory:":
        raise NerfzipError(f"--storage {url}: an SQLite study needs a file ({hint})")
    elif not Path(u.database).parent.is_dir():
        raise NerfzipError(f"--storage {url}: folder {Path(u.database).parent} does not exist")
    return u


def installed_driver() -> str:
    import importlib.util

    for name in ("psycopg2", "psycopg"):
        if importlib.util.find_spec(name) is not None:
            return name
    return "psycopg2"


def open_storage(url: str) -> Any:
    """Optuna's RDB storage at ``url`` (checked, connected, heart-beating)."""
    import optuna
    from optuna.storages import RDBStorage, RetryFailedTrialCallback
    from sqlalchemy.exc import IntegrityError, SQLAlchemyError

    u = check_url(url)
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if u.get_backend_name() == "postgresql":
        kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}
    else:
        kwargs["connect_args"] = {"timeout": 60}  # workers on one file wait for its lock
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # heartbeats are marked experimental
        try:
            for attempt in range(SCHEMA_TRIES):
                try:
                    return RDBStorage(u.render_as_string(hide_password=False),
                                      engine_kwargs=kwargs, heartbeat_interval=HEARTBEAT_S,
                                      grace_period=GRACE_S,
                                      failed_trial_callback=RetryFailedTrialCallback(max_retry=1))
                except IntegrityError:  # workers creating the tables of a new database at once
                    if attempt == SCHEMA_TRIES - 1:
                        raise
                    time.sleep(0.5 + random.random())
        except SQLAlchemyError as e:
            reason = str(getattr(e, "orig", None) or e).strip().splitlines()[0]
            raise NerfzipError(f"--storage {shown(url)}: cannot open the study database "
                               f"({reason})") from None
        except (RuntimeError, ValueError) as e:  # a database of another application / version
            raise NerfzipError(f"--storage {shown(url)}: not a study database "
                               f"({str(e).splitlines()[0]})") from None
