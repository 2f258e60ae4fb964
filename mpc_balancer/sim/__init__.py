"""The simulated world and the experiments run in it (not part of the engine).

The engine (:mod:`mpc_balancer`: Balancer, controllers, QP, response, tick forecast, guard,
service) never imports this package; this package drives the engine the way a deployment would:

- :mod:`.plant`: clusters with lag, noise, true costs and degradation (the only place, with the
  simulator, that reads the cascade's ground truth);
- :mod:`.simulator`: the closed loop (traffic -> policy at the applied lambda -> plant -> telemetry
  -> Balancer), with sub-ticks and the node guard;
- :mod:`.disturbances`: injected bursts and outages; :mod:`.faults`: the fault matrix;
- :mod:`.experiment`: controller comparisons; :mod:`.scenarios`: the spike test;
  :mod:`.fleet`: simulated nodes against a running service; :mod:`.tuning`: Optuna studies;
- :mod:`.config`: the TOML run configuration (controller, plant and guard tables);
- :mod:`.plotting`: figures of a run.
"""
