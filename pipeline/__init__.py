"""depthmine's data pipeline: plain library code from a stereo movie file to Parquet shards.

Nothing in this package imports Prefect; the flows in :mod:`flows` orchestrate it.
"""

__version__ = "0.1.0"
