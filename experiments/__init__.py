"""Experiments over kiln's families: hyperparameter search, k-fold and multi-seed runs, and the run advisor.

    kiln tune edgnet --space space.yaml --trials 20
    kiln cv skinmodel --folds 5
    kiln advise RUN_ID

Sits above `projects/` (it trains through the family registry) and below `jobs/` and `kiln/`.
"""
