"""What users run: deploy, rollback, the hooks, install (resque.setup), doctor, init."""
