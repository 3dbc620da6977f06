"""Check a published dataset against its manifest: every shard present, whole, listed and decodable.

A dataset is copied between disks and buckets, written by interruptible jobs and read by long
training runs; a bad shard found at hour 30 of training is expensive. :func:`verify` finds, for
every shard: missing file, truncated file, size or checksum mismatch, unreadable Parquet footer,
schema drift, row-count mismatch, undecodable sampled rows; and in each movie folder, Parquet files
the manifest does not list. Leftovers of interrupted writes are reported as warnings.
"""

from __future__ import annotations

import hashlib
import json
import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterable

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem
from tqdm import tqdm

from pipeline.errors import BadInputError
from pipeline.shards.manifest import (
    MOVIE_MANIFEST_NAME,
    MOVIES_DIR,
    MovieManifest,
    ShardEntry,
    footer_digest,
    manifest_location,
    read_manifest,
)
from pipeline.shards.reader import decode_rows
from pipeline.shards.schema import FRAME_SCHEMA, REJECTED_SCHEMA, check_schema

__all__ = ["Problem", "verify"]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a dataset.

    Attributes:
        path: the shard or folder, relative to the dataset.
        kind: ``missing``, ``truncated``, ``size``, ``checksum``, ``footer``, ``pages``,
            ``unreadable``, ``schema``, ``rows``, ``decode``, ``unlisted``, ``movie`` (errors);
            ``stale``, ``unreferenced``, ``staging``, ``stray`` (warnings: leftovers of
            interrupted or running work).
        message: what is wrong, in words.
        severity: ``error`` or ``warning``.
    """

    path: str
    kind: str
    message: str
    severity: str = "error"

    def __str__(self) -> str:
        return f"{self.severity.upper():7s} {self.path}: {self.kind}: {self.message}"


def _sha256(fs, path: str) -> str:
    h = hashlib.sha256()
    with fs.open(path, "rb") as fh:
        while block := fh.read(4 << 20):
            h.update(block)
    return h.hexdigest()


def _check_file(
    fs, root: str, rel: str, entry: ShardEntry, schema: pa.Schema, checksum: bool, sample_rows: int, rng: random.Random
) -> list[Problem]:
    path = f"{root}/{rel}"
    if not fs.exists(path):
        return [Problem(rel, "missing", "listed in the manifest but not found")]
    problems: list[Problem] = []
    size = fs.size(path)
    if size < entry.bytes:
        problems.append(Problem(rel, "truncated", f"{size} bytes, manifest says {entry.bytes}"))
    elif size != entry.bytes:
        problems.append(Problem(rel, "size", f"{size} bytes, manifest says {entry.bytes}"))
    if checksum and not problems:
        digest = _sha256(fs, path)
        if digest != entry.sha256:
            problems.append(Problem(rel, "checksum", f"sha256 {digest[:12]}..., manifest says {entry.sha256[:12]}..."))
    if not checksum and not problems and entry.footer_sha256:
        try:
            with fs.open(path, "rb") as fh:
                footer = footer_digest(fh)
        except (OSError, ValueError) as exc:
            footer = f"unreadable ({exc})"
        if footer != entry.footer_sha256:
            problems.append(Problem(rel, "footer", "Parquet footer differs from the manifest's digest"))
    try:
        with _open(fs, path) as fh:
            pf = pq.ParquetFile(fh, page_checksum_verification=True)
            md = pf.metadata
            for issue in check_schema(pf.schema_arrow, schema):
                problems.append(Problem(rel, "schema", issue))
            if md.num_rows != entry.rows:
                problems.append(Problem(rel, "rows", f"{md.num_rows} rows, manifest says {entry.rows}"))
            groups = [md.row_group(i).num_rows for i in range(md.num_row_groups)]
            if entry.row_group_rows and groups != list(entry.row_group_rows):
                problems.append(Problem(rel, "rows", f"row groups {groups}, manifest says {entry.row_group_rows}"))
            sampled = schema is FRAME_SCHEMA and md.num_rows and sample_rows > 0
            picks = _pick_rows(groups, sample_rows, rng) if sampled else []
            tables: dict[int, pa.Table] = {}
            if not checksum and not problems:
                # no SHA-256: read every page instead, each against its CRC-32 (it finds a flipped
                # bit in an image blob that sampled rows miss); keep the sampled rows' row groups
                wanted = {_group_of(groups, r) for r in picks}
                for g in range(md.num_row_groups):
                    try:
                        table = pf.read_row_group(g, use_threads=False)
                    except (pa.ArrowException, OSError) as exc:
                        problems.append(Problem(rel, "pages", f"row group {g}: {exc}"))
                        break
                    if g in wanted:
                        tables[g] = table
            if sampled and not any(p.kind == "pages" for p in problems):
                problems.extend(_check_decode(pf, rel, groups, picks, tables))
            elif md.num_rows and checksum:
                pf.read(use_threads=False)  # small table (rejected frames): read it all (quick mode did above)
    except (pa.ArrowException, OSError, ValueError) as exc:
        kind = "truncated" if size < entry.bytes else "unreadable"
        problems.append(Problem(rel, kind, f"Parquet cannot be read ({exc})"))
    return problems


def _open(fs, path: str):
    """A Parquet source for one shard: Arrow's own file for a local path, fsspec's otherwise.

    Why (the ``verify`` exit-134 defect: "terminate called without an active exception" after
    "OK"): a Python file object makes Arrow hold the bytes it reads as Python buffers, and a
    threaded read hands them to Arrow's own CPU pool, whose workers drop their last references a
    moment *after* the read returned. When that moment fell after the interpreter had begun to
    exit, the worker's destructor asked for the GIL, Python ended the thread inside a C++
    destructor and the process aborted. Local shards are therefore opened natively (no Python
    buffers) and every read here is single-threaded (``use_threads=False``: the verify workers are
    the parallelism), so no Arrow task outlives the call that started it.
    """
    if isinstance(fs, LocalFileSystem):
        return pa.OSFile(path, "rb")
    return fs.open(path, "rb")


def _pick_rows(groups: list[int], n: int, rng: random.Random) -> list[int]:
    """First, last and random rows of a shard, ``n`` at most."""
    total = sum(groups)
    return sorted({0, total - 1, *(rng.randrange(total) for _ in range(max(0, n - 2)))})[: max(n, 1)]


def _group_of(groups: list[int], row: int) -> int:
    start = 0
    for g, n in enumerate(groups):
        if row < start + n:
            return g
        start += n
    return len(groups) - 1


def _check_decode(
    pf: pq.ParquetFile, rel: str, groups: list[int], picks: list[int], tables: dict[int, pa.Table] | None = None
) -> list[Problem]:
    problems: list[Problem] = []
    starts = [sum(groups[:i]) for i in range(len(groups))]
    for row in picks:
        g = _group_of(groups, row)
        try:
            table = (tables or {}).get(g)
            if table is None:
                table = pf.read_row_group(g, use_threads=False)
            sample = decode_rows(table.slice(row - starts[g], 1))[0]
            h, w = sample["height"], sample["width"]
            shapes = {
                k: sample[k].shape[:2] for k in ("image", "disparity", "valid", "sky") if sample.get(k) is not None
            }
            bad = {k: s for k, s in shapes.items() if s != (h, w)}
            if bad:
                problems.append(Problem(rel, "decode", f"row {row}: sizes {bad} differ from {h}x{w}"))
        except Exception as exc:  # any failure to decode is the finding, whatever raised it
            problems.append(Problem(rel, "decode", f"row {row} cannot be decoded ({type(exc).__name__}: {exc})"))
    return problems


def verify(
    dataset: str,
    checksum: bool = True,
    sample_rows: int = 2,
    seed: int = 0,
    workers: int = 4,
    progress: bool = False,
) -> list[Problem]:
    """Check every shard of a published dataset against its manifest; return all problems found.

    Args:
        dataset: dataset folder or ``manifest.json`` (local path or fsspec URI).
        checksum: compare SHA-256 of every file (reads every byte; off for a quick check).
        sample_rows: rows decoded per shard (first, last and random ones); 0 = none.
        seed: chooses the random rows (per shard, so the result does not depend on ``workers``).
        workers: files checked in parallel (hashing and decoding release the GIL; object stores
            are latency-bound).
        progress: show a progress bar over the files.

    Raises:
        BadInputError: there is no readable manifest (nothing to verify against).
    """
    manifest = read_manifest(dataset)
    root, _ = manifest_location(str(dataset))
    fs, root_path = fsspec.core.url_to_fs(root)
    root_path = root_path.rstrip("/")
    jobs: list[tuple[str, ShardEntry, pa.Schema, int]] = []
    problems: list[Problem] = []
    for mid, ref in manifest.refs.items():
        if manifest.format >= 2:  # two-level: loading movie.json checks it against the index's checksum
            try:
                movie = manifest.movies[mid]
            except BadInputError as exc:
                problems.append(Problem(ref.path, "movie", exc.problem))
                continue
        else:
            movie = manifest.movies[mid]
            problems += _check_movie_json(fs, f"{root_path}/{movie.folder}", movie)
        folder = f"{root_path}/{movie.folder}"
        listed = {s.path for s in movie.shards}
        jobs += [(f"{movie.folder}/{e.path}", e, FRAME_SCHEMA, sample_rows) for e in movie.shards]
        if movie.rejected is not None:
            listed.add(movie.rejected.path)
            jobs.append((f"{movie.folder}/{movie.rejected.path}", movie.rejected, REJECTED_SCHEMA, 0))
        problems += _check_folder(fs, folder, movie.folder, listed)

    def check(job: tuple[str, ShardEntry, pa.Schema, int]) -> list[Problem]:
        rel, entry, schema, n = job
        rng = random.Random(f"{seed}:{rel}")
        return _check_file(fs, root_path, rel, entry, schema, checksum, n, rng)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = pool.map(check, jobs)
        for found in tqdm(results, total=len(jobs), desc="verify", unit="file", disable=not progress):
            problems += found
    problems += _check_unreferenced(fs, root_path, {r.folder for r in manifest.refs.values()})
    problems += _check_strays(fs, root_path)
    problems += _check_staging(fs, root_path, root)
    return problems


def _check_movie_json(fs, folder: str, movie) -> list[Problem]:
    """A single-level dataset's movie: its own commit marker must exist and list the same files as
    the dataset manifest (a two-level one's is checked by its checksum when it is loaded)."""
    path = f"{folder}/{MOVIE_MANIFEST_NAME}"
    if not fs.exists(path):
        return [Problem(movie.folder, "movie", "listed movie folder has no movie.json (never committed)")]
    try:
        with fs.open(path, "rt", encoding="utf-8") as fh:
            own = MovieManifest.from_dict(json.load(fh))
    except (ValueError, KeyError) as exc:
        return [Problem(f"{movie.folder}/{MOVIE_MANIFEST_NAME}", "movie", f"unreadable ({exc})")]
    listed = lambda m: [(s.path, s.rows, s.sha256) for s in m.shards]  # noqa: E731
    if listed(own) != listed(movie):
        return [Problem(f"{movie.folder}/{MOVIE_MANIFEST_NAME}", "movie", "lists other shards than manifest.json")]
    return []


def _names(fs, folder: str) -> Iterable[str]:
    try:
        return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(folder, detail=False))
    except FileNotFoundError:
        return []


def _check_folder(fs, folder: str, rel_folder: str, listed: set[str]) -> list[Problem]:
    out = []
    for name in _names(fs, folder):
        if name.startswith(".") and name.endswith(".tmp"):
            out.append(Problem(f"{rel_folder}/{name}", "stale", "temporary file of an interrupted write", "warning"))
        elif name.endswith(".parquet") and name not in listed:
            out.append(
                Problem(
                    f"{rel_folder}/{name}", "unlisted", "Parquet file in a movie folder that the manifest does not list"
                )
            )
    return out


def _check_unreferenced(fs, root_path: str, referenced: set[str]) -> list[Problem]:
    out = []
    for movie in _names(fs, f"{root_path}/{MOVIES_DIR}"):
        for key in _names(fs, f"{root_path}/{MOVIES_DIR}/{movie}"):
            rel = f"{MOVIES_DIR}/{movie}/{key}"
            if rel not in referenced and fs.isdir(f"{root_path}/{rel}"):
                committed = fs.exists(f"{root_path}/{rel}/{MOVIE_MANIFEST_NAME}")
                what = (
                    "an older or unpublished committed movie" if committed else "an interrupted write (no movie.json)"
                )
                out.append(Problem(rel, "unreferenced", f"folder not in the current manifest: {what}", "warning"))
    return out


def _check_strays(fs, root_path: str) -> list[Problem]:
    """Parquet files under ``movies/`` outside any ``<movie_id>/<key>/`` folder: no manifest lists
    them, but a glob such as ``movies/**/*.parquet`` would read them."""
    out = []
    base = f"{root_path}/{MOVIES_DIR}"
    for name in _names(fs, base):
        if name.endswith(".parquet") and not fs.isdir(f"{base}/{name}"):
            out.append(Problem(f"{MOVIES_DIR}/{name}", "stray", "Parquet file outside any movie folder", "warning"))
        elif fs.isdir(f"{base}/{name}"):
            for inner in _names(fs, f"{base}/{name}"):
                if inner.endswith(".parquet") and not fs.isdir(f"{base}/{name}/{inner}"):
                    out.append(
                        Problem(
                            f"{MOVIES_DIR}/{name}/{inner}", "stray", "Parquet file outside any key folder", "warning"
                        )
                    )
    return out


def _check_staging(fs, root_path: str, root: str) -> list[Problem]:
    """Staged chunks in ``.work/``: a running ingest's, or an interrupted one's (warnings)."""
    from pipeline.shards.locks import movie_locked

    out = []
    work = f"{root_path}/.work"
    local = "://" not in root or root.startswith("file://")
    for movie in _names(fs, work):
        for key in _names(fs, f"{work}/{movie}"):
            running = local and movie_locked(root_path, movie)
            what = (
                "staging of an ingest running now"
                if running
                else "staging of an interrupted ingest: re-run it to resume, or the next build's garbage collection removes it"
            )
            out.append(Problem(f".work/{movie}/{key}", "staging", what, "warning"))
    return out
