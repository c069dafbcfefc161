"""duo: an experiment runner for learning to coordinate a novice and an expert agent."""

__version__ = "0.1.0"
