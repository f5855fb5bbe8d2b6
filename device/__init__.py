"""acmon device side: the one log-mel front end, streaming pipeline, int8 inference and MQTT alerts."""

# Importing acmon changes nothing in the process: the command-line entry points limit BLAS to one
# thread (device.daemon.cli.limit_blas_threads); a program that uses the library decides for itself.

__version__ = "0.1.0"
