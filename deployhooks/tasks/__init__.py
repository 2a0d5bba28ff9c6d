"""The task namespace shared by `fab` (fabfile.py) and the `deployhooks` console script.

The console script's config class sets `deployhooks.on_server`, which makes the tasks act on
this machine; under `fab` the key is absent and they act on the configured hosts over SSH.
(It cannot be declared here: collection config outranks a config class's defaults.)
"""

from invoke import Collection

from . import admin, deploy, hooks, resque

ns = Collection(deploy.rollback, admin.init)
# `fab deploy` is the collection's default task; `fab deploy.lock-status`, `fab deploy.unlock`.
ns.add_collection(Collection("deploy", deploy.lock_status, deploy.unlock))
ns.collections["deploy"].add_task(deploy.deploy, default=True)
ns.add_collection(Collection.from_module(hooks), name="hooks")
ns.add_collection(Collection.from_module(resque), name="resque")
ns.collections["resque"].add_task(admin.setup)
ns.collections["resque"].add_task(admin.doctor)
ns.configure({"run": {"in_stream": False}})
