"""acmon training side: datasets, synthetic machine sounds, a small CNN and int8 TFLite export."""
