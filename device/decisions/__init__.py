"""Score to alarm: smoothing, patience, hysteresis and cooldown, and the threshold fitted to a false-alarm rate."""
