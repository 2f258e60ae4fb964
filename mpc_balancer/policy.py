"""The policy protocol: the controllers' only model of the requests.

A deployment's per-request policy decides ``a* = argmax_a Q(x, a) - lambda . C(x, a)``. What a
controller needs from it is how that decision responds to lambda: for a sample of recent requests,
each request's estimated cost of the chosen action on every cluster and the policy's own estimate
of that action's revenue. Nothing else -- no ground-truth revenue, no true costs, no action table.

:class:`policies.runtime.PolicyRuntime` (revenue = the value network's ``Rev(x, a*)``) and
:class:`policies.oracle.OraclePolicy` implement it; so does any class with these two members::

    class MyPolicy:
        clusters = ("recall", "rank")

        def respond(self, features, lam):
            ...
            return cost, revenue        # (n, G) CPU-ms per request, (n,) estimated revenue

Costs must not rise on cluster ``g`` when ``lambda_g`` rises (a Lagrangian policy satisfies this),
and both arrays must be finite. ``features`` is read-only (one sample answers many lambdas, and a
policy may cache its work on it): a policy that changes it in place raises ``ValueError`` naming its
method (copy it first). :func:`checked_response` enforces shapes and finiteness with an
error that names the policy and the field.

A policy may also offer ``respond_many(features, lams) -> (cost (K, n, G), revenue (K, n))``, the
same numbers as ``respond`` at each row of ``lams`` (K, G) in one call (:class:`BatchPolicy`; the
shipped policies compute the lambda-free part of their argmax once). Controllers that sweep lambda
over one sample use it through :func:`checked_response_many`, which loops over ``respond`` for a
policy without it. Likewise ``respond_cost(features, lam) -> cost (n, G)``, the cost part of
``respond`` alone (:class:`CostPolicy`): a controller that reads only costs (a bisection on the
load budget, the hindsight limit) calls :func:`checked_cost`, which skips the revenue estimate
where the policy offers it. And ``take_rows(features, rows) -> features[rows]``, read-only, carrying
over whatever per-request work the policy cached on ``features`` (:class:`RowsPolicy`): a
controller that cuts a tick's sample down (:class:`mpc_balancer.response.Response`) calls
:func:`take_rows`, which indexes the rows itself for a policy without it.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Policy(Protocol):
    """Per request row, the action the policy takes at multipliers ``lam`` and what it expects of it."""

    clusters: tuple[str, ...]

    def respond(self, features: np.ndarray, lam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(cost ``(n, G)``: estimated CPU-ms per request on each cluster of the chosen action,
        revenue ``(n,)``: the policy's own estimate of the chosen action's revenue)."""
        ...


@runtime_checkable
class BatchPolicy(Policy, Protocol):
    """A :class:`Policy` that also answers many lambdas on one request sample in one call."""

    def respond_many(self, features: np.ndarray, lams: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(cost ``(K, n, G)``, revenue ``(K, n)``): :meth:`Policy.respond` at every row of ``lams``."""
        ...


@runtime_checkable
class CostPolicy(Policy, Protocol):
    """A :class:`Policy` that also answers the cost part of :meth:`Policy.respond` alone."""

    def respond_cost(self, features: np.ndarray, lam: np.ndarray) -> np.ndarray:
        """Cost ``(n, G)``: the same numbers as ``respond(features, lam)[0]``, without the revenue estimate."""
        ...


@runtime_checkable
class RowsPolicy(Policy, Protocol):
    """A :class:`Policy` that can cut a request sample down without redoing its per-request work."""

    def take_rows(self, features: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """``features[rows]`` as a new read-only array (``rows``: 1-D integer indices);
        :meth:`Policy.respond` on it answers as on ``features[rows]``, up to the rounding of work
        done in another batch."""
        ...


def check_policy(policy, clusters: tuple[str, ...]) -> None:
    """Raise ``ValueError`` unless ``policy`` implements :class:`Policy` for exactly ``clusters``."""
    if not isinstance(policy, Policy):
        raise ValueError(f"policy must have 'clusters' and 'respond(features, lam)', got {type(policy).__name__}")
    names = policy.clusters
    if isinstance(names, str) or not all(isinstance(c, str) for c in names):
        raise ValueError(f"policy clusters must be a sequence of cluster names, got {names!r}")
    if tuple(names) != tuple(clusters):
        raise ValueError(f"policy clusters {list(names)} do not match the balancer's clusters {list(clusters)}")


def _call(policy, method: str, *args):
    """``policy.<method>(*args)``; numpy's error for a write to the read-only sample names the method."""
    try:
        return getattr(policy, method)(*args)
    except ValueError as e:
        if "read-only" not in str(e):
            raise
        raise ValueError(f"{type(policy).__name__}.{method} changed its features in place ({e}): the request sample "
                         "is read-only, shared by every lambda asked; copy it before changing it") from None


def checked_response(policy, features: np.ndarray, lam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``policy.respond`` with its output validated: cost ``(n, G)`` >= 0 and revenue ``(n,)``, finite."""
    return _checked(policy, "respond", _call(policy, "respond", features, lam), (len(features), len(policy.clusters)))


def checked_cost(policy, features: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """Cost ``(n, G)`` of :func:`checked_response`, validated the same way: ``respond_cost`` for a
    :class:`CostPolicy` (its revenue estimate is never computed), ``respond`` otherwise."""
    respond_cost = getattr(policy, "respond_cost", None)  # CostPolicy, without the Protocol's isinstance cost per call
    if respond_cost is None:
        return checked_response(policy, features, lam)[0]
    shape = (len(features), len(policy.clusters))
    return _checked_cost(f"{type(policy).__name__}.respond_cost", _call(policy, "respond_cost", features, lam), shape)


def take_rows(policy, features: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``features[rows]``, read-only: the policy's ``take_rows`` for a :class:`RowsPolicy` (its
    cached per-request work carried over), plain indexing otherwise. ``ValueError`` naming ``rows``
    unless they are 1-D integer indices into ``features`` (a boolean mask, fractions or indices out
    of range: numpy would take, truncate or raise an ``IndexError``), and naming the policy unless
    its answer has the rows' shape. The answer is never ``features`` itself: the caller's array is
    not made read-only."""
    x, rows = np.asarray(features), np.asarray(rows)
    if rows.ndim != 1 or (rows.size and rows.dtype.kind not in "iu"):
        raise ValueError(f"rows must be a 1-D array of integer row indices, got dtype {rows.dtype} and shape {rows.shape}")
    if rows.size and not -len(x) <= rows.min() <= rows.max() < len(x):
        raise ValueError(f"rows must index a batch of {len(x)} rows, got indices from {rows.min()} to {rows.max()}")
    rows = rows.astype(np.intp)
    take = getattr(policy, "take_rows", None)
    if take is None:
        out = x[rows]
    else:
        out = np.asarray(take(features, rows))
        shape = (len(rows), *x.shape[1:])
        if out.shape != shape:
            raise ValueError(f"{type(policy).__name__}.take_rows: must return shape {shape}, got {out.shape}")
        if out is x or out is features:
            out = out.copy()
    out.setflags(write=False)
    return out


def checked_response_many(policy, features: np.ndarray, lams: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cost ``(K, n, G)`` and revenue ``(K, n)`` at every row of ``lams`` (K, G), validated like
    :func:`checked_response`: one ``respond_many`` call for a :class:`BatchPolicy`, K ``respond``
    calls otherwise."""
    lams = np.asarray(lams, dtype=float)
    if isinstance(policy, BatchPolicy):
        return _checked(policy, "respond_many", _call(policy, "respond_many", features, lams),
                        (len(lams), len(features), len(policy.clusters)))
    out = [checked_response(policy, features, lam) for lam in lams]
    n, G = len(features), len(policy.clusters)
    return (np.stack([c for c, _ in out]) if out else np.empty((0, n, G)),
            np.stack([r for _, r in out]) if out else np.empty((0, n)))


def _checked(policy, method: str, out, shape: tuple) -> tuple[np.ndarray, np.ndarray]:
    """Validate a (cost, revenue) answer of ``policy.<method>``: cost of ``shape``, revenue of
    ``shape[:-1]``, both finite, cost >= 0."""
    who = f"{type(policy).__name__}.{method}"
    if not (isinstance(out, tuple) and len(out) == 2):
        raise ValueError(f"{who} must return a tuple (cost, revenue), got {type(out).__name__}")
    try:
        revenue = np.asarray(out[1], dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"{who} must return numeric arrays (cost, revenue)") from None
    cost = _checked_cost(who, out[0], shape)
    if revenue.shape != shape[:-1]:
        raise ValueError(f"{who}: revenue must have shape {shape[:-1]}, got {revenue.shape}")
    if not np.all(np.isfinite(revenue)):
        raise ValueError(f"{who}: revenue must be finite")
    return cost, revenue


def _checked_cost(who: str, cost, shape: tuple) -> np.ndarray:
    """``cost`` as a float array of ``shape``, finite and >= 0, or a ``ValueError`` naming ``who``."""
    try:
        cost = np.asarray(cost, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"{who} must return a numeric cost array") from None
    if cost.shape != shape:
        raise ValueError(f"{who}: cost must have shape {shape}, got {cost.shape}")
    if not (np.all(np.isfinite(cost)) and cost.min(initial=0.0) >= 0):
        raise ValueError(f"{who}: cost must be finite and >= 0")
    return cost
