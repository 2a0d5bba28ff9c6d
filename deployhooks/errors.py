"""The failures a user can meet, each tied to the exit code a pipeline acts on.

0 go on; 1 refused for a reason the message gives (jobs running); 2 bad configuration or usage;
3 a command or host failed (including an undo that did not complete); 130 interrupted (Ctrl-C),
as shells report a command ended by SIGINT (128 + 2).
"""

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_CONFIG = 2
EXIT_FAILED = 3
EXIT_INTERRUPTED = 130


class DeployhooksError(Exception):
    """Base class: carries the exit code the CLI ends with and a message that names the fix."""

    exit_code = EXIT_FAILED


class Refused(DeployhooksError):
    """The deploy must not go on now (jobs are running); nothing is broken."""

    exit_code = EXIT_REFUSED


class ConfigError(DeployhooksError):
    """Bad configuration or usage; raised before anything is touched on any host."""

    exit_code = EXIT_CONFIG


class CommandFailed(DeployhooksError):
    """A command or a host failed (monit missing or down, ssh unreachable, a timeout)."""

    exit_code = EXIT_FAILED
