"""The simulator's sub-tick loop (issue 20) against a straightforward reference kept here: every
sub-tick decided afresh by the policy on an uncached copy of the sample and stepped with the
plant's formulas written out, no per-lambda reuse. Bursts and the guard make the tick's lambdas
differ between sub-ticks and overload the clusters (degraded and dropped requests); the loop's
figures must be the reference's bit for bit (the same floating-point steps in the same order)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mpc_balancer.controllers import make_controller
from mpc_balancer.guard import NodeGuard
from mpc_balancer.sim.disturbances import BurstSpec, Disturbances
from mpc_balancer.sim.simulator import Simulator, split_arrivals
from mpc_balancer.telemetry import Telemetry
from mpc_balancer.traces import load_trace
from mpc_balancer.traffic import Traffic
from policies.cascade import Cascade
from policies.runtime import PolicyRuntime

CAS = Cascade()


def reference_step(plant, qps, arrivals, actions, w, t_seconds, u, dt):
    """One sub-tick of the plant as its module doc states it, everything computed from the actions."""
    cas = plant.cascade
    demand = qps * cas.cost[:, actions].mean(axis=1) * plant.cost_factor(t_seconds) / plant.capacity
    alpha = float(np.exp(-dt / plant.config.lag_s))
    plant.load = alpha * plant.load + (1 - alpha) * demand
    L = plant.load
    deg = np.where(L > 1, 1 - 1 / np.maximum(L, 1e-12), 0.0)
    drop = np.where(L > plant.config.drop_load, 1 - plant.config.drop_load / np.maximum(L, 1e-12), 0.0)
    dropped = u < drop.max()
    mask = (u[:, None] < deg[None, :]) & ~dropped[:, None]
    final = actions.copy()
    for g in range(len(L)):
        rows = np.flatnonzero(mask[:, g])
        if rows.size:
            final[rows] = cas.degrade(final[rows], g)
    rev = cas.expected_revenue_w(w, final)
    rev[dropped] = 0.0
    n_drop = int(round(arrivals * float(drop.max())))
    n_deg = int(round(arrivals * float(deg.max()))) - n_drop
    return L.copy(), float(rev.sum() * arrivals / len(actions)), arrivals - n_drop - n_deg, n_deg, n_drop


def reference_run(sim: Simulator, controller, policy) -> dict:
    """The closed loop of :meth:`Simulator.run` (no faults), sub-tick by sub-tick, nothing reused."""
    cas, plant = sim.cascade, sim.make_plant()
    bal = sim.balancer(controller)
    bal.setup(sim.context(policy), initial_lam=0.01)
    G, period, N = len(cas.clusters), sim.traffic.period_s, sim.subticks
    dt = period / N
    lam = np.full(G, 0.01)
    qps0 = float(sim.traffic.rate_qps[sim.window][0])
    prev_x = cas.sample_features(sim.n_requests, float(sim.times[0].hour), np.random.default_rng(sim.seed + 1),
                                 stratified=sim.sampling == "stratified")
    plant.reset(qps0 * cas.cost[:, policy.act(prev_x, lam)].mean(axis=1) * plant.cost_factor(0) / plant.capacity)
    tel = Telemetry(time=sim.times[0] - pd.Timedelta(seconds=period), qps=qps0, load=plant.load.copy(), lam=lam.copy(),
                    features=prev_x)
    guard = NodeGuard(target=plant.target, lam_max=bal.ctx_.lam_max, **sim.guard)
    out = {k: [] for k in ("revenue", "served", "degraded", "dropped", "lam", "true_load", "guard_cost", "guard_subticks",
                           "subtick_load")}
    for k, (arrivals, x, u, noise) in enumerate(sim.environment()):
        tsec = float(sim.times[k].hour * 3600 + sim.times[k].minute * 60 + sim.times[k].second)
        split = split_arrivals(arrivals, sim.profile[k])
        lam_c = bal.step(tel).lam_vector
        w = cas.weights(x)
        fresh = np.array(x)  # writeable: the policy caches nothing on it
        tick = np.zeros(4)
        log_lam, cost, on_ticks, loads = np.zeros(G), 0.0, np.zeros(G, dtype=np.int64), []
        for j in range(N):
            lam_j = guard.apply(lam_c)
            a = policy.act(fresh, lam_j)
            L, rev, served, deg, drop = reference_step(plant, split[j] / dt, int(split[j]), a, w, tsec + j * dt, u, dt)
            guard.observe(L)
            on = guard.active
            if on.any():
                full = float(cas.expected_revenue_w(w, policy.act(fresh, lam_c)).sum()) / len(x)
                cost += (full - float(cas.expected_revenue_w(w, a).sum()) / len(x)) * split[j]
                on_ticks += on
            tick += (rev, served, deg, drop)
            loads.append(L)
            log_lam = log_lam + np.log(lam_j)
        lam = np.exp(log_lam / N) if on_ticks.any() else lam_c
        true_tick = np.mean(loads, axis=0)
        for key, v in zip(("revenue", "served", "degraded", "dropped", "lam", "true_load", "guard_cost", "guard_subticks",
                           "subtick_load"), (*tick, lam, true_tick, cost, on_ticks, np.array(loads))):
            out[key].append(v)
        # the nodes' over-utilisation: the mean of max(L / C_m - 1, 0) over the sub-ticks' loads
        over = np.maximum(np.array(loads) / plant.target - 1.0, 0.0).sum(axis=0) / N
        tel = Telemetry(time=sim.times[k], qps=arrivals / period, load=true_tick * (1 + plant.config.load_noise * noise),
                        lam=lam, features=x, over=over)
    return {k: np.array(v) for k, v in out.items()}


@pytest.mark.parametrize("controller", ["pid", "mpc"])
def test_subtick_loop_is_the_reference_loop_bit_for_bit(controller):
    bursts = Disturbances(bursts=BurstSpec(40.0, (3.0, 8.0), (1.0, 4.0)), seed=4)
    traffic = Traffic(load_trace("nasa"), period_s=60)
    sim = Simulator(traffic, cascade=CAS, n_requests=600, days=0.1, seed=4, disturbances=bursts)
    policy = PolicyRuntime.load("pretrained", cost=CAS.cost)
    got = sim.run(make_controller(controller), policy)
    ref = reference_run(sim, make_controller(controller), PolicyRuntime.load("pretrained", cost=CAS.cost))
    log, names = got.log, [f"guard_subticks_{c}" for c in CAS.clusters]
    # the run exercised what the loop shortcuts: the guard's own lambdas, overloaded sub-ticks
    assert log[names].to_numpy().sum() > 0 and (log["degraded"] > 0).any() and (log["dropped"] > 0).any()
    for key in ("revenue", "served", "degraded", "dropped", "guard_cost"):
        np.testing.assert_array_equal(log[key].to_numpy(), ref[key], err_msg=key)
    np.testing.assert_array_equal(log[[f"lambda_{c}" for c in CAS.clusters]].to_numpy(), ref["lam"])
    np.testing.assert_array_equal(log[[f"true_load_{c}" for c in CAS.clusters]].to_numpy(), ref["true_load"])
    np.testing.assert_array_equal(log[names].to_numpy(), ref["guard_subticks"])
    np.testing.assert_array_equal(got.subtick_load, ref["subtick_load"])
