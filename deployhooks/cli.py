"""The `deployhooks` console script: the fabfile's task namespace, acting on this machine.

Servers run the hooks through it (`deployhooks hooks.before-migrate ...`), so they need no
fabfile; a workstation uses `fab` with the same tasks, which act over SSH.
"""

from fabric import Config, Executor
from fabric.main import Fab
from invoke.config import merge_dicts

from . import __version__
from .tasks import ns


class DeployhooksConfig(Config):
    prefix = "deployhooks"

    @staticmethod
    def global_defaults():
        return merge_dicts(Config.global_defaults(), {"run": {"in_stream": False}, "deployhooks": {"on_server": True}})


program = Fab(
    name="deployhooks", version=__version__, namespace=ns, executor_class=Executor, config_class=DeployhooksConfig
)


def main() -> None:
    program.run()
