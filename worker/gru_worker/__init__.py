"""The project's own Celery worker: settings from the environment the task server renders,
health files for cheap probes, and a few tasks for health checks and tests.

Importing this package imports nothing heavy, so `python -m gru_worker.probe` stays cheap.
"""
