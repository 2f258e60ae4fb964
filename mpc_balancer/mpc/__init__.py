"""Convex receding-horizon MPC for the revenue-cost multipliers (the formulation: :mod:`.problem`)."""
from .problem import OBJECTIVES, MpcData, MpcProblem, MpcWeights, QuadraticMpcProblem, frontier_data, frontier_quadratic
from .solvers import CvxpyMpcSolver, MpcSolution, OsqpMpcSolver

__all__ = ["QuadraticMpcProblem", "frontier_quadratic", "frontier_data", "OBJECTIVES", "MpcData", "MpcProblem", "MpcWeights",
           "CvxpyMpcSolver", "MpcSolution", "OsqpMpcSolver"]
