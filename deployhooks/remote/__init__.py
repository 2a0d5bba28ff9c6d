"""Reaching hosts: one Host (a context plus its command layer), connections, the runner, Ctrl-C."""
