"""acmon device side: the one log-mel front end, streaming pipeline, int8 inference and MQTT alerts."""

import os as _os

# The front end's matrix products are tiny (64 x 257 x 64 per window): OpenBLAS threads
# only add hand-off latency, and on a busy 2-core machine they made compute_logmel 21x
# slower (12.3 ms against 0.58 ms per window, measured). Must be set before numpy loads;
# a value the user exported wins.
_os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__version__ = "0.1.0"
