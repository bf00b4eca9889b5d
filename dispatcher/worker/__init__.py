"""The Celery worker's edge: tasks that carry ids into the engine (`celery -A dispatcher.engine.broker`)."""
