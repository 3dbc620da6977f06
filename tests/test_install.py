"""The README's setup installs opencv-contrib, so the contrib modules the pipeline uses exist."""

import importlib.metadata as md

import cv2


def test_opencv_contrib_modules_import():
    assert hasattr(cv2, "optflow"), "cv2.optflow missing: opencv-python shadows opencv-contrib-python"
    assert hasattr(cv2, "ximgproc"), "cv2.ximgproc missing: opencv-python shadows opencv-contrib-python"
    cv2.optflow.createOptFlow_DeepFlow()
    cv2.ximgproc.createDisparityWLSFilterGeneric(False)


def test_only_contrib_opencv_installed():
    names = {d.metadata["Name"].lower() for d in md.distributions()}
    assert "opencv-contrib-python" in names
    assert "opencv-python" not in names, "opencv-python would overwrite contrib's cv2 on reinstall"


def test_cli_help_lists_commands(capsys):
    from flows.cli import main

    try:
        main(["--help"])
    except SystemExit as exc:
        assert exc.code == 0
    out = capsys.readouterr().out
    assert "depthmine" in out and "COMMAND" in out
