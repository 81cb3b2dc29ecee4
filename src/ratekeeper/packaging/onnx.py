"""The ONNX flavor: tree ensembles and scikit-learn pipelines run by ONNX Runtime.

Two ways to feed the graph, recorded in the package:

- ``matrix``: one float32 tensor, one column per feature (LightGBM, XGBoost). Categorical
  features are encoded by ratekeeper to the integer codes the booster was trained on (the
  category order of the training frame); a level without a code becomes NaN.
- ``columns``: one ``[n, 1]`` input per rating factor (scikit-learn pipelines converted by
  skl2onnx): strings for categorical factors, float32 for numeric ones.

The converters run at registration; loading a package needs only onnxruntime.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import tempfile
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from ratekeeper.errors import InvalidInputError, UnsupportedModelError
from ratekeeper.packaging.frames import Columns, Factor, as_float, level_codes
from ratekeeper.packaging.onnx_graph import check_graph, check_io

TARGET_OPSET = 15  # onnxmltools' LightGBM and XGBoost converters are reliable up to 15
BATCH_ROWS = 10_000  # from this many rows on, score with every core


@dataclass(frozen=True)
class OnnxInputs:
    mode: str  # "matrix" | "columns"
    features: tuple[str, ...]
    categories: dict[str, tuple[str, ...]]
    """feature → levels in code order (matrix mode) or the levels the graph knows (columns mode)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "features": list(self.features),
            "categories": {k: list(v) for k, v in self.categories.items()},
        }

    @classmethod
    def from_dict(cls, body: Mapping[str, Any]) -> OnnxInputs:
        """From a manifest already checked by ``manifest.read_manifest``."""
        if body["mode"] not in ("matrix", "columns"):
            raise UnsupportedModelError(f"unknown ONNX input mode {body['mode']!r}")
        return cls(
            body["mode"],
            tuple(body["features"]),
            {k: tuple(v) for k, v in body["categories"].items()},
        )


class OnnxPredictor:
    flavor = "onnx"

    def __init__(self, model_bytes: bytes, inputs: OnnxInputs) -> None:

        # One policy at a time runs best on one thread: ONNX Runtime's default pool spins a
        # thread per core, and several rating-server workers would fight over the cores. Whole
        # books run the same single-threaded session on blocks of rows in parallel: a session
        # with several threads splits the trees between them and sums a policy's trees in
        # another order, so its price would differ from the quote's in the last float32 bits.
        self._model_bytes = model_bytes
        check_graph(model_bytes)
        self._session = _session(model_bytes, threads=1)
        check_io(self._session, inputs.mode, inputs.features, set(inputs.categories))
        self._output = self._session.get_outputs()[0].name
        self.inputs = inputs
        self._input_names = [i.name for i in self._session.get_inputs()]
        self._codes = {
            name: {level: float(code) for code, level in enumerate(levels)}
            for name, levels in inputs.categories.items()
        }
        self._plan = [(name, self._codes.get(name)) for name in inputs.features]
        self._bound = _RowBinding.of(self._session, inputs, self._output)

    def predict_row(self, row: Mapping[str, Any]) -> float:
        bound = self._bound
        if bound is not None and bound.lock.acquire(blocking=False):
            try:  # the row goes into preallocated arrays that ONNX Runtime reads and writes
                bound.row[:] = [
                    (codes.get(row[name], np.nan) if codes is not None else _number(row[name]))
                    for name, codes in self._plan
                ]
                # No RunOptions: with one, this onnxruntime looks up a graph-capture entry that
                # is not there and catches the exception, 40 µs per call (measured).
                self._session.run_with_iobinding(bound.binding)
                return float(bound.result[0])
            finally:
                bound.lock.release()
        if self.inputs.mode == "matrix":
            values = [
                (codes.get(row[name], np.nan) if codes is not None else _number(row[name]))
                for name, codes in self._plan
            ]
            feed = {self._input_names[0]: np.array([values], dtype=np.float32)}
        else:
            feed = {
                name: (
                    np.array([[row[name]]], dtype=object)
                    if codes is not None
                    else np.array([[_number(row[name])]], dtype=np.float32)
                )
                for name, codes in self._plan
            }
        return float(self._session.run([self._output], feed)[0].reshape(-1)[0])

    def predict_columns(self, columns: Columns, n_rows: int) -> np.ndarray:
        if self.inputs.mode == "matrix":
            matrix = np.empty((n_rows, len(self._plan)), dtype=np.float32)
            for j, (name, codes) in enumerate(self._plan):
                column = columns[name]
                if codes is not None:
                    code = level_codes(column, self.inputs.categories[name]).astype(np.float32)
                    code[code < 0] = np.nan
                    matrix[:, j] = code
                else:
                    matrix[:, j] = as_float(column)
            feed = {self._input_names[0]: matrix}
        else:
            feed = {}
            for name, codes in self._plan:
                column = columns[name]
                if codes is not None:
                    values = column.values() if isinstance(column, Factor) else column
                    feed[name] = np.asarray(values, dtype=object).reshape(-1, 1)
                else:
                    feed[name] = as_float(column).astype(np.float32).reshape(-1, 1)
        return self._run(feed, n_rows)

    def _run(self, feed: dict[str, np.ndarray], n_rows: int) -> np.ndarray:
        blocks = _blocks(n_rows)
        if len(blocks) == 1:
            out = self._session.run([self._output], feed)[0]
            return np.asarray(out, dtype=np.float64).reshape(-1)

        def run(block: slice) -> np.ndarray:
            part = {name: values[block] for name, values in feed.items()}
            return np.asarray(self._session.run([self._output], part)[0]).reshape(-1)

        return np.concatenate(list(_pool().map(run, blocks))).astype(np.float64)


class _RowBinding:
    """One row's input and output arrays, bound to a session once (``matrix`` mode).

    ``Session.run`` validates its inputs, makes a dict, an input tensor and an output array on
    every call: 10 µs of a 15 µs one-row call of the benchmark's 300-tree LightGBM. Bound
    arrays that are filled in place leave ~7 µs. One caller at a time uses them (``lock``,
    taken without waiting): a second thread pricing the same version meanwhile, rare, takes
    the allocating path.
    """

    def __init__(self, session: Any, input_name: str, output_name: str, width: int) -> None:
        import onnxruntime as ort

        matrix = np.zeros((1, width), dtype=np.float32)
        out = np.zeros((1, 1), dtype=np.float32)
        self.binding = session.io_binding()
        self.binding.bind_ortvalue_input(input_name, ort.OrtValue.ortvalue_from_numpy(matrix))
        self.binding.bind_ortvalue_output(output_name, ort.OrtValue.ortvalue_from_numpy(out))
        self.row = matrix.reshape(-1)  # views: ONNX Runtime reads and writes these buffers
        self.result = out.reshape(-1)
        self.lock = threading.Lock()

    @classmethod
    def of(cls, session: Any, inputs: OnnxInputs, output_name: str) -> _RowBinding | None:
        """A binding when the graph takes one float matrix and gives one value per row."""
        if inputs.mode != "matrix":
            return None
        (given,), (output,) = session.get_inputs(), session.get_outputs()
        if output.name != output_name or output.type != "tensor(float)":
            return None
        if len(output.shape) != 2 or output.shape[1] != 1 or given.type != "tensor(float)":
            return None
        return cls(session, given.name, output_name, len(inputs.features))


_POOL: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="onnx")
    return _POOL


def _forget_pool() -> None:  # a forked child has none of its parent's threads
    global _POOL
    _POOL = None


os.register_at_fork(after_in_child=_forget_pool)


def _blocks(n_rows: int) -> list[slice]:
    """One block below BATCH_ROWS rows; else one block per core (ONNX Runtime frees the GIL)."""
    cores = os.cpu_count() or 1
    if n_rows < BATCH_ROWS or cores == 1:
        return [slice(0, n_rows)]
    size = -(-n_rows // cores)
    return [slice(start, min(start + size, n_rows)) for start in range(0, n_rows, size)]


def _session(model_bytes: bytes, *, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # check_graph refuses external data before this point; should a reference slip through,
    # onnxruntime resolves it in an empty folder of its own, not in the working folder.
    options.add_session_config_entry("session.model_external_initializers_file_folder", _empty())
    try:
        return ort.InferenceSession(
            model_bytes, sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime's own exception types (Fail, InvalidGraph, ...)
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise InvalidInputError(f"onnxruntime refuses the ONNX graph ({reason})") from None


_EMPTY: str | None = None


def _empty() -> str:
    """An empty folder of this process's, removed at exit."""
    global _EMPTY
    if _EMPTY is None or not os.path.isdir(_EMPTY):
        _EMPTY = tempfile.mkdtemp(prefix="ratekeeper-no-external-data-")
        atexit.register(_remove_empty, _EMPTY, os.getpid())
    return _EMPTY


def _remove_empty(folder: str, pid: int) -> None:
    if os.getpid() == pid:  # a forked worker leaves its parent's folder alone
        with contextlib.suppress(OSError):
            os.rmdir(folder)


def _number(value: Any) -> float:
    return np.nan if value is None else float(value)


# -- conversion at registration -------------------------------------------------------------


def convert(model: Any, training_frame: Any) -> tuple[bytes, OnnxInputs]:
    """Convert a fitted LightGBM, XGBoost or scikit-learn model to ONNX (no pickle kept)."""
    kind = type(model).__module__.split(".")[0]
    if kind == "lightgbm":
        return _convert_lightgbm(model, training_frame)
    if kind == "xgboost":
        return _convert_xgboost(model, training_frame)
    if kind == "sklearn":
        return _convert_sklearn(model, training_frame)
    raise UnsupportedModelError(
        f"cannot package a {type(model).__module__}.{type(model).__name__}: supported are "
        "scikit-learn and glum GLMs, scikit-learn pipelines, LightGBM and XGBoost "
        "(no pickle fallback)"
    )


def _convert_lightgbm(model: Any, frame: Any) -> tuple[bytes, OnnxInputs]:
    import pandas as pd
    from onnxmltools import convert_lightgbm
    from onnxmltools.convert.common.data_types import FloatTensorType

    booster = getattr(model, "booster_", model)
    features = tuple(booster.feature_name())
    categorical = [f for f in features if isinstance(frame[f].dtype, pd.CategoricalDtype)]
    known = booster.pandas_categorical or []
    if len(known) != len(categorical):
        raise UnsupportedModelError(
            "the LightGBM model's categorical features do not match the training frame's "
            "category columns: pass the frame the model was fitted on"
        )
    categories = {
        name: tuple(str(c) for c in levels) for name, levels in zip(categorical, known, strict=True)
    }
    onx = convert_lightgbm(
        booster,
        initial_types=[("input", FloatTensorType([None, len(features)]))],
        target_opset=TARGET_OPSET,
        zipmap=False,
    )
    return onx.SerializeToString(), OnnxInputs("matrix", features, categories)


def _convert_xgboost(model: Any, frame: Any) -> tuple[bytes, OnnxInputs]:
    import pandas as pd
    from onnxmltools import convert_xgboost
    from onnxmltools.convert.common.data_types import FloatTensorType

    booster = model.get_booster() if hasattr(model, "get_booster") else model
    features = tuple(booster.feature_names or [f"f{i}" for i in range(booster.num_features())])
    if any(isinstance(frame[f].dtype, pd.CategoricalDtype) for f in features if f in frame):
        raise UnsupportedModelError(
            "XGBoost models with native categorical features cannot be converted to ONNX; "
            "encode categorical factors as numbers or use LightGBM"
        )
    # The converter wants positional feature names (f0, f1, ...): convert a renamed copy.
    positional = booster.copy()
    positional.feature_names = None
    onx = convert_xgboost(
        positional,
        initial_types=[("input", FloatTensorType([None, len(features)]))],
        target_opset=TARGET_OPSET,
    )
    return onx.SerializeToString(), OnnxInputs("matrix", features, {})


def _convert_sklearn(model: Any, frame: Any) -> tuple[bytes, OnnxInputs]:
    import pandas as pd
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    names = getattr(model, "feature_names_in_", None)
    if names is None:
        raise UnsupportedModelError("fit the scikit-learn model on a pandas DataFrame")
    features = tuple(str(n) for n in names)
    initial_types: list[tuple[str, Any]] = []
    categories: dict[str, tuple[str, ...]] = {}
    for name in features:
        dtype = frame[name].dtype
        if pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype):
            initial_types.append((name, FloatTensorType([None, 1])))
        else:
            initial_types.append((name, StringTensorType([None, 1])))
            categories[name] = tuple(sorted(str(v) for v in frame[name].dropna().unique()))
    try:
        onx = convert_sklearn(model, initial_types=initial_types, target_opset=TARGET_OPSET)
    except Exception as exc:  # the converter raises many unrelated types for unsupported parts
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise UnsupportedModelError(
            f"cannot package this scikit-learn model: skl2onnx cannot convert it ({reason})"
        ) from None
    return onx.SerializeToString(), OnnxInputs("columns", features, categories)
