"""Progress bars for long work (tqdm): the live figure in the postfix, ETA from tqdm."""

from __future__ import annotations

import sys

from tqdm import tqdm


def progress_bar(total: int, desc: str, initial: int = 0, quiet: bool = False) -> tqdm:
    """A bar on stderr; ``quiet`` (or a non-terminal stderr in CI) keeps output sparse."""
    return tqdm(total=total, initial=initial, desc=desc, disable=quiet, dynamic_ncols=True,
                mininterval=0.5 if sys.stderr.isatty() else 30.0, file=sys.stderr)
