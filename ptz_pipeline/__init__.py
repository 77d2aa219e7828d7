"""ptz-pipeline: Dagster wiring for PTZ camera georegistration (see ARCHITECTURE.md)."""

import os

# The estimator's many small least-squares problems run 1.5x faster with single-threaded BLAS on the 2-core
# target (measured: 54 vs 84 ms per query frame); parallelism comes from torch and from runs. Must be set
# before numpy loads; an explicit setting in the environment wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
