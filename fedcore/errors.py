"""The package's own errors: every failure fedcore reports is one of these."""

from typing import Optional

__all__ = ["FedCoreError", "MessageError", "JSONError", "ConfigError", "AggregationError", "PartitionError"]


class FedCoreError(Exception):
    """Base class of every error raised by fedcore."""


class MessageError(FedCoreError, ValueError):
    """A message could not be encoded or decoded: the text names the problem."""


class JSONError(FedCoreError, ValueError):
    """A JSON document was refused (fedcore.safejson): `path` is where in the
    document (``$.a.b[2]``, ``$`` for the whole), `offset` the byte offset of a
    syntax problem when known, `reason` what is wrong."""

    def __init__(self, reason: str, path: str = "$", offset: Optional[int] = None):
        where = path if offset is None else "%s (byte %d)" % (path, offset)
        super().__init__("%s: %s" % (where, reason))
        self.reason = reason
        self.path = path
        self.offset = offset


class ConfigError(FedCoreError, ValueError):
    """A codec, compression or partition setting is invalid."""


class AggregationError(FedCoreError, ValueError):
    """Updates cannot be aggregated (mismatched names or shapes, no weight)."""


class PartitionError(FedCoreError, ValueError):
    """A dataset cannot be partitioned as asked."""
