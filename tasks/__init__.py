"""The worker side: Celery app, settings, progress helper, catalog and demo tasks."""
