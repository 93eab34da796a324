"""fedcore: what every federated participant shares, in numpy only.

The message container and its codecs, compression transforms, aggregation,
data partitioning, small numpy models and a bounded JSON reader for untrusted
payloads (`fedcore.safejson`). It runs unchanged on a PYNQ board
(Python 3.8, numpy, no torch), on the coordinator and inside the PyTorch
simulation.
"""

from .compression import (
    CodecPolicy,
    CompressionConfig,
    Compressor,
    ErrorFeedback,
    PruneConfig,
    SparsifyConfig,
    magnitude_prune,
    tensor_kind,
    topk_sparsify,
)
from .container import (
    FORMAT_VERSION,
    MAGIC,
    DecodeLimits,
    EncodeReport,
    Message,
    TensorCodec,
    decode_message,
    encode_message,
)
from .errors import (
    AggregationError,
    ConfigError,
    FedCoreError,
    JSONError,
    MessageError,
    PartitionError,
)

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "AggregationError",
    "CodecPolicy",
    "CompressionConfig",
    "Compressor",
    "ConfigError",
    "DecodeLimits",
    "EncodeReport",
    "ErrorFeedback",
    "FedCoreError",
    "JSONError",
    "Message",
    "MessageError",
    "PartitionError",
    "PruneConfig",
    "SparsifyConfig",
    "TensorCodec",
    "decode_message",
    "encode_message",
    "magnitude_prune",
    "tensor_kind",
    "topk_sparsify",
]
__version__ = "0.1.0"
