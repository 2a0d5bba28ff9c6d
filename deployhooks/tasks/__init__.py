"""The task namespace shared by `fab` (fabfile.py) and the `deployhooks` console script."""

from invoke import Collection

from . import hooks

ns = Collection()
ns.add_collection(Collection.from_module(hooks), name="hooks")
# Declared here so both entry points know the key; the console script turns it on.
ns.configure({"deployhooks": {"on_server": False}, "run": {"in_stream": False}})
