"""The package's own errors: every failure fedcore reports is one of these."""

__all__ = ["FedCoreError", "MessageError", "ConfigError", "AggregationError", "PartitionError"]


class FedCoreError(Exception):
    """Base class of every error raised by fedcore."""


class MessageError(FedCoreError, ValueError):
    """A message could not be encoded or decoded: the text names the problem."""


class ConfigError(FedCoreError, ValueError):
    """A codec, compression or partition setting is invalid."""


class AggregationError(FedCoreError, ValueError):
    """Updates cannot be aggregated (mismatched names or shapes, no weight)."""


class PartitionError(FedCoreError, ValueError):
    """A dataset cannot be partitioned as asked."""
