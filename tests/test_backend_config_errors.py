"""Flow backends refuse user values with a ConfigError (one line from the CLI), not a ValueError traceback."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from flows.cli import main as cli_main
from pipeline.errors import ConfigError
from pipeline.flow import get_backend


@pytest.mark.parametrize(
    ("name", "options", "match"),
    [
        ("dis-medium", {"working_width": 8}, "working_width"),
        ("sgbm", {"block_size": 4}, "block_size"),
        ("sgbm", {"max_disparity_fraction": 0.9}, "max_disparity_fraction"),
        ("dis-medium", {"preset": "warp"}, "DIS preset"),
    ],
)
def test_backend_options_from_the_user_are_config_errors(name, options, match):
    with pytest.raises(ConfigError, match=match):
        get_backend(name, **options)


def test_cli_reports_a_bad_working_width_in_one_line(tmp_path, capsys):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "l.png"), image)
    cv2.imwrite(str(tmp_path / "r.png"), image)
    rc = cli_main(
        [
            "disparity",
            str(tmp_path / "l.png"),
            str(tmp_path / "r.png"),
            "-o",
            str(tmp_path / "o.npz"),
            "--working-width",
            "8",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and "working_width" in err and "Traceback" not in err
    assert not (tmp_path / "o.npz").exists()
