"""deployhooks: deploy Ruby apps whose Resque workers run under monit, never killing a job."""

__version__ = "0.1.0"
