"""Small CNNs over one log-mel patch, sized for int8 inference on a Raspberry Pi."""

from __future__ import annotations

from device.analysis.features import FeatureParams

from .tf_setup import import_tensorflow


def build_autoencoder(params: FeatureParams, batch_size: int | None = None, bottleneck: int = 32):
    """Convolutional autoencoder: a normalized patch in, its reconstruction out.

    Trained on normal sound only, it learns to rebuild what a healthy machine
    sounds like through a narrow bottleneck; a fault it has never heard is
    rebuilt poorly, and the mean squared reconstruction error is the anomaly
    score ('reconstruction_mse').

    The encoder halves time and frequency three times with strided 3x3
    convolutions, so n_frames and n_mels must be divisible by 8. The export
    copy is built with batch_size=1: a fixed batch keeps SHAPE/PACK ops out of
    the int8 graph.

    Args:
        params: front-end parameters; the input is (n_frames, n_mels, 1).
        batch_size: None for training, 1 for export.
        bottleneck: width of the dense code.

    Returns:
        An uncompiled keras.Model.
    """
    tf = import_tensorflow()
    keras = tf.keras
    layers = keras.layers
    n_frames, n_mels = params.patch_shape
    if n_frames % 8 or n_mels % 8:
        raise ValueError(f"patch {params.patch_shape} must be divisible by 8 in both axes for this autoencoder")
    inputs = keras.Input(shape=(n_frames, n_mels, 1), batch_size=batch_size, name="logmel")
    x = inputs
    for filters in (16, 32, 32):
        x = layers.Conv2D(filters, 3, strides=2, padding="same", activation="relu")(x)
    coarse_shape = (n_frames // 8, n_mels // 8, 16)
    x = layers.Conv2D(coarse_shape[2], 1, activation="relu")(x)
    x = layers.Flatten()(x)
    x = layers.Dense(bottleneck, activation="relu", name="code")(x)
    x = layers.Dense(coarse_shape[0] * coarse_shape[1] * coarse_shape[2], activation="relu")(x)
    x = layers.Reshape(coarse_shape)(x)
    for filters in (32, 32, 16):
        x = layers.Conv2DTranspose(filters, 3, strides=2, padding="same", activation="relu")(x)
    outputs = layers.Conv2D(1, 3, padding="same", name="reconstruction")(x)
    return keras.Model(inputs, outputs, name="acmon_autoencoder")


def copy_for_export(model, params: FeatureParams, **kwargs):
    """The same network rebuilt with batch_size=1 and the trained weights."""
    export_model = build_autoencoder(params, batch_size=1, **kwargs)
    export_model.set_weights(model.get_weights())
    return export_model


def build_classifier(params: FeatureParams, n_classes: int, batch_size: int | None = None):
    """Small CNN classifier for labelled faults: normal (class 0) versus named fault classes.

    Three strided convolution blocks, global average pooling and a softmax,
    about 25k parameters. The anomaly score on the device is 1 - P(normal)
    ('anomaly_probability'), so an unknown new fault still scores high when
    it does not look normal.

    Args:
        params: front-end parameters; the input is (n_frames, n_mels, 1).
        n_classes: number of labels, 'normal' first.
        batch_size: None for training, 1 for export.
    """
    tf = import_tensorflow()
    keras = tf.keras
    layers = keras.layers
    inputs = keras.Input(shape=(*params.patch_shape, 1), batch_size=batch_size, name="logmel")
    x = inputs
    for filters in (16, 32, 64):
        x = layers.Conv2D(filters, 3, strides=2, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(0.2)(x)
    outputs = layers.Dense(n_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="acmon_classifier")


def copy_classifier_for_export(model, params: FeatureParams, n_classes: int):
    """The same classifier rebuilt with batch_size=1 and the trained weights."""
    export_model = build_classifier(params, n_classes, batch_size=1)
    export_model.set_weights(model.get_weights())
    return export_model


def build_band_statistics(params: FeatureParams, batch_size: int | None = None):
    """Per-band statistics of one patch: band mean and maximum over time, and (absolute input) level and tilt.

    The descriptor that the Gaussian model whitens. The band means carry the
    spectral balance (a bearing resonance, a mains harmonic, a louder band);
    the maxima carry what happens briefly (a rub, a blade pass, a crackle)
    that a mean over a second would dilute. Both are taken after removing the
    window's mean level, so they describe the spectrum's shape.

    With params.normalization 'none' the model sees absolute dB and keeps two
    side features that a per-window normalization throws away: the window's
    level (mean dB over the patch) and its spectral tilt (dB per octave, see
    device.analysis.features.tilt_weights). A machine that gets louder, or whose sound
    leans further to the highs, is then not normalized into looking healthy.
    All of it is plain int8 ops (MEAN, SUB, MAX pooling, FULLY_CONNECTED), so
    the statistics are computed inside the model.

    Returns:
        An uncompiled keras.Model from (n_frames, n_mels, 1) to (2 * n_mels,), or to
        (2 * n_mels + 2,) when params.normalization is 'none'.
    """
    import numpy as np  # noqa: PLC0415

    from device.analysis.features import tilt_weights  # noqa: PLC0415

    tf = import_tensorflow()
    keras = tf.keras
    layers = keras.layers
    n_frames, n_mels = params.patch_shape
    inputs = keras.Input(shape=(n_frames, n_mels, 1), batch_size=batch_size, name="logmel")
    x = layers.Reshape((n_frames, n_mels))(inputs)
    band_mean = layers.GlobalAveragePooling1D(name="band_mean_db")(x)  # (n_mels,)
    if params.normalization != "none":
        # The input is already normalized: its level carries nothing; the shape statistics as before.
        mean = band_mean
        peak = layers.GlobalMaxPooling1D(name="band_max")(x)
        outputs = layers.Concatenate(name="band_statistics")([mean, peak])
        return keras.Model(inputs, outputs, name="acmon_band_statistics")
    level = layers.Reshape((1,))(layers.GlobalAveragePooling1D(name="level_db")(layers.Reshape((n_mels, 1))(band_mean)))
    mean = layers.Subtract(name="band_mean")([band_mean, level])  # broadcasts the level over the bands
    peak = layers.Subtract(name="band_max")([layers.GlobalMaxPooling1D()(x), level])
    tilt_layer = layers.Dense(1, use_bias=False, trainable=False, name="tilt_db_per_octave")
    tilt = tilt_layer(band_mean)
    tilt_layer.set_weights([np.asarray(tilt_weights(params), dtype=np.float32)[:, None]])
    outputs = layers.Concatenate(name="band_statistics")([mean, peak, level, tilt])
    return keras.Model(inputs, outputs, name="acmon_band_statistics")


def build_gaussian(params: FeatureParams, mean, whitening, batch_size: int | None = 1):
    """Band statistics followed by a fixed whitening layer: output z = (d - mean) @ whitening.

    With whitening = V diag(lambda^-1/2) from the eigendecomposition of the
    normal descriptors' covariance, the squared length of z is the
    Mahalanobis distance of the window to normal. The device's Scorer
    (device/analysis/gaussian.py) takes it from there. Eigenvector columns are unit
    vectors, which quantize to int8 per output channel far better than a
    Cholesky factor of the precision matrix (measured: int8 AUC 0.950 against
    0.943 on the detection benchmark, float 0.952).

    Args:
        mean: float array (descriptor size,), the normal descriptors' mean.
        whitening: float array (descriptor size, descriptor size).

    Returns:
        An uncompiled keras.Model from (n_frames, n_mels, 1) to (descriptor size,).
    """
    import numpy as np  # noqa: PLC0415

    tf = import_tensorflow()
    keras = tf.keras
    stats = build_band_statistics(params, batch_size=batch_size)
    width = int(stats.output.shape[-1])
    whiten = keras.layers.Dense(width, name="whiten")
    model = keras.Model(stats.input, whiten(stats.output), name="acmon_gaussian")
    w = np.asarray(whitening, dtype=np.float32)
    whiten.set_weights([w, (-np.asarray(mean, dtype=np.float32) @ w).astype(np.float32)])
    return model
