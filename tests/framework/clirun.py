"""The ``blockcoin`` command line run in this process, through its real entry point.

:func:`blockcoin` calls :func:`chain.app.cli.main` (what the installed script and ``python -m
chain`` run), so usage mistakes go through the same one-line error path a user sees, with
stdout and stderr captured apart.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from typer.testing import CliRunner

from chain.app.cli import main

_runner = CliRunner()
_BYTES_REPR = re.compile(r"(?<![\w-])b['\"]")  # b'...' as Python prints bytes


@dataclass(frozen=True)
class Ran:
    code: int
    out: str
    err: str

    @property
    def one_line_error(self) -> bool:
        """Exit 1 with exactly one line on stderr, ``error: ...``, and no Python repr."""
        return (self.code == 1 and self.err.startswith("error: ") and self.err.count("\n") == 1
                and "Traceback" not in self.err and not _BYTES_REPR.search(self.err))


def blockcoin(*args: str, env: Mapping[str, str | None] | None = None,
              input: str | None = None) -> Ran:
    with _runner.isolation(input=input, env=env) as (out, err, _):
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        return Ran(code, out.getvalue().decode(), err.getvalue().decode())
