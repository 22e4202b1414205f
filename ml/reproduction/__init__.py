"""Reproductions of the papers' headline claims: declared before running, paired over seeds,
judged by a fixed verdict rule, saved as JSON and rendered into docs/reproductions.md.

- :mod:`~ml.reproduction.declaration`: what a reproduction claims and compares;
- :mod:`~ml.reproduction.stats`, :mod:`~ml.reproduction.verdict`: paired 95% t-intervals and
  the verdict rule;
- :mod:`~ml.reproduction.harness`: running the jobs, evaluating, the results JSON;
- :mod:`~ml.reproduction.report`: tables, plots and docs/reproductions.md;
- :mod:`~ml.reproduction.bench`: the command line of ``bench/reproduce_<paper>.py``;
- :mod:`~ml.reproduction.split_fl`, :mod:`~ml.reproduction.imbnas`: the declared reproductions.
"""
