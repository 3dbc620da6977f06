"""The staged plan of a movie's chunks, as a typed object: names parse back, relabelled chunks are found
from the plan, and a relabelled shot replaces its originals in order."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from pipeline.ingest import ChunkPlan, WorkDir, chunk_name, merge_relabelled, parse_chunk_name


def test_chunk_names_parse_back():
    assert parse_chunk_name(chunk_name(3, 1)) == (3, 1, False)
    assert parse_chunk_name(chunk_name(12345, 7, swap=True)) == (12345, 7, True)
    with pytest.raises(ValueError, match="not a chunk name"):
        parse_chunk_name("plan.json")


def test_plan_round_trips_through_the_staging_folder_in_the_same_json(tmp_path):
    plan = ChunkPlan(
        shots=[{"shot_id": 0, "start_frame": 0, "end_frame": 30}],
        samples=9,
        chunks=["s00000-p000", "s00002-p000", "s00002-p001", "s00005-p000"],
    )
    work = WorkDir(tmp_path / "w")
    work.root.mkdir()
    work.write_plan(plan)
    assert json.loads(work.plan_path.read_text()) == {"shots": plan.shots, "samples": 9, "chunks": plan.chunks}
    assert work.read_plan() == plan
    assert plan.relabelled_chunks({2, 5}) == ["s00002-p000x", "s00002-p001x", "s00005-p000x"]
    work.plan_path.write_text('{"shots": [')  # half written: decode again
    assert work.read_plan() is None


def test_relabelled_shots_replace_their_originals_in_shot_order():
    s = [SimpleNamespace(shot_id=i, part=p, name=chunk_name(i, p)) for i, p in ((0, 0), (1, 0), (1, 1), (2, 0))]
    fixed = [SimpleNamespace(shot_id=1, part=p, name=chunk_name(1, p, swap=True)) for p in (1, 0)]
    merged = merge_relabelled(s, fixed)
    assert [x.name for x in merged] == ["s00000-p000", "s00001-p000x", "s00001-p001x", "s00002-p000"]


def test_swapped_eye_logic_lives_in_one_module_and_keeps_its_old_names():
    import pipeline.disparity
    import pipeline.ingest
    import pipeline.swap as swap

    for name in ("SwapDecision", "detect_swapped_eyes", "decide_swapped_eyes"):
        assert getattr(pipeline.disparity, name) is getattr(swap, name)
    for name in ("SwapReport", "swap_report", "SWAP_MODES", "merge_relabelled"):
        assert getattr(pipeline.ingest, name) is getattr(swap, name)
    assert [swap.frame_verdict(e) for e in (0.3, 0.04, -0.04, -0.2)] == ["reversed", "undecided", "undecided", "normal"]
    assert swap.decide_swapped_eyes([0.5, 0.4, 0.6]).swapped and not swap.decide_swapped_eyes([0.5, -0.4, -0.6]).swapped
