"""Run ``ablo ARGS`` in-process: (exit code, stdout, stderr)."""

import contextlib
import io

from ablo import cli


def ablo(*args):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            cli.main([str(a) for a in args])
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
    return code, out.getvalue(), err.getvalue()


def one_error_line(err: str) -> str:
    """The single ``ablo: error:`` line of a stderr that may also hold progress bars."""
    lines = [ln for ln in err.splitlines() if ln.startswith("ablo: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err, err
    return lines[0]
