"""Orchestra: durable workflows for AI coding agents with human checkpoints."""

__version__ = "0.1.0"
