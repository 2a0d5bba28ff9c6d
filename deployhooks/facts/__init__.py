"""Read-only facts of a host: a command and a pure parser (processes, monit, releases, trust)."""
