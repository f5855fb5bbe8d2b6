"""User-facing errors: one line that names the file, key or value and what to do."""


class AcmonError(Exception):
    """An error caused by input the user controls (a file, a config key, a value).

    The message is shown as is, on one line, with no traceback. It names the
    offending file, key or value and, where there is one, what to do about it.
    """


class ConfigError(AcmonError):
    """The YAML configuration is invalid."""


class ModelError(AcmonError):
    """A model file is missing, is not TFLite, or does not match this device."""


class AudioError(AcmonError):
    """An audio file or stream cannot be read or is in an unsupported format."""
