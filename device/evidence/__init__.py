"""Files an alarm leaves on disk: the clip, its spectrogram PNG, and score plots."""
