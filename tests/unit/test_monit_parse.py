"""monit output parsing and the failure messages a user sees (texts from monit 5.33)."""

import pytest

from deployhooks.facts.monit import classify_failure, parse_status

STATUS = """Monit 5.33.0 uptime: 1m

Process 'shop_worker_0'
  status                       OK - stop pending
  monitoring status            Monitored
  monitoring mode              active
  on reboot                    start
  pid                          16024
  parent pid                   15970

Process 'shop_worker_1'
  status                       Not monitored
  monitoring status            Not monitored
  monitoring mode              active
  on reboot                    start
  data collected               Fri, 27 Nov 2026 09:06:59

Process 'flaky'
  status                       Execution failed | Does not exist
  monitoring status            Monitored
"""


def test_status_blocks():
    s = parse_status(STATUS)
    assert list(s) == ["shop_worker_0", "shop_worker_1", "flaky"]
    assert s["shop_worker_0"].pid == 16024 and s["shop_worker_0"].pending
    assert s["shop_worker_1"].stopped and s["shop_worker_1"].pid is None
    assert s["flaky"].status == "Execution failed | Does not exist" and not s["flaky"].running


@pytest.mark.parametrize(
    "rc,err,needle",
    [
        (127, "sh: 1: monit: not found\n/bin/bash: monit: command not found", "monit is not installed"),
        (1, "Monit: the monit daemon is not running", "daemon is not running"),
        (1, "Unix socket /run/monit.sock connection error -- No such file or directory", "daemon is not running"),
        (1, "Service group 'shop_resque' not found", "no group 'shop_resque'"),
        (1, "Group 'shop_resque' not found", "no group 'shop_resque'"),
        (1, "monit: Cannot open the control file '/etc/monit/monitrc' -- Permission denied", "set resque.sudo: true"),
        (1, "sudo: a password is required", "NOPASSWD"),
    ],
)
def test_failures_name_the_fix(rc, err, needle):
    exc = classify_failure(
        rc, "", err, group="shop_resque", host="util1", command=["monit", "-B", "status"], sudo=False
    )
    assert needle in str(exc) and str(exc).startswith("util1: ")
    assert exc.exit_code == 3
