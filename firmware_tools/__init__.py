"""acmon firmware tools: inspect, verify and prepare models and devices."""

import device as _device  # noqa: F401  - first, so it pins OpenBLAS threads before numpy loads
