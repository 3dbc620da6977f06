"""Catalog parsing and the build_dataset flow: changes, removals, a bad movie, atomic versions."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.errors import ConfigError

OVERRIDES = ["chunk_frames=4", "sampling.eval_fps=4"]


# ---------------------------------------------------------------------------- catalog


def test_yaml_catalog_resolves_paths_defaults_and_overrides(tmp_path):
    from flows.catalog import load_catalog

    cat = tmp_path / "sub" / "catalog.yaml"
    cat.parent.mkdir()
    cat.write_text(
        yaml.safe_dump(
            {
                "defaults": {"layout": "sbs-half", "overrides": ["disparity.lr_threshold_px=1.5"]},
                "movies": [
                    {"path": "films/A Movie (2009).mkv", "split": "validation"},
                    {"path": "/abs/b.mkv", "movie_id": "bee", "overrides": {"sampling.train_fps": 2}},
                    {"path": "c_L.mkv", "layout": "separate", "right": "c_R.mkv", "split": "test"},
                ],
            }
        )
    )
    a, b, c = load_catalog(cat)
    assert a.path == str(tmp_path / "sub" / "films" / "A Movie (2009).mkv")
    assert (a.movie_id, a.split, a.layout) == ("A-Movie-2009", "val", "sbs-half")
    assert b.overrides == ("disparity.lr_threshold_px=1.5", "sampling.train_fps=2")
    assert b.path == "/abs/b.mkv" and b.movie_id == "bee"
    assert c.right == str(tmp_path / "sub" / "c_R.mkv") and c.layout == "separate"


def test_csv_catalog_with_comments_and_several_overrides(tmp_path):
    from flows.catalog import load_catalog

    cat = tmp_path / "catalog.csv"
    cat.write_text(
        "# my films\npath,movie_id,split,layout,overrides\n"
        "a.mkv,a,train,,chunk_frames=4;sampling.train_fps=2\n\nb.mkv,b,test,tab-half,\n"
    )
    a, b = load_catalog(cat)
    assert a.overrides == ("chunk_frames=4", "sampling.train_fps=2") and a.layout is None and a.line == 3
    assert (b.split, b.layout, b.line) == ("test", "tab-half", 5)


@pytest.mark.parametrize(
    "text, message",
    [
        pytest.param(
            "movies:\n  - path: a.mkv\n  - path: b.mkv\n    split: dev\n",
            r"catalog.yaml:3: split 'dev'",
            id="yaml/bad-split",
        ),
        pytest.param(
            "movies:\n  - path: a.mkv\n    movie_id: x\n  - path: b.mkv\n    movie_id: x\n",
            r":4: movie_id 'x' already used on line 2",
            id="yaml/duplicate-id",
        ),
        pytest.param(
            "movies:\n  - path: a.mkv\n    colour: red\n", r":2: unknown key\(s\) \['colour'\]", id="yaml/unknown-key"
        ),
        pytest.param(
            "movies:\n  - path: a.mkv\n    layout: sbs\n", r":2: layout 'sbs' is not one of", id="yaml/bad-layout"
        ),
        pytest.param(
            "movies:\n  - path: a.mkv\n    layout: separate\n", r"needs 'right'", id="yaml/separate-without-right"
        ),
        pytest.param("movies:\n  - split: train\n", r":2: every movie needs a 'path'", id="yaml/no-path"),
        pytest.param("movies: [a.mkv\n", r"not valid YAML", id="yaml/syntax"),
        pytest.param(
            "movies:\n  - path: a.mkv\n    overrides: [chunk_frames]\n", r"not KEY=VALUE", id="yaml/bad-override"
        ),
    ],
)
def test_catalog_mistakes_name_file_and_line(tmp_path, text, message):
    from flows.catalog import load_catalog

    cat = tmp_path / "catalog.yaml"
    cat.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_catalog(cat)


def test_csv_mistakes_name_the_line(tmp_path):
    from flows.catalog import load_catalog

    cat = tmp_path / "catalog.csv"
    cat.write_text("path,split\na.mkv,train\nb.mkv,holdout\n")
    with pytest.raises(ConfigError, match=r"catalog.csv:3: split 'holdout'"):
        load_catalog(cat)
    cat.write_text("file,split\na.mkv,train\n")
    with pytest.raises(ConfigError, match=r"catalog.csv:1: .*'path'"):
        load_catalog(cat)


def test_missing_catalog_is_a_config_error(tmp_path):
    from flows.catalog import load_catalog

    with pytest.raises(ConfigError, match="no such catalog"):
        load_catalog(tmp_path / "nope.yaml")


# ---------------------------------------------------------------------------- build flow


@pytest.fixture(scope="module")
def movies(sample_movie):
    return {
        name: sample_movie(layout="sbs-half", seconds=5.0, size=(160, 96), seed=seed)
        for name, seed in (("alpha", 21), ("beta", 22), ("gamma", 23))
    }


def _write_catalog(path: Path, entries: list[dict]) -> Path:
    path.write_text(yaml.safe_dump({"movies": entries}))
    return path


def _build(catalog: Path, out: Path):
    from flows.build import build_dataset
    from flows.runners import RunnerSpec
    from pipeline.ingest import LabelSettings

    labelling = LabelSettings("dis-ultrafast", overrides=OVERRIDES)
    return build_dataset(catalog=str(catalog), out=str(out), labelling=labelling, runner=RunnerSpec(workers=2))


@pytest.mark.slow
def test_build_ingests_only_changes_drops_removed_and_keeps_old_version_readable(prefect_harness, movies, tmp_path):
    from pipeline.shards import read_manifest, verify

    out = tmp_path / "dataset"
    cat = _write_catalog(
        tmp_path / "catalog.yaml",
        [
            {"path": str(movies["alpha"].path), "movie_id": "alpha", "split": "train"},
            {"path": str(movies["beta"].path), "movie_id": "beta", "split": "val"},
        ],
    )
    first = _build(cat, out)
    assert first["version"] == 1 and not first["failed"]
    assert {m["movie_id"]: m["skipped"] for m in first["movies"]} == {"alpha": False, "beta": False}
    v1 = read_manifest(out)
    assert {k: m.split_counts for k, m in v1.movies.items()}.keys() == {"alpha", "beta"}
    assert set(v1.movies["beta"].split_counts) == {"val"}

    # beta removed, gamma added, alpha unchanged
    _write_catalog(
        cat,
        [
            {"path": str(movies["alpha"].path), "movie_id": "alpha", "split": "train"},
            {"path": str(movies["gamma"].path), "movie_id": "gamma", "split": "test"},
        ],
    )
    second = _build(cat, out)
    assert {m["movie_id"]: m["skipped"] for m in second["movies"]} == {"alpha": True, "gamma": False}
    assert second["removed"] == ["beta"] and second["version"] == 2
    v2 = read_manifest(out)
    assert set(v2.movies) == {"alpha", "gamma"}
    assert v2.movies["alpha"].key == v1.movies["alpha"].key  # not rewritten
    problems = verify(str(out))
    assert [p for p in problems if p.severity != "warning"] == []
    assert {p.path for p in problems} <= {v1.movies["beta"].folder}  # kept for the previous version
    # the previous version's file and folders stay readable (keep_versions=2)
    old = read_manifest(out / "versions" / "manifest-000001.json")
    assert set(old.movies) == {"alpha", "beta"}
    assert (out / old.movies["beta"].folder / "movie.json").exists()

    # a changed configuration for one movie re-ingests just that one
    _write_catalog(
        cat,
        [
            {
                "path": str(movies["alpha"].path),
                "movie_id": "alpha",
                "split": "train",
                "overrides": ["disparity.lr_threshold_px=1.5"],
            },
            {"path": str(movies["gamma"].path), "movie_id": "gamma", "split": "test"},
        ],
    )
    # (a crashed run under an older configuration left staging behind: it can never be reused)
    stale = out / ".work" / "alpha" / "0123456789abcdef"
    stale.mkdir(parents=True)
    (stale / "s00000-p000.parquet").write_bytes(b"interrupted")
    third = _build(cat, out)
    assert {m["movie_id"]: m["skipped"] for m in third["movies"]} == {"alpha": False, "gamma": True}
    assert read_manifest(out).movies["alpha"].key != v1.movies["alpha"].key
    assert not stale.exists() and not (out / ".work" / "alpha").exists()


@pytest.mark.slow
def test_noop_rebuild_publishes_nothing_a_touch_relabels_nothing_a_change_relabels(prefect_harness, movies, tmp_path):
    """#13 item 4: change detection by stat first, content fingerprint only when the stat moved."""
    import json
    import os
    import shutil

    from pipeline.changes import STAT_DIR
    from pipeline.shards import read_manifest

    films = tmp_path / "films"
    films.mkdir()
    alpha, beta = films / "alpha.mkv", films / "beta.mkv"
    shutil.copy2(movies["alpha"].path, alpha)
    shutil.copy2(movies["beta"].path, beta)
    out = tmp_path / "dataset"
    cat = _write_catalog(
        tmp_path / "catalog.yaml",
        [{"path": str(alpha), "movie_id": "alpha"}, {"path": str(beta), "movie_id": "beta", "split": "val"}],
    )
    assert _build(cat, out)["version"] == 1
    v1 = read_manifest(out)
    assert v1.refs["alpha"].source["stat"]["movie"] == [alpha.stat().st_size, alpha.stat().st_mtime_ns]
    files = sorted(p for p in out.rglob("*") if p.is_file() and ".stat" not in p.parts)

    # nothing changed: no version, the summary says so, no file of the dataset written
    again = _build(cat, out)
    assert again["unchanged"] and again["version"] == 1
    assert all(m["skipped"] for m in again["movies"]) and read_manifest(out).version == 1
    assert sorted(p for p in out.rglob("*") if p.is_file() and ".stat" not in p.parts) == files

    # same size and mtime, other bytes: the stat decides, the file is not read (a fingerprint or a
    # probe would see the change, as the old rebuild did)
    st = alpha.stat()
    data = bytearray(alpha.read_bytes())
    data[len(data) // 2] ^= 0xFF
    alpha.write_bytes(bytes(data))
    os.utime(alpha, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert _build(cat, out)["unchanged"] and read_manifest(out).version == 1
    alpha.write_bytes(Path(movies["alpha"].path).read_bytes())  # put the bytes back

    # touched (or copied with the same bytes): the content fingerprint is the same, no relabel, the
    # new stat is recorded for the next rebuild
    os.utime(alpha, ns=(st.st_atime_ns + 10**9, st.st_mtime_ns + 10**9))
    touched = _build(cat, out)
    assert touched["unchanged"] and {m["movie_id"]: m["skipped"] for m in touched["movies"]} == {
        "alpha": True,
        "beta": True,
    }
    assert json.loads((out / STAT_DIR / "alpha.json").read_text())["stat"]["movie"][1] == alpha.stat().st_mtime_ns

    # a changed file is relabelled and published; beta stays as it was
    shutil.copyfile(movies["gamma"].path, alpha)
    changed = _build(cat, out)
    assert {m["movie_id"]: m["skipped"] for m in changed["movies"]} == {"alpha": False, "beta": True}
    assert changed["version"] == 2 and not changed.get("unchanged")
    v2 = read_manifest(out)
    assert v2.refs["alpha"].key != v1.refs["alpha"].key and v2.refs["beta"] == v1.refs["beta"]

    # a catalog change (beta's split) publishes too
    _write_catalog(cat, [{"path": str(alpha), "movie_id": "alpha"}, {"path": str(beta), "movie_id": "beta"}])
    assert _build(cat, out)["version"] == 3 and read_manifest(out).refs["beta"].split == "train"


# clips mode with a range threshold that rejects whole chunks of one shot (no rows) and single
# frames of another (rows without a label in their clip): the rows are neither the kept frames
# nor the kept frames plus the rejected ones
CLIPS_WITH_REJECTIONS = ["sampling.mode=clips", "sampling.clip_frames=4", "disparity.min_range_px=90"]


@pytest.mark.slow
def test_an_unchanged_clips_movie_reports_the_kept_frames_of_its_first_build(prefect_harness, movies, tmp_path):
    """#12 review: a rebuild's row of an unchanged clips movie said its rows, not its labelled frames."""
    import json

    from pipeline.shards import read_manifest

    out = tmp_path / "dataset"
    entry = {"path": str(movies["alpha"].path), "movie_id": "alpha", "overrides": CLIPS_WITH_REJECTIONS}
    cat = _write_catalog(tmp_path / "catalog.yaml", [entry])
    (first,) = _build(cat, out)["movies"]
    ref = read_manifest(out).refs["alpha"]
    assert not first["skipped"] and first["rejected"], "the sample movie should have rejected frames here"
    assert ref.rows not in (first["kept"], first["kept"] + sum(first["rejected"].values()))

    (again,) = _build(cat, out)["movies"]
    assert again["skipped"] and (again["kept"], again["rejected"]) == (first["kept"], first["rejected"])
    assert ref.labelled_rows == first["kept"]  # the index entry says it: a rebuild reads no movie.json

    # an index written before the count was recorded still reads; the count comes from movie.json
    index = json.loads((out / "manifest.json").read_text())
    for movie in index["movies"]:
        movie.pop("labelled_rows")
    (out / "manifest.json").write_text(json.dumps(index))
    assert read_manifest(out).refs["alpha"].labelled_rows is None
    (old,) = _build(cat, out)["movies"]
    assert old["skipped"] and old["kept"] == first["kept"]


@pytest.mark.logs_errors  # the flow fails on purpose; Prefect logs the failure
@pytest.mark.slow
def test_a_bad_movie_is_reported_and_skipped_the_rest_is_published(prefect_harness, movies, tmp_path):
    from prefect.client.orchestration import get_client

    from pipeline.shards import read_manifest

    bad = tmp_path / "broken.mkv"
    bad.write_bytes(b"\x1aE\xdf\xa3 truncated download" * 50)
    cat = _write_catalog(
        tmp_path / "catalog.yaml",
        [
            {"path": str(bad), "movie_id": "broken", "split": "train"},
            {"path": str(movies["alpha"].path), "movie_id": "alpha", "split": "train"},
            {"path": str(tmp_path / "gone.mkv"), "movie_id": "gone", "split": "val"},
        ],
    )
    out = tmp_path / "dataset"
    summary = _build(cat, out)
    assert [f["movie_id"] for f in summary["failed"]] == ["broken", "gone"]
    assert "broken.mkv" in summary["failed"][0]["error"] and summary["failed"][0]["line"] == 2
    assert set(read_manifest(out).movies) == {"alpha"}

    import asyncio

    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.build import summary_artifact_key

    async def report():
        async with get_client() as client:
            return await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[summary_artifact_key(str(out))]))
            )

    md = max(asyncio.run(report()), key=lambda a: a.created).data  # this run's: the newest
    assert "Skipped (bad input)" in md and "broken" in md
    assert "rejected by reason" in md


@pytest.mark.logs_errors  # the flow fails on purpose; Prefect logs the failure
@pytest.mark.slow
def test_cli_build_exits_1_when_a_movie_was_skipped(prefect_harness, movies, tmp_path, capsys):
    from flows.cli import main

    cat = tmp_path / "catalog.csv"
    cat.write_text(f"path,movie_id,split\n{movies['alpha'].path},alpha,train\n{tmp_path / 'nope.mkv'},nope,val\n")
    args = ["build", "--catalog", str(cat), "--out", str(tmp_path / "ds"), "--flow", "dis-ultrafast"]
    for o in OVERRIDES:
        args += ["--set", o]
    code = main(args)
    cap = capsys.readouterr()
    assert code == 1
    assert "version 1: 1 movies" in cap.out and "nope" in cap.err and "SKIPPED" in cap.err


# ---------------------------------------------------------------------------- build safety


def _parquets(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*.parquet"))}


def _cli_build(cat: Path, out: Path, *extra: str) -> list[str]:
    args = ["build", "--catalog", str(cat), "--out", str(out), "--flow", "dis-ultrafast", "--workers", "2"]
    for o in OVERRIDES:
        args += ["--set", o]
    return args + list(extra)


@pytest.mark.logs_errors  # the flow fails on purpose; Prefect logs the failure
@pytest.mark.slow
def test_config_mistakes_and_failing_runs_publish_and_delete_nothing(prefect_harness, movies, tmp_path, capsys):
    """Issue 10, defect 1: a typo in --set, a bad catalog override, unreachable movies."""
    import shutil

    from flows.cli import main
    from pipeline.shards import read_manifest, verify

    paths = {}
    for name, movie in movies.items():  # private copies: this test moves files away
        paths[name] = tmp_path / "films" / f"{name}.mkv"
        paths[name].parent.mkdir(exist_ok=True)
        shutil.copy2(movie.path, paths[name])
    cat = _write_catalog(
        tmp_path / "catalog.yaml",
        [
            {"path": str(paths["alpha"]), "movie_id": "alpha"},
            {"path": str(paths["beta"]), "movie_id": "beta", "split": "val"},
            {"path": str(paths["gamma"]), "movie_id": "gamma", "split": "test"},
        ],
    )
    out = tmp_path / "dataset"
    assert main(_cli_build(cat, out)) == 0
    v1 = read_manifest(out)
    assert v1.version == 1 and set(v1.movies) == {"alpha", "beta", "gamma"}
    shards = _parquets(out)
    capsys.readouterr()

    # a typo in --set, twice: one line, exit 2, nothing published, nothing deleted
    for _ in range(2):
        assert main(_cli_build(cat, out, "--set", "nonexistent=1")) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "unknown key(s) ['nonexistent']" in err, err
        assert read_manifest(out).version == 1 and _parquets(out) == shards
    # malformed values and YAML tags: the same
    for bad in ("chunk_frames=[1,", "chunk_frames=!!python/object/apply:os.system [true]"):
        assert main(_cli_build(cat, out, "--set", bad)) == 2
        assert capsys.readouterr().err.count("\n") == 1
    # a typo in one catalog entry's overrides is a mistake of the run, named by its line
    _write_catalog(
        cat,
        [
            {"path": str(paths["alpha"]), "movie_id": "alpha"},
            {"path": str(paths["beta"]), "movie_id": "beta", "split": "val", "overrides": ["sampling.trian_fps=2"]},
            {"path": str(paths["gamma"]), "movie_id": "gamma", "split": "test"},
        ],
    )
    assert main(_cli_build(cat, out)) == 2
    err = capsys.readouterr().err
    assert "catalog.yaml:4 (beta)" in err and "trian_fps" in err and err.count("\n") == 1
    assert read_manifest(out).version == 1 and _parquets(out) == shards

    # one of three published movies unreachable: more than the default share (0.25) -> nothing published
    _write_catalog(
        cat,
        [
            {"path": str(paths["alpha"]), "movie_id": "alpha"},
            {"path": str(paths["beta"]), "movie_id": "beta", "split": "val"},
            {"path": str(paths["gamma"]), "movie_id": "gamma", "split": "test"},
        ],
    )
    paths["beta"].rename(tmp_path / "away.mkv")
    assert main(_cli_build(cat, out)) == 1
    err = capsys.readouterr().err
    assert "nothing published" in err and "beta" in err and "--max-failed-share" in err
    assert read_manifest(out).version == 1 and _parquets(out) == shards
    # allowed by a larger share: beta keeps its published version (never removed by a failure); alpha
    # and gamma are unchanged, so the version to publish is the current one: nothing is published
    assert main(_cli_build(cat, out, "--max-failed-share", "0.5", "--keep-versions", "1")) == 1
    cap = capsys.readouterr()
    assert "published version kept" in cap.err and "version 1 unchanged (nothing published)" in cap.out
    v2 = read_manifest(out)
    assert v2.version == 1 and set(v2.movies) == {"alpha", "beta", "gamma"}
    assert v2.movies["beta"].key == v1.movies["beta"].key and _parquets(out) == shards

    # every movie unreachable: nothing published, nothing deleted
    for name in ("alpha", "gamma"):
        paths[name].rename(tmp_path / f"away-{name}.mkv")
    assert main(_cli_build(cat, out, "--keep-versions", "1")) == 1
    assert "all 3 movie(s) failed" in capsys.readouterr().err
    assert read_manifest(out).version == 1 and _parquets(out) == shards
    assert [p for p in verify(str(out)) if p.severity == "error"] == []


def test_an_empty_catalog_is_refused(tmp_path):
    from flows.build import validate_build

    cat = _write_catalog(tmp_path / "catalog.yaml", [])
    with pytest.raises(ConfigError, match="lists no movies"):
        validate_build(str(cat), str(tmp_path / "ds"))


def test_each_dataset_has_its_own_summary_key_and_reasons_are_named(tmp_path, monkeypatch):
    from flows.build import _rejected_by_reason, summary_artifact_key

    a, b = summary_artifact_key(str(tmp_path / "a" / "ds")), summary_artifact_key(str(tmp_path / "b" / "ds"))
    assert a != b and a.startswith("build-summary-ds-") and b.startswith("build-summary-ds-")
    monkeypatch.chdir(tmp_path / "..")
    assert summary_artifact_key(str(tmp_path / "a" / "ds")) == summary_artifact_key(f"{tmp_path.name}/a/ds")
    assert _rejected_by_reason({"vertical_disparity": 2, "disparity_range": 1, "left_right_consistency": 0}) == (
        "disparity_range 1, vertical_disparity 2"
    )
