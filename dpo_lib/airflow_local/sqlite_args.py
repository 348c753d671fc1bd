"""Connection arguments for the scheduler, dag-processor and triggerer on a SQLite metadata database.

SQLite lets one writer in at a time; the others wait up to the busy timeout (5 s by default)
and then fail with "database is locked", which kills whichever Airflow component was waiting.
Under concurrent runs Airflow 3.3's api-server can hold the lock that long: its audit-log
dependency commits on the event loop, so a request that waits for the lock stalls every
other request, including the one whose open transaction holds it, until the timeout breaks
the knot. The launcher therefore leaves the api-server at SQLite's default (short stalls,
an occasional 500 that clients retry) and gives the other components this long timeout, so
they wait out such a stall instead of dying. Used only when the database is SQLite.
"""

BUSY_TIMEOUT_S = 120.0

# Airflow adds its own keys to these dicts, so sync and async each get their own.
CONNECT_ARGS = {"timeout": BUSY_TIMEOUT_S}
ASYNC_CONNECT_ARGS = {"timeout": BUSY_TIMEOUT_S}
