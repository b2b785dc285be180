"""Progress bars that go to the terminal the user is watching, never onto a book page.

``make book`` executes notebooks in Jupyter kernels: whatever a cell writes to stderr
would end up in the page. So a bar writes to the file named by ``$LOCALLLMS_PROGRESS``
when it is set (``localllms.book`` sets it and copies the file to its own terminal as
it grows), else to the process's original stderr (the terminal of ``jupyter lab`` or of
a command-line run), which a kernel does not capture.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import IO, Any, TypeVar

from tqdm import tqdm

T = TypeVar("T")
ENV = "LOCALLLMS_PROGRESS"


@contextmanager
def _stream() -> Iterator[IO[str]]:
    path = os.environ.get(ENV)
    if path:
        with open(path, "a", buffering=1, encoding="utf-8") as fh:
            yield fh
    else:
        yield sys.__stderr__ or sys.stderr


class Bar:
    """A tqdm bar on the progress stream; use as a context manager or with ``track``."""

    def __init__(self, total: int | None, desc: str, unit: str = "it", enabled: bool = True, **kw: Any) -> None:
        self._ctx = _stream()
        stream = self._ctx.__enter__()
        # a file is tailed into a terminal: let tqdm draw a bar of fixed width, not ask the file for one
        self.bar = tqdm(total=total, desc=desc, unit=unit, file=stream, disable=not enabled, ncols=100, **kw)
        self._started, self._desc = time.monotonic(), desc

    def update(self, n: int = 1) -> None:
        self.bar.update(n)

    def set_postfix_str(self, text: str) -> None:
        self.bar.set_postfix_str(text, refresh=True)

    def close(self) -> None:
        self.bar.close()
        self._ctx.__exit__(None, None, None)
        _record_stage(self._desc, int(getattr(self.bar, "n", 0)), time.monotonic() - self._started)

    def __enter__(self) -> Bar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def track(
    items: Iterable[T], desc: str, unit: str = "it", enabled: bool = True, total: int | None = None
) -> Iterator[T]:
    """Iterate over ``items`` with a bar on the progress stream."""
    items = list(items) if total is None else items
    with Bar(total if total is not None else len(items), desc, unit, enabled) as bar:  # type: ignore[arg-type]
        for item in items:
            yield item
            bar.update()


def stages_file() -> str | None:
    """Where finished stages are recorded (one JSON line each), beside the progress file."""
    path = os.environ.get(ENV)
    return f"{path}.stages.jsonl" if path else None


def _record_stage(desc: str, n: int, seconds: float) -> None:
    """Each finished bar, with its duration: the breakdown of where a run's time goes."""
    path = stages_file()
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"stage": desc, "items": n, "seconds": round(seconds, 2)}) + "\n")


def note(text: str) -> None:
    """One line on the progress stream (a stage starting, a cache hit)."""
    with _stream() as fh:
        print(text, file=fh, flush=True)
