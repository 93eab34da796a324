"""Small random ONNX models for the compiler's tests, built with onnx.helper.

    b = ModelBuilder((1, 5, 8, 8), seed=0)
    y = b.conv(b.input, 5, 7, 3, pads=1)
    y = b.op("Relu", [y])
    data = b.model(y)          # bytes of an opset-10 ModelProto

Weights are drawn with a gain near one (std 1/sqrt(fan_in)), so activations stay well
inside FP16BP8's +-128 and the error bound of `reference.error_bound` applies.
"""

from typing import List, Optional, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


class ModelBuilder:
    def __init__(self, shape: Sequence[int], seed: int = 0, input_name: str = "Input"):
        self.rng = np.random.default_rng(seed)
        self.shape = list(shape)
        self.input = input_name
        self.nodes: List[onnx.NodeProto] = []
        self.initializers: List[onnx.TensorProto] = []
        self.count = 0

    def name(self, prefix: str) -> str:
        self.count += 1
        return "%s_%d" % (prefix, self.count)

    def const(self, array: np.ndarray, name: Optional[str] = None) -> str:
        name = name or self.name("c")
        array = np.asarray(array)
        self.initializers.append(numpy_helper.from_array(
            array.astype(np.int64 if array.dtype.kind in "iu" else np.float32), name))
        return name

    def op(self, op_type: str, inputs: Sequence[str], outputs: int = 1, **attrs) -> str:
        names = [self.name(op_type.lower()) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), names,
                                           name=self.name(op_type), **attrs))
        return names[0]

    def conv(self, x: str, cin: int, cout: int, k, stride=1, pads=0, group: int = 1,
             bias: bool = True, **attrs) -> str:
        kh, kw = (k, k) if isinstance(k, int) else k
        fan_in = cin // group * kh * kw
        weight = self.rng.standard_normal((cout, cin // group, kh, kw)) / np.sqrt(fan_in)
        inputs = [x, self.const(weight)]
        if bias:
            inputs.append(self.const(0.1 * self.rng.standard_normal(cout)))
        stride = [stride, stride] if isinstance(stride, int) else list(stride)
        if "auto_pad" not in attrs:
            attrs["pads"] = [pads] * 4 if isinstance(pads, int) else list(pads)
        return self.op("Conv", inputs, kernel_shape=[kh, kw], strides=stride, group=group,
                       **attrs)

    def batchnorm(self, x: str, channels: int) -> str:
        r = self.rng
        return self.op("BatchNormalization", [
            x, self.const(1 + 0.2 * r.standard_normal(channels)),
            self.const(0.1 * r.standard_normal(channels)),
            self.const(0.1 * r.standard_normal(channels)),
            self.const(0.5 + r.random(channels))], epsilon=1e-5)

    def model(self, output: str, opset: int = 10, output_name: str = "Output",
              output_shape: Optional[Sequence[int]] = None) -> bytes:
        nodes = list(self.nodes)
        nodes.append(helper.make_node("Identity", [output], [output_name], name="final"))
        inputs = [helper.make_tensor_value_info(self.input, TensorProto.FLOAT, self.shape)]
        if output_shape is None:   # let ONNX's shape inference find it
            probe = helper.make_model(helper.make_graph(nodes, "probe", inputs, [],
                                                        self.initializers),
                                      opset_imports=[helper.make_opsetid("", opset)])
            inferred = onnx.shape_inference.infer_shapes(probe).graph.value_info
            found = [v for v in inferred if v.name == output_name]
            output_shape = [d.dim_value for d in found[0].type.tensor_type.shape.dim] \
                if found else [1]
        graph = helper.make_graph(
            nodes, "test", inputs,
            [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, output_shape)],
            self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        model.ir_version = 5
        return model.SerializeToString()


def run_onnxruntime(data: bytes, x: np.ndarray, input_name: str = "Input") -> np.ndarray:
    import onnxruntime

    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    return session.run(None, {input_name: x.astype(np.float32)})[0]
