"""The YAML config: its schema (one pydantic model per section), bounded reading and one-line errors."""
