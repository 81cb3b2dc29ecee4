"""What an ONNX graph in a package may hold, checked before onnxruntime ever sees its bytes.

- no external data: a tensor anywhere (initializers, sparse initializers, Constant attributes,
  subgraphs of If/Loop/Scan) stored outside the graph is refused, so no file path in a graph is
  ever opened (onnxruntime would resolve ``../../../etc/passwd`` relative to its working folder);
- only the standard operator domains: ``''`` / ``ai.onnx`` (tensor operators) and ``ai.onnx.ml``
  (tree ensembles, encoders): no custom operators, no contrib ops (``com.microsoft``), no local
  functions and no training graphs;
- the graph's inputs are exactly what the package's input plan feeds: one float matrix in
  ``matrix`` mode, one ``[n, 1]`` input per feature (string for a categorical one, float for a
  numeric one) in ``columns`` mode; its first output is a float or double tensor.

Every refusal is an ``InvalidInputError`` that says what was found.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ratekeeper.errors import InvalidInputError
from ratekeeper.packaging.schema import MAX_MODEL_BYTES, short

ALLOWED_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml"})
MAX_NODES = 100_000
"""Nodes of a graph and its subgraphs together (a converted GBM has a handful: the trees of an
ensemble are attributes of one node)."""
_EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL


def check_graph(model_bytes: bytes) -> Any:
    """The parsed ``onnx.ModelProto`` of ``model_bytes``, after every check above but the I/O."""
    import onnx
    from google.protobuf.message import DecodeError

    if len(model_bytes) > MAX_MODEL_BYTES:
        raise InvalidInputError(
            f"the ONNX graph is {len(model_bytes):,} bytes, "
            f"more than the {MAX_MODEL_BYTES:,} allowed"
        )
    try:
        model = onnx.ModelProto.FromString(model_bytes)
    except (DecodeError, RecursionError, ValueError):
        raise InvalidInputError("the ONNX graph is not a valid ONNX model") from None
    if not model.HasField("graph"):
        raise InvalidInputError("the ONNX file holds no graph")
    for opset in model.opset_import:
        _check_domain(opset.domain, "imports the operator set")
    if len(model.functions):
        raise InvalidInputError("the ONNX graph defines its own functions, which are not allowed")
    if len(model.training_info):
        raise InvalidInputError("the ONNX graph carries training graphs, which are not allowed")
    nodes = 0
    for graph in _graphs(model.graph):
        for tensor in _tensors(graph):
            if tensor.data_location == _EXTERNAL or len(tensor.external_data):
                raise InvalidInputError(
                    f"the ONNX graph stores tensor {short(tensor.name)} as external data "
                    "(a file path): packages must hold all their data"
                )
        for node in graph.node:
            _check_domain(node.domain, f"uses operator {short(node.op_type)} from")
        nodes += len(graph.node)
        if nodes > MAX_NODES:
            raise InvalidInputError(f"the ONNX graph has more than {MAX_NODES:,} nodes")
    return model


def check_io(session: Any, mode: str, features: tuple[str, ...], categorical: set[str]) -> None:
    """The session's inputs are what the input plan feeds, and its first output is numeric."""
    inputs = {i.name: i for i in session.get_inputs()}
    if mode == "matrix":
        only = next(iter(inputs.values())) if len(inputs) == 1 else None
        width = only.shape[-1] if only is not None and only.shape else None
        fits = (
            only is not None
            and only.type == "tensor(float)"
            and (not isinstance(width, int) or width == len(features))
        )
    else:
        expected = {f: "tensor(string)" if f in categorical else "tensor(float)" for f in features}
        extra = sorted(set(inputs) - set(expected))
        if extra:
            raise InvalidInputError(
                f"the ONNX graph reads input {short(extra[0])}, which the package's signature "
                "does not declare as a feature"
            )
        fits = {name: i.type for name, i in inputs.items()} == expected
    if not fits:
        shown = ", ".join(f"{name} {i.type}" for name, i in inputs.items())
        raise InvalidInputError(
            f"the ONNX graph's inputs ({shown[:200]}) are not the {mode} inputs the package feeds"
        )
    outputs = session.get_outputs()
    if not outputs or outputs[0].type not in ("tensor(float)", "tensor(double)"):
        raise InvalidInputError("the ONNX graph's first output must be a float or double tensor")


def _check_domain(domain: str, what: str) -> None:
    if domain not in ALLOWED_DOMAINS:
        raise InvalidInputError(
            f"the ONNX graph {what} domain {short(domain)}: only the standard domains "
            "'' / 'ai.onnx' and 'ai.onnx.ml' are allowed"
        )


def _graphs(graph: Any) -> Iterator[Any]:
    """The graph and every subgraph in its nodes' attributes, depth first."""
    yield graph
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("g"):
                yield from _graphs(attribute.g)
            for subgraph in attribute.graphs:
                yield from _graphs(subgraph)


def _tensors(graph: Any) -> Iterator[Any]:
    """Every tensor stored in ``graph`` itself (not in its subgraphs)."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            if attribute.HasField("sparse_tensor"):
                yield attribute.sparse_tensor.values
                yield attribute.sparse_tensor.indices
            for sparse in attribute.sparse_tensors:
                yield sparse.values
                yield sparse.indices
