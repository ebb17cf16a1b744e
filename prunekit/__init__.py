"""prunekit: compress transformer language models and measure what it buys."""

__version__ = "0.1.0"
