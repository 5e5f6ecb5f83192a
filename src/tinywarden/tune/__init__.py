"""Budget-aware model search (``tinywarden tune``): the best pipeline whose generated C fits the device.

:mod:`~tinywarden.tune.search` holds the search space and loop, :mod:`~tinywarden.tune.synthetic` the
synthetic anomalies that score candidates without labels, :mod:`~tinywarden.tune.pareto` the
quality/flash/instructions front, its table and plot.
"""

from tinywarden.tune.pareto import add_instruction_counts, pareto_front, pareto_table, plot_pareto
from tinywarden.tune.search import Budget, BudgetError, Candidate, Trial, TuneResult, parse_bytes, tune
from tinywarden.tune.synthetic import ANOMALY_TYPES, inject

__all__ = [
    "ANOMALY_TYPES",
    "Budget",
    "BudgetError",
    "Candidate",
    "Trial",
    "TuneResult",
    "add_instruction_counts",
    "inject",
    "pareto_front",
    "pareto_table",
    "parse_bytes",
    "plot_pareto",
    "tune",
]
