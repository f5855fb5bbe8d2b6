"""acmon firmware tools: inspect, verify and prepare models and devices."""
