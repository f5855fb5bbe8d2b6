"""The long-running process: the Runner that wires the rest, site calibration, the daemon config loader, systemd notification, CLI plumbing."""
