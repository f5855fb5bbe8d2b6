"""acmon training side: datasets, synthetic machine sounds, a small CNN and int8 TFLite export."""

import device as _device  # noqa: F401  - first, so it pins OpenBLAS threads before numpy loads
