"""Search spaces and studies: multi-objective search of field and compression settings under
a size / speed budget (``nerfzip search``), on Optuna.

``space`` reads the user-editable YAML space built from the typed configs, ``trial`` runs and
measures one candidate, ``study`` holds the budgets, the pruner and the Pareto front,
``storage`` opens the study database (SQLite file or PostgreSQL), ``report`` writes the front's
table, PNG and JSON, ``command`` is the command line. Optuna is imported on first use only.
"""

from nerfzip.search.space import DEFAULT_SPACE, SearchSpace, load_space, parse_space

__all__ = ["DEFAULT_SPACE", "SearchSpace", "load_space", "parse_space"]
