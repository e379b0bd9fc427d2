"""Execution modules: the functions a minion runs for a job (``test.ping``, ``cmd.run``, ...).

``loader.load_functions`` collects them, ``loader.execute`` runs one job with Salt's return
conventions, and ``context`` carries the per-job state the functions reach.
"""
