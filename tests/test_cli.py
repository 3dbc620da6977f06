"""The CLI's contract with users: user mistakes are one line on stderr, exit 2, no traceback."""

from __future__ import annotations

import logging

import pytest

from flows.cli import _QuietUserErrors, main
from pipeline.errors import BadInputError


def test_user_error_records_lose_their_traceback_bugs_keep_theirs():
    quiet = _QuietUserErrors()
    for exc, keeps in ((BadInputError("m.mkv", "not a video"), False), (ZeroDivisionError("bug"), True)):
        try:
            raise exc
        except Exception:
            record = logging.LogRecord("prefect.flow_runs", logging.ERROR, __file__, 1, "failed", None, exc_info=True)
            import sys

            record.exc_info = sys.exc_info()
        assert quiet.filter(record)
        assert (record.exc_info is not None) is keeps


@pytest.mark.slow
def test_failed_flow_run_logs_no_traceback_for_a_missing_movie(prefect_harness, tmp_path, capfd):
    code = main(["ingest", str(tmp_path / "missing.mkv"), "--out", str(tmp_path / "ds")])
    out, err = capfd.readouterr()
    assert code == 2
    assert "missing.mkv" in err
    assert "Traceback" not in out + err


def test_unknown_command_and_no_command_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["no-such-command"])
    assert exc.value.code == 2
    assert main([]) == 2
