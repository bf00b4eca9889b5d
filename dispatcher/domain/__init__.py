"""The pure domain: the canonical message, states, the gate and audience rules, policy, retry, errors.

Nothing here does I/O or imports the engine, the store or an edge; it may use `channels.base`'s
vocabulary (channel names, a send's outcome). Tested without servers.
"""
