"""Export a policy bundle's per-request decision as an ONNX model, for non-Python serving paths.

Built from the bundle's numpy arrays with ``onnx.helper`` (no torch): the same computation as
:class:`policies.runtime.PolicyRuntime` -- request-side networks, ``z = v * w * rho``, the action
profiles ``psi`` precomputed at export (the runtime computes them at load), and

    a* = argmax_a  z(x) . psi(a) - lambda . cost(a)

over the dominance-free candidate actions (the others can never win; ties resolve to the lowest
action index, as ``numpy.argmax``).

Inputs: ``features`` (N, F) float32 in the bundle's feature order, ``lam`` (G,) float32 (the
model does not check it: keep it finite, >= 0, inside the bundle's ``lambda_range``). Outputs:
``action`` (N,) int64 joint action index, ``revenue`` (N,) float32 the network's revenue estimate
of that action, ``cost`` (N, G) float32 its estimated cost per cluster. Metadata
(``metadata_props``): feature order, clusters, the bundle's npz sha256, the cost table's sha256,
the lambda range, the compute dtype. The graph computes in float64 by default (it then agrees
with the float64 runtime on every row up to exact ties); ``dtype="float32"`` is faster.

The IR version and opset are pinned to what onnxruntime >= 1.20 loads (IR 10, opset 21).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from .bundle import read_bundle, resolve, sha256_file
from .files import replace_file
from .runtime import PolicyRuntime

IR_VERSION = 10
OPSET = 21
SOFTPLUS_LINEAR_ABOVE = 20.0  # as the runtime: softplus(x) = x above 20


def cost_table_sha256(cost: np.ndarray) -> str:
    """sha256 of the cost table as float64, C order (the runtime's ``cost``)."""
    return hashlib.sha256(np.ascontiguousarray(cost, dtype=np.float64).tobytes()).hexdigest()


class _Graph:
    """A small builder: named initializers and nodes, unique names."""

    def __init__(self, dtype):
        from onnx import helper, numpy_helper

        self.helper, self.numpy_helper = helper, numpy_helper
        self.dtype = np.dtype(dtype)
        self.nodes, self.inits, self._n = [], [], 0

    def const(self, name: str, value, dtype=None) -> str:
        arr = np.asarray(value, dtype=dtype or self.dtype)
        self.inits.append(self.numpy_helper.from_array(arr, name=name))
        return name

    def op(self, kind: str, *inputs: str, **attrs) -> str:
        self._n += 1
        out = f"{kind.lower()}_{self._n}"
        self.nodes.append(self.helper.make_node(kind, list(inputs), [out], **attrs))
        return out

    def cols(self, x: str, start: int, stop: int) -> str:
        """``x[:, start:stop]``."""
        s = self.const(f"s{self._n}_start", [start], np.int64)
        e = self.const(f"s{self._n}_stop", [stop], np.int64)
        a = self.const(f"s{self._n}_axis", [1], np.int64)
        return self.op("Slice", x, s, e, a)

    def softplus(self, x: str) -> str:
        """``log(1 + exp(min(x, 20)))``, ``x`` itself above 20 (the runtime's softplus)."""
        top = self.const(f"sp{self._n}_top", SOFTPLUS_LINEAR_ABOVE)
        one = self.const(f"sp{self._n}_one", 1.0)
        t = self.op("Log", self.op("Add", self.op("Exp", self.op("Min", x, top)), one))
        return self.op("Where", self.op("Greater", x, top), x, t)


def build_model(runtime: PolicyRuntime, bundle_sha256: str, dtype="float64", doc: str = ""):
    """The ONNX ModelProto of ``runtime``'s decision (see the module doc)."""
    from onnx import TensorProto, checker, helper

    dt = np.dtype(dtype)
    if dt not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64, got {dtype!r}")
    onnx_dt = TensorProto.DOUBLE if dt == np.float64 else TensorProto.FLOAT
    g = _Graph(dt)
    F, G = len(runtime.features), runtime.cost.shape[0]
    n, J = runtime.n_agents, runtime.channels
    nJ = n * J
    x = g.op("Cast", "features", to=onnx_dt)
    lam = g.op("Cast", "lam", to=onnx_dt)
    inv = 1.0 / runtime.scale
    outs = []
    for k, net in enumerate(runtime._request_networks()):
        h = x
        for l, (w, b) in enumerate(net):
            if l == 0:  # the feature normalisation folded into the first layer, as the runtime does
                w, b = w * inv[None, :], b - w @ (runtime.mean * inv)
            h = g.op("Gemm", h, g.const(f"net{k}_w{l}", np.asarray(w).T), g.const(f"net{k}_b{l}", b))
            if l < len(net) - 1:
                h = g.op("Relu", h)
        outs.append(h)
    o = outs[0] if len(outs) == 1 else g.op("Concat", *outs, axis=1)  # [rho (nJ) | w (n) | b (1)]
    if runtime.smc:
        sp = g.softplus(g.cols(o, 0, nJ + n))
    else:  # without SMC the mixing weights are |w|
        sp = g.op("Concat", g.softplus(g.cols(o, 0, nJ)), g.op("Abs", g.cols(o, nJ, nJ + n)), axis=1)
    v = g.op("Exp", g.cols(x, runtime.value_column, runtime.value_column + 1))  # (N, 1) request value
    rho = g.op("Reshape", g.cols(sp, 0, nJ), g.const("shape_rho", [-1, n, J], np.int64))
    wv = g.op("Unsqueeze", g.op("Mul", g.cols(sp, nJ, nJ + n), v), g.const("axis_2", [2], np.int64))
    z = g.op("Reshape", g.op("Mul", rho, wv), g.const("shape_z", [-1, nJ], np.int64))  # (N, P)
    bv = g.op("Mul", g.cols(o, nJ + n, nJ + n + 1), v)  # (N, 1)
    cand = runtime._cand
    psi_c, cost_c = runtime.psi[cand], runtime.cost[:, cand]
    pen = g.op("MatMul", g.op("Unsqueeze", lam, g.const("axis_0", [0], np.int64)), g.const("cost_c", cost_c))
    scores = g.op("Sub", g.op("MatMul", z, g.const("psi_t", psi_c.T)), pen)
    k = g.op("ArgMax", scores, axis=1, keepdims=0, select_last_index=0)
    g.nodes.append(helper.make_node("Gather", [g.const("candidates", cand, np.int64), k], ["action"], axis=0))
    psi_a = g.op("Gather", g.const("psi_c", psi_c), k, axis=0)
    rev = g.op("Add", g.op("ReduceSum", g.op("Mul", z, psi_a), g.const("axis_1", [1], np.int64), keepdims=0),
               g.op("Squeeze", bv, g.const("axis_1b", [1], np.int64)))
    g.nodes.append(helper.make_node("Cast", [rev], ["revenue"], to=TensorProto.FLOAT))
    cost_a = g.op("Gather", g.const("cost_t", cost_c.T), k, axis=0)
    g.nodes.append(helper.make_node("Cast", [cost_a], ["cost"], to=TensorProto.FLOAT))
    graph = helper.make_graph(
        g.nodes, "policy_decision",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", F]),
         helper.make_tensor_value_info("lam", TensorProto.FLOAT, [G])],
        [helper.make_tensor_value_info("action", TensorProto.INT64, ["N"]),
         helper.make_tensor_value_info("revenue", TensorProto.FLOAT, ["N"]),
         helper.make_tensor_value_info("cost", TensorProto.FLOAT, ["N", G])],
        initializer=g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="mpc-balancer",
                              doc_string=doc)
    model.ir_version = IR_VERSION
    meta = {"features": json.dumps(list(runtime.features)), "clusters": json.dumps(list(runtime.clusters)),
            "bundle_npz_sha256": bundle_sha256, "cost_table_sha256": cost_table_sha256(runtime.cost),
            "lambda_range": json.dumps(list(runtime.lambda_range)), "n_actions": str(runtime.n_actions),
            "compute_dtype": dt.name, "value_column": runtime.features[runtime.value_column]}
    helper.set_model_props(model, meta)
    checker.check_model(model)
    return model


def export_onnx(bundle: str | Path, out: str | Path, dtype: str = "float64") -> dict:
    """Write ``bundle`` (name or path) as ONNX to ``out``; returns the model's metadata and sizes."""
    import onnx

    arrays, meta, path = read_bundle(bundle)
    runtime = PolicyRuntime(arrays, meta, name=path.stem)
    model = build_model(runtime, meta["npz_sha256"], dtype=dtype,
                        doc=f"decision of policy bundle {path.name} (json sha256 {sha256_file(resolve(bundle))})")
    out = Path(out)
    # atomically: an interrupted or failed save leaves the previous file (or none), never a truncated model
    replace_file(out, lambda tmp: onnx.save(model, tmp))
    props = {p.key: p.value for p in model.metadata_props}
    return {"out": str(out), "bytes": out.stat().st_size, "candidates": len(runtime._cand), **props}
