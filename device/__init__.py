"""acmon device side: the one log-mel front end, streaming pipeline, int8 inference and MQTT alerts."""

__version__ = "0.1.0"
