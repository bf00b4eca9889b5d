"""The ops dashboard at /dashboard: server-rendered pages behind a session cookie, live over SSE."""
