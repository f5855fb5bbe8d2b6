"""Import TensorFlow quietly and reproducibly; the one place training touches its start-up."""

from __future__ import annotations

import logging
import os


def import_tensorflow(seed: int | None = None):
    """Import TensorFlow with its C++ and absl logging turned down, optionally seeding everything.

    Args:
        seed: seeds Python, NumPy and TensorFlow and asks for deterministic ops, so the
            same data and seed give the same model on the same machine.

    Returns:
        The tensorflow module.
    """
    # 3 also hides TF's C++ "E0000 ... NodeDef mentions attribute" lines, which are harmless
    # version-skew notices that look like failures; real failures still raise Python exceptions.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    import tensorflow as tf  # noqa: PLC0415 - deliberately lazy: only training pays for it

    tf.get_logger().setLevel(logging.ERROR)
    logging.getLogger("absl").setLevel(logging.ERROR)
    if seed is not None:
        tf.keras.utils.set_random_seed(seed)
        tf.config.experimental.enable_op_determinism()
    return tf
