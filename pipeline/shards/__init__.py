"""The Parquet shard store: the contract between the dataset builders and the trainer.

Plain Parquet any tool reads (pyarrow, DuckDB, pandas, Spark), one row per kept frame, written in
size-bounded shards per movie with a JSON manifest published atomically and last. See
:mod:`pipeline.shards.schema` for the columns and :mod:`pipeline.shards.manifest` for the layout.

Typical use::

    from pipeline import shards
    with shards.MovieShardWriter(dataset, movie_id, key, shards.ShardConfig(), meta) as w:
        for record in records:
            w.write(record)
    shards.publish(dataset)
    for sample in shards.iter_samples(dataset, columns=["image", "disparity", "valid"]):
        ...
"""

from pipeline.shards.clips import count_clips, iter_clips
from pipeline.shards.codec import (
    DISPARITY_STEP_PX,
    decode_disparity,
    decode_image,
    encode_disparity,
    encode_image,
    pack_mask,
    unpack_mask,
)
from pipeline.shards.inspect import inspect_dataset, summarize
from pipeline.shards.manifest import (
    MANIFEST_NAME,
    MOVIE_MANIFEST_NAME,
    DatasetManifest,
    MovieIndex,
    MovieManifest,
    MovieRef,
    ShardEntry,
    committed_movies,
    garbage_collect,
    load_movie_manifest,
    migrate,
    movie_folder,
    publish,
    publish_update,
    read_manifest,
)
from pipeline.shards.reader import (
    ShardInfo,
    decode_rows,
    iter_samples,
    list_shards,
    open_shard,
    read_row_group,
    read_sample,
)
from pipeline.shards.records import SPLITS, FrameRecord, RejectedRecord
from pipeline.shards.schema import (
    FRAME_SCHEMA,
    PROVENANCE_COLUMNS,
    REJECTED_SCHEMA,
    RENAMED_COLUMNS,
    SCHEMA_VERSION,
    STATS_COLUMNS,
    current_names,
)
from pipeline.shards.verify import Problem, verify
from pipeline.shards.writer import (
    MovieShardWriter,
    ShardConfig,
    encode_records,
    encode_rejected,
    read_chunk,
    write_chunk,
)

__all__ = [
    "SCHEMA_VERSION",
    "RENAMED_COLUMNS",
    "current_names",
    "FRAME_SCHEMA",
    "REJECTED_SCHEMA",
    "STATS_COLUMNS",
    "PROVENANCE_COLUMNS",
    "SPLITS",
    "DISPARITY_STEP_PX",
    "FrameRecord",
    "RejectedRecord",
    "ShardConfig",
    "encode_records",
    "encode_rejected",
    "write_chunk",
    "read_chunk",
    "MovieShardWriter",
    "ShardEntry",
    "MovieManifest",
    "DatasetManifest",
    "MovieIndex",
    "MovieRef",
    "migrate",
    "MANIFEST_NAME",
    "MOVIE_MANIFEST_NAME",
    "movie_folder",
    "load_movie_manifest",
    "committed_movies",
    "publish",
    "publish_update",
    "garbage_collect",
    "read_manifest",
    "ShardInfo",
    "list_shards",
    "open_shard",
    "iter_samples",
    "iter_clips",
    "count_clips",
    "read_row_group",
    "read_sample",
    "decode_rows",
    "Problem",
    "verify",
    "inspect_dataset",
    "summarize",
    "encode_image",
    "decode_image",
    "encode_disparity",
    "decode_disparity",
    "pack_mask",
    "unpack_mask",
]
