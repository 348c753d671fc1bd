"""Connection arguments for a SQLite metadata database shared by Airflow's four services.

Every component (and every task's API call) writes to the same file; SQLite lets one
writer in at a time and, by default, makes the others give up after 5 seconds with
"database is locked", which kills whichever component was unlucky. A long busy timeout
makes them wait their turn instead. The launcher points ``[database]
sql_alchemy_connect_args`` (and ``_async``) here only when the database is SQLite.
"""

BUSY_TIMEOUT_S = 120.0

# Airflow adds its own keys to these dicts, so sync and async each get their own.
CONNECT_ARGS = {"timeout": BUSY_TIMEOUT_S}
ASYNC_CONNECT_ARGS = {"timeout": BUSY_TIMEOUT_S}
