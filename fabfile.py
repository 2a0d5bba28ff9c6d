"""`fab --list` shows the deployhooks tasks; `fab <task>` runs them against the configured hosts."""

from deployhooks.tasks import ns  # noqa: F401
