"""The sending engine: planning, tier gates, sends, receipts, limits, and the sweeps that recover.

Built on the domain and the store; called by the worker's tasks, the API and the CLI, never the
other way round. The Celery app it enqueues on is `broker.py`; the tasks live in dispatcher/worker/.
"""
