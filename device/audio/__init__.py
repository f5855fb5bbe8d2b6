"""Audio in: WAV files, the microphone and raw PCM as one kind of stream; resampling; the ring buffer; input health."""
