"""The MiniLM/BERT encoder as an ONNX graph, built here from the safetensors weights (no torch, no export step).

`build(bert)` writes the same computation as `keel.embedding.model._Bert.encode` (embeddings, six
transformer blocks, mean pooling over the mask; the L2 normalisation stays in numpy) with ONNX Runtime's
fused CPU kernels from the `com.microsoft` domain: `Attention` (QKV projection, masked softmax and
context in one node), `SkipLayerNormalization` (residual add + LayerNorm), `BiasGelu` (bias add + exact
erf GELU). `quantized(model)` turns it into the int8 variant with ONNX Runtime's dynamic quantization
(weights int8 per column, activations quantized per batch at run time): `QAttention` and
`DynamicQuantizeMatMul`. Inputs: `input_ids` int64 (batch, length), `attention_mask` int32 (batch,
length) of 1/0, `position_ids` int64 (1, length); output `pooled` float32 (batch, width).

`session(model, threads)` opens it for `threads` intra-op threads and no inter-op pool: the embedder runs
one forward pass at a time in its own worker thread, next to the event loop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from keel.embedding.model import _Bert

MS = "com.microsoft"
OPSET = 17


def build(bert: _Bert, attention_bias: bool = False) -> Any:
    """An onnx.ModelProto computing the pooled (unnormalised) sentence vectors of `bert`'s weights.

    `bert` is read by attribute (words, positions, token_type, norm, eps, width, heads, layers with the
    fields of `_Layer`), so another BERT-shaped encoder can use it; `attention_bias` adds an input of that
    name, float32 (1, heads, length, length), added to every layer's attention scores (MPNet's relative
    positions: the bench's candidate models)."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    nodes: list[Any] = []
    inits: list[Any] = []

    def const(name: str, value: Any) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def node(op: str, inputs: list[str], output: str, domain: str = "", **attrs: Any) -> str:
        nodes.append(helper.make_node(op, inputs, [output], name=output, domain=domain, **attrs))
        return output

    words = const("words", bert.words)
    positions = const("positions", bert.positions + bert.token_type)  # single sentences: token type 0 only
    x = node(
        "Add",
        [
            node("Gather", [words, "input_ids"], "word_vectors"),
            node("Gather", [positions, "position_ids"], "position_vectors"),
        ],
        "embedded",
    )
    x = node(
        "LayerNormalization",
        [x, const("embed_norm_w", bert.norm[0]), const("embed_norm_b", bert.norm[1])],
        "embed_norm",
        axis=-1,
        epsilon=bert.eps,
    )
    scale = float(np.sqrt(bert.width // bert.heads))  # _Layer folded 1/sqrt(head_dim) into the query; undo it here
    for n, layer in enumerate(bert.layers):
        p = f"l{n}_"
        qkv = layer.qkv.copy()
        qkv_bias = layer.qkv_bias.copy()
        qkv[:, : bert.width] *= scale
        qkv_bias[: bert.width] *= scale
        bias_inputs = ["", "attention_bias"] if attention_bias else []
        attended = node(
            "Attention",
            [x, const(p + "qkv", qkv), const(p + "qkv_b", qkv_bias), "attention_mask", *bias_inputs],
            p + "attention",
            domain=MS,
            num_heads=bert.heads,
        )
        projected = node("MatMul", [attended, const(p + "out_w", layer.out)], p + "projected")
        x = node(
            "SkipLayerNormalization",
            [
                projected,
                x,
                const(p + "out_norm_w", layer.out_norm[0]),
                const(p + "out_norm_b", layer.out_norm[1]),
                const(p + "out_b", layer.out_bias),
            ],
            p + "attention_out",
            domain=MS,
            epsilon=bert.eps,
        )
        hidden = node(
            "BiasGelu",
            [node("MatMul", [x, const(p + "up_w", layer.up)], p + "up_mm"), const(p + "up_b", layer.up_bias)],
            p + "hidden",
            domain=MS,
        )
        down = node("MatMul", [hidden, const(p + "down_w", layer.down)], p + "down_mm")
        x = node(
            "SkipLayerNormalization",
            [
                down,
                x,
                const(p + "down_norm_w", layer.down_norm[0]),
                const(p + "down_norm_b", layer.down_norm[1]),
                const(p + "down_b", layer.down_bias),
            ],
            p + "out",
            domain=MS,
            epsilon=bert.eps,
        )
    mask = node(
        "Unsqueeze",
        [
            node("Cast", ["attention_mask"], "mask_f", to=TensorProto.FLOAT),
            const("axis_2", np.array([2], dtype=np.int64)),
        ],
        "mask_3d",
    )
    summed = node(
        "ReduceSum",
        [node("Mul", [x, mask], "masked"), const("axis_1", np.array([1], dtype=np.int64))],
        "summed",
        keepdims=0,
    )
    counted = node("ReduceSum", [mask, const("axis_1b", np.array([1], dtype=np.int64))], "counted", keepdims=0)
    node("Div", [summed, counted], "pooled")
    inputs = [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "length"]),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT32, ["batch", "length"]),
        helper.make_tensor_value_info("position_ids", TensorProto.INT64, [1, "length"]),
    ]
    if attention_bias:
        shape: list[str | int | None] = [1, bert.heads, "length", "length"]
        inputs.append(helper.make_tensor_value_info("attention_bias", TensorProto.FLOAT, shape))
    graph = helper.make_graph(
        nodes,
        "encoder",
        inputs,
        [helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["batch", bert.width])],
        inits,
    )
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(MS, 1)], ir_version=9
    )


def quantized(model: Any, attention: bool = True) -> Any:
    """The int8 variant of `model` (ONNX Runtime dynamic quantization: int8 weights, per-batch activation scales).

    `attention=False` leaves the Attention nodes in fp32 (QAttention has no attention_bias input)."""
    import logging
    import tempfile
    from pathlib import Path

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    def not_preprocessing_advice(record: logging.LogRecord) -> bool:  # the quantizer's advice for image models
        return "pre-processing before quantization" not in record.getMessage()

    root = logging.getLogger()
    with tempfile.TemporaryDirectory(prefix="keel-embed-") as tmp:
        source, target = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        onnx.save(model, source)
        root.addFilter(not_preprocessing_advice)
        try:
            quantize_dynamic(
                source,
                target,
                weight_type=QuantType.QInt8,
                per_channel=True,
                op_types_to_quantize=["MatMul", "Attention"] if attention else ["MatMul"],
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
            )
        finally:
            root.removeFilter(not_preprocessing_advice)
        return onnx.load(target)


def session(model: Any, threads: int) -> Any:
    """An onnxruntime.InferenceSession for `model` on `threads` intra-op threads."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
