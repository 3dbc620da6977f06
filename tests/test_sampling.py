"""The sampling rules of the method, exactly, on constructed cases (no video involved)."""

from __future__ import annotations

import dataclasses

import pytest

from pipeline.errors import ConfigError
from pipeline.probe import Chapter
from pipeline.sampling import SamplingConfig, kept_frame_range, sample_frames

NO_CHAPTER_DROP = SamplingConfig(drop_first_chapters=0, drop_last_chapters=0)


@dataclasses.dataclass
class Case:
    shots: list[tuple[int, int]]
    split: str
    expected: list[int]
    fps: float = 24.0
    chapters: tuple = ()
    config: SamplingConfig = dataclasses.field(default_factory=lambda: NO_CHAPTER_DROP)


CASES = [
    pytest.param(Case([(0, 48)], "train", [0, 6, 12, 18]), id="train/first-24-frames-at-4fps"),
    pytest.param(Case([(0, 48)], "val", [0]), id="val/first-24-frames-at-1fps"),
    pytest.param(Case([(0, 48)], "test", [0]), id="test/same-rate-as-val"),
    pytest.param(Case([(0, 23)], "train", []), id="train/clip-shorter-than-1s-dropped"),
    pytest.param(Case([(0, 24)], "train", [0, 6, 12, 18]), id="train/clip-of-exactly-1s-kept"),
    pytest.param(Case([(0, 130)], "train", [0, 6, 12, 18, 96, 102, 108, 114]), id="train/window-every-4s"),
    pytest.param(Case([(0, 100)], "train", [0, 6, 12, 18, 96]), id="train/window-cut-at-shot-end"),
    pytest.param(Case([(0, 200)], "val", [0, 96, 192]), id="val/one-frame-per-window"),
    pytest.param(
        Case([(10, 40), (40, 50), (50, 80)], "train", [10, 16, 22, 28, 50, 56, 62, 68]),
        id="train/windows-restart-at-each-shot",
    ),
    pytest.param(
        Case(
            [(0, 60)],
            "train",
            [0, 10, 20, 30, 40, 50],
            fps=30.0,
            config=dataclasses.replace(NO_CHAPTER_DROP, head_frames=60, train_fps=3.0),
        ),
        id="train/30fps-step-10-configurable-head",
    ),
    pytest.param(
        Case(
            [(0, 48), (48, 96), (96, 144)],
            "train",
            [48, 54, 60, 66],
            chapters=(Chapter(0, 2, "logos"), Chapter(2, 4, "film"), Chapter(4, 6, "credits")),
            config=SamplingConfig(),
        ),
        id="train/first-and-last-chapter-dropped",
    ),
    pytest.param(
        Case(
            [(0, 144)],
            "train",
            [48, 54, 60, 66],
            chapters=(Chapter(0, 2), Chapter(2, 4), Chapter(4, 6)),
            config=SamplingConfig(window_every_seconds=2.0),
        ),
        id="train/chapter-drop-is-per-frame-not-per-shot",
    ),
    pytest.param(
        Case([(0, 48)], "train", [0, 6, 12, 18], chapters=(Chapter(0, 2),), config=SamplingConfig()),
        id="train/single-chapter-never-dropped",
    ),
    pytest.param(
        Case([(0, 48)], "train", [0, 6, 12, 18], chapters=(), config=SamplingConfig()), id="train/no-chapters"
    ),
    pytest.param(
        Case([(0, 48), (48, 96)], "train", [0, 6, 12, 18, 48, 54, 60, 66], chapters=(Chapter(0, 1),)),
        id="train/drop-0-keeps-frames-past-the-last-chapter-mark",
    ),
]


@pytest.mark.parametrize("case", CASES)
def test_sample_frames(case: Case):
    assert sample_frames(case.shots, case.fps, case.split, case.chapters, case.config) == case.expected


def test_shots_may_be_objects_with_start_and_end():
    from pipeline.shots import Shot

    assert sample_frames([Shot(0, 0, 48)], 24.0, "val", (), NO_CHAPTER_DROP) == [0]


def test_kept_range_uses_chapter_times():
    chapters = [Chapter(0, 1.5), Chapter(1.5, 3.0), Chapter(3.0, 4.0)]
    assert kept_frame_range(96, 24.0, chapters, SamplingConfig()) == (36, 72)


def test_unknown_split_lists_valid_ones():
    with pytest.raises(ConfigError, match="train, val, test"):
        sample_frames([(0, 48)], 24.0, "training", (), NO_CHAPTER_DROP)


@pytest.mark.parametrize(
    "field,value", [("train_fps", 0.0), ("window_every_seconds", -1.0), ("drop_first_chapters", -1)]
)
def test_bad_config_values_are_config_errors(field, value):
    with pytest.raises(ConfigError):
        SamplingConfig(**{field: value})
