"""The dashboard's Celery integration, imported by any Celery app whose tasks the dashboard shows.

`import celery_dashboard` in the module that defines your Celery app connects its signals (task
registration at publish, persistent revocation, the end of ignored tasks, a beacon from each
worker) and gives you the
catalog decorator and the progress API. It imports Celery, kombu, redis and jsonschema only.
"""
from celery_dashboard import beacon, index, signals  # noqa: F401 - connect the signal handlers
from celery_dashboard.catalog import launchable, schema
from celery_dashboard.reporting import Progress, progress

__all__ = ["Progress", "launchable", "progress", "schema"]
