"""resque.setup's and resque.doctor's pure parts: plans, monit verdicts, and each check."""

from __future__ import annotations

import pytest

from deployhooks.commands import doctor as d
from deployhooks.commands import doctorchecks as dc
from deployhooks.commands import installplan as ip
from deployhooks.errors import ConfigError
from deployhooks.facts import pidfiles, rakefile, resqueyml
from deployhooks.facts.monit import ServiceStatus, without_control_file
from deployhooks.facts.processes import WorkerProcess
from deployhooks.facts.status import HostFacts
from deployhooks.settings import parse
from deployhooks.tasks import ns

WRAPPER = "/usr/local/bin/deployhooks-resque"
CONFIG = """\
app: shop
resque:
  user: deploy
  grace_time: 60
  workers:
    - queues: [critical, high]
    - queues: "*"
"""


def settings(text=CONFIG):
    return parse(text, "deployhooks.yml")


def live(*names, pid=None):
    return {n: ServiceStatus(n, "OK", "Monitored", pid) for n in names}


# --- settings ----------------------------------------------------------------------------------


def test_new_settings_have_per_app_defaults():
    r = settings().resque
    assert r.monitrc_path == "/etc/monit.d/resque_shop.monitrc"
    assert r.pid_dir == "/var/run/deployhooks/resque/shop"
    assert r.wrapper == "deployhooks-resque"
    assert r.totalmem_mb is None


def test_new_settings_are_validated():
    r = settings(
        CONFIG + "  monitrc_path: /etc/monit/conf.d/shop\n  pid_dir: /run/shop\n"
        "  wrapper: /opt/dh/bin/deployhooks-resque\n  totalmem_mb: 400\n"
    ).resque
    assert (r.monitrc_path, r.pid_dir, r.wrapper, r.totalmem_mb) == (
        "/etc/monit/conf.d/shop",
        "/run/shop",
        "/opt/dh/bin/deployhooks-resque",
        400,
    )
    for bad, key in [
        ("wrapper: bin/x", "resque.wrapper"),
        ("wrapper: 'a;b'", "resque.wrapper"),
        ("monitrc_path: rel.monitrc", "resque.monitrc_path"),
        ("pid_dir: /a b", "resque.pid_dir"),
        ("totalmem_mb: 0", "resque.totalmem_mb"),
    ]:
        with pytest.raises(ConfigError, match=rf"deployhooks.yml:8: {key}: expected"):
            settings(CONFIG + f"  {bad}\n")


# --- setup: what the files say, and the plan ---------------------------------------------------


def test_conf_text_is_exactly_the_quoted_queue_line():
    assert ip.conf_text(("critical", "high")) == "QUEUE=critical,high\n"
    assert ip.conf_text(("*",)) == "QUEUE='*'\n"


def test_desired_monitrc_follows_the_config():
    text = ip.desired_monitrc(settings(CONFIG + "  stop: term\n  totalmem_mb: 300\n"), WRAPPER)
    assert "check process resque_shop_0 with pidfile /var/run/deployhooks/resque/shop/resque_0.pid" in text
    assert (
        f'"{WRAPPER} --user deploy --deploy-to /data/shop --pid-dir /var/run/deployhooks/resque/shop '
        f'--grace-time 60 shop term production resque_1.conf" with timeout 90 seconds' in text
    )
    assert "with timeout 60 seconds" in text  # start_timeout
    assert text.count("if totalmem is greater than 300 MB for 2 cycles then restart") == 2
    assert text.count("group shop_resque") == 2
    assert "totalmem" not in ip.desired_monitrc(settings(), WRAPPER)


def converged(st):
    confs = {w.index: ip.conf_text(w.queues) for w in st.resque.workers}
    return dict(
        installed_monitrc=ip.desired_monitrc(st, WRAPPER), confs=confs, live=live("resque_shop_0", "resque_shop_1")
    )


def test_plan_is_empty_when_files_and_monit_agree():
    st = settings()
    assert ip.plan(st, wrapper=WRAPPER, **converged(st)).empty


def test_plan_for_a_fresh_host_writes_everything_and_reloads():
    st = settings()
    p = ip.plan(st, wrapper=WRAPPER, installed_monitrc=None, confs={}, live={})
    assert [c.path for c in p.confs] == [
        "/data/shop/shared/config/resque_0.conf",
        "/data/shop/shared/config/resque_1.conf",
    ]
    assert p.monitrc.old is None and p.monitrc.path == "/etc/monit.d/resque_shop.monitrc"
    assert p.reload and not p.stop and p.services == ["resque_shop_0", "resque_shop_1"]


def test_plan_changes_only_the_conf_that_differs_and_does_not_reload():
    st = settings()
    facts = converged(st)
    facts["confs"][1] = "QUEUE=low\n"
    p = ip.plan(st, wrapper=WRAPPER, **facts)
    assert p.confs == [ip.FileChange("/data/shop/shared/config/resque_1.conf", "QUEUE=low\n", "QUEUE='*'\n")]
    assert p.monitrc is None and not p.reload


def test_plan_reloads_when_monit_has_not_loaded_the_installed_file():
    st = settings()
    facts = dict(converged(st), live=live("resque_shop_0"))
    p = ip.plan(st, wrapper=WRAPPER, **facts)
    assert p.reload and not p.confs and p.monitrc is None and not p.stop


def test_plan_removes_a_worker_dropped_from_the_config():
    two = settings()
    one = settings(CONFIG.replace('    - queues: "*"\n', ""))
    p = ip.plan(one, wrapper=WRAPPER, **converged(two))
    assert p.stop == ["resque_shop_1"]
    assert p.confs == [ip.FileChange("/data/shop/shared/config/resque_1.conf", "QUEUE='*'\n", None)]
    assert "resque_shop_1" in p.monitrc.old and "resque_shop_1" not in p.monitrc.new
    assert p.reload and p.services == ["resque_shop_0"]
    # known only from an old monitrc stanza: nothing to stop, but the stanza goes
    facts = dict(converged(two), confs={0: ip.conf_text(("critical", "high"))}, live=live("resque_shop_0"))
    p = ip.plan(one, wrapper=WRAPPER, **facts)
    assert p.stop == [] and p.confs == [] and p.monitrc is not None


def test_monitrc_and_service_worker_numbers_are_per_app():
    text = (
        "check process resque_shop_0 with pidfile x\ncheck process resque_shopx_1 with pidfile y\n"
        "  check process resque_shop_12 with pidfile z\n"
    )
    assert ip.monitrc_workers(text, "shop") == {0, 12}
    assert ip.service_workers(["resque_shop_3", "resque_shop_x", "resque_blog_1"], "shop") == {3}


def test_unified_diff_prefixes_every_line_with_the_host():
    out = ip.unified_diff("util1", ip.FileChange("/c/resque_0.conf", None, "QUEUE=a\n"))
    assert out.splitlines() == [
        "util1: --- /dev/null",
        "util1: +++ /c/resque_0.conf",
        "util1: @@ -0,0 +1 @@",
        "util1: +QUEUE=a",
    ]
    out = ip.unified_diff("util1", ip.FileChange("/c/resque_1.conf", "QUEUE=b\n", None))
    assert "util1: +++ /dev/null" in out and "util1: -QUEUE=b" in out


def test_without_control_file():
    assert without_control_file(["monit", "-c", "/etc/monitrc", "-v"]) == ["monit", "-v"]
    assert without_control_file(["/usr/bin/monit", "-c/etc/m"]) == ["/usr/bin/monit"]
    assert without_control_file(["monit"]) == ["monit"]


VERBOSE_T = """\
Adding credentials for user 'a'
Runtime constants:
 Control file       = /etc/monitrc

The service list contains the following entries:

Process Name          = resque_shop_0
 Group                = shop_resque
 Pid file             = /run/p/resque_0.pid

Process Name          = resque_shop_1
 Group                = shop_resque

Process Name          = resque_blog_0
 Group                = blog_resque

System Name           = vm
 Monitoring mode      = active

-------------------------------------------------------------------------------
Control file syntax OK
"""


def test_parse_service_list_from_monit_v_t():
    assert ip.parse_service_list(VERBOSE_T) == {
        "resque_shop_0": {"shop_resque"},
        "resque_shop_1": {"shop_resque"},
        "resque_blog_0": {"blog_resque"},
        "vm": set(),
    }


def test_check_failure_verdicts():
    kw = dict(path="/etc/monit.d/resque_shop.monitrc", group="shop_resque")
    assert ip.check_failure(0, VERBOSE_T, wanted=["resque_shop_0", "resque_shop_1"], **kw) is None
    why = ip.check_failure(
        1,
        "Adding credentials for user 'a'\n/etc/monit.d/x:1: Service name "
        "conflict, resque_shop_2 already defined '/p'\n",
        wanted=[],
        **kw,
    )
    assert why.startswith("monit -t refused the configuration: /etc/monit.d/x:1: Service name conflict")
    why = ip.check_failure(0, VERBOSE_T, wanted=["resque_shop_0"], **kw)
    assert "defined elsewhere too: resque_shop_1" in why
    why = ip.check_failure(0, VERBOSE_T.replace("shop_resque", "other"), wanted=["resque_shop_0"], **kw)
    assert "does not include /etc/monit.d/resque_shop.monitrc" in why and "include /etc/monit.d/*" in why


def test_tasks_are_registered_in_the_resque_namespace():
    assert {"setup", "doctor"} <= set(ns.collections["resque"].tasks)


# --- doctor: resque.yml and redis --------------------------------------------------------------


@pytest.mark.parametrize(
    "value, target",
    [
        ("10.0.0.5:6380", resqueyml.RedisTarget("10.0.0.5", 6380)),
        ("redis-host:6379:2", resqueyml.RedisTarget("redis-host", 6379)),
        ("localhost", resqueyml.RedisTarget("localhost", 6379)),
        ("redis://:secret@r1.internal:6390/0", resqueyml.RedisTarget("r1.internal", 6390)),
        ("rediss://r1:6390", resqueyml.RedisTarget("r1", 6390, tls=True)),
        ("redis://r1", resqueyml.RedisTarget("r1", 6379)),
        ({"host": "r2", "port": 7000, "db": 1}, resqueyml.RedisTarget("r2", 7000)),
        ({"url": "redis://r3:7001/0"}, resqueyml.RedisTarget("r3", 7001)),
        ("<%= ENV['REDIS_URL'] %>", None),
        ("unix:///tmp/redis.sock", None),
        ("r1:notaport", None),
        (42, None),
    ],
)
def test_redis_target(value, target):
    assert resqueyml.redis_target(value) == target


def test_check_resque_yml():
    path = "/data/shop/shared/config/resque.yml"
    check, target = dc.check_resque_yml("production: r1:6380\nstaging: r2:6379\n", "production", path)
    assert (check.verdict, target) == ("pass", resqueyml.RedisTarget("r1", 6380))
    check, target = dc.check_resque_yml(None, "production", path)
    assert check.verdict == "fail" and "missing" in check.detail and target is None
    check, _ = dc.check_resque_yml("production: r1\n  bad: [x\n", "production", path)
    assert check.verdict == "fail" and f"{path}:2 is not valid YAML" in check.detail
    check, _ = dc.check_resque_yml("staging: r2:6379\n", "production", path)
    assert check.verdict == "fail" and "(entries: staging)" in check.detail
    assert check.fix == f"add 'production: <redis host>:<port>' (or redis://host:port/db) to {path}"
    check, target = dc.check_resque_yml("production: <%= ENV['R'] %>\n", "production", path)
    assert check.verdict == "warn" and target is None


def test_check_redis():
    t = resqueyml.RedisTarget("r1", 6379)
    assert dc.check_redis(t, 0, "PONG\n", "util1", "y", "production").verdict == "pass"
    assert dc.check_redis(t, 0, "+PONG\r\n", "util1", "y", "production").verdict == "pass"
    assert dc.check_redis(t, 0, "NOAUTH Authentication required.\n", "util1", "y", "production").verdict == "pass"
    c = dc.check_redis(t, 1, "Could not connect to Redis at r1:6379: Connection refused\n", "util1", "y", "production")
    assert c.verdict == "fail" and "Connection refused" in c.detail and "point 'production:' in y" in c.fix
    assert "no answer within 5s" in dc.check_redis(t, 124, "", "util1", "y", "production").detail


def test_ping_command_quotes_and_picks_a_branch():
    t = resqueyml.RedisTarget("r1", 6379)
    assert resqueyml.ping_command(t, redis_cli=True) == "timeout 5 redis-cli -h r1 -p 6379 ping 2>&1"
    assert "/dev/tcp/$0/$1" in resqueyml.ping_command(t, redis_cli=False)
    both = resqueyml.ping_command(resqueyml.RedisTarget("r1", 6379, tls=True))
    assert both.startswith("if command -v redis-cli") and "--tls -h r1" in both


# --- doctor: files and monit -------------------------------------------------------------------


def test_check_confs():
    st = settings()
    good = {0: "QUEUE=critical,high\n", 1: "QUEUE='*'\n"}
    assert dc.check_confs(st, good).verdict == "pass"
    c = dc.check_confs(st, {0: "QUEUE=low\n", 3: "QUEUE=x\n"})
    assert c.verdict == "fail" and "missing: resque_1.conf" in c.detail
    assert "resque_0.conf (QUEUE=low; config says QUEUE=critical,high)" in c.detail
    assert "not in the config: resque_3.conf" in c.detail and "resque.setup" in c.fix


def test_check_monitrc():
    assert dc.check_monitrc("/m", "a\n", "a\n").verdict == "pass"
    c = dc.check_monitrc("/m", "a\nb\n", "a\nc\n")
    assert c.verdict == "fail" and "(2 line(s))" in c.detail
    assert dc.check_monitrc("/m", None, "a\n").verdict == "fail"
    assert dc.check_monitrc("/m", "a\n", None).verdict == "warn"


EY_MONITRC = """\
check process resque_shop_0
  with pidfile /var/run/engineyard/resque/shop/resque_0.pid
  start program = "/bin/env GRACE_TIME=300 /engineyard/bin/resque shop start production resque_0.conf" with timeout 90 seconds
  stop program = "/bin/env GRACE_TIME=300 /engineyard/bin/resque shop stop production resque_0.conf" with timeout 90 seconds
  group shop_resque
check process resque_shop_1
  with pidfile /var/run/engineyard/resque/shop/resque_1.pid
  stop program = "/engineyard/bin/resque shop stop production resque_1.conf"   # no timeout: monit's 30 s
  group shop_resque
check process resque_shop_2
  with pidfile /var/run/engineyard/resque/shop/resque_2.pid
  stop program = "/usr/bin/w --grace-time 300 shop stop production resque_2.conf" with timeout 330 seconds
  restart program = "/usr/bin/w --grace-time 300 shop restart production resque_2.conf" with timeout 90 seconds
  group shop_resque
"""


def test_stop_timeouts_and_their_check():
    assert dc.stop_timeouts(EY_MONITRC) == [
        ("resque_shop_0", 90, 300.0),
        ("resque_shop_1", 30, None),
        ("resque_shop_2", 330, 300.0),
        ("resque_shop_2 restart", 90, 300.0),
    ]
    c = dc.check_stop_timeout("/m", EY_MONITRC, 60)
    assert c.verdict == "fail"
    assert "resque_shop_0: timeout 90s <= GRACE_TIME 300s" in c.detail
    assert "resque_shop_1: timeout 30s <= GRACE_TIME 60s" in c.detail
    # A restart program drains the job under the same budget, so a short one is caught too.
    assert "resque_shop_2 restart: timeout 90s <= GRACE_TIME 300s" in c.detail
    assert "resque_shop_2:" not in c.detail
    ours = ip.desired_monitrc(settings(), WRAPPER)
    assert dc.check_stop_timeout("/m", ours, 60).verdict == "pass"
    assert dc.check_stop_timeout("/m", None, 60).verdict == "warn"


def worker(pid, release, deleted=False):
    return WorkerProcess(
        pid=pid,
        ppid=1,
        state="idle",
        title="resque-2.6.0: Waiting for *",
        release=release,
        release_deleted=deleted,
        app="shop",
    )


def test_check_monit_and_releases():
    st = settings()
    facts = HostFacts(
        [worker(10, "r2"), worker(11, "r2")],
        {
            "resque_shop_0": ServiceStatus("resque_shop_0", "OK", None, 10),
            "resque_shop_1": ServiceStatus("resque_shop_1", "OK", None, 11),
        },
        None,
        "r2",
    )
    assert dc.check_monit(st, facts).verdict == "pass"
    assert dc.check_releases(facts, "shop").verdict == "pass"
    facts.workers = [worker(10, "r1"), worker(11, "r2", deleted=True)]
    c = dc.check_releases(facts, "shop")
    assert c.verdict == "fail" and "pid 10 on r1" in c.detail and "pid 11 on r2 (deleted)" in c.detail
    assert "resque.restart" in c.fix
    facts.workers = [worker(10, "r2"), worker(11, "r2"), worker(12, "r2")]
    assert dc.check_releases(facts, "shop").verdict == "warn"
    facts.services = {"resque_shop_0": ServiceStatus("resque_shop_0", "OK", None, 10)}
    c = dc.check_monit(st, facts)
    assert c.verdict == "fail" and "lists resque_shop_0; the config has resque_shop_0, resque_shop_1" in c.detail
    facts.monit_error = "util1: the monit daemon is not running (or its httpd is off). Start it"
    assert dc.check_monit(st, facts).verdict == "fail"


def test_pidfiles_and_locks():
    out = (
        "pidfile\t/p/resque_0.pid\t100\tS\tresque-2.6.0: Waiting for * \n"
        "pidfile\t/p/resque_1.pid\t101\t\t\n"
        "pidfile\t/p/resque_2.pid\t102\tS\tnginx: worker process \n"
        "pidfile\t/p/resque_3.pid\t\t\t\n"
        "pidfile\t/p/resque_4.pid\t104\tZ\t\n"
        "lock\t/tmp/resque_0.monit-lock\t200\tS\t/bin/bash /engineyard/bin/resque \n"
        "lock\t/tmp/resque_1.monit-lock\t201\t\t\n"
        "junk\n"
    )
    files = pidfiles.parse_pidfiles(out)
    assert [f.path for f in files if dc.stale_reason(f)] == [
        "/p/resque_1.pid",
        "/p/resque_2.pid",
        "/p/resque_3.pid",
        "/p/resque_4.pid",
        "/tmp/resque_1.monit-lock",
    ]
    assert "not a resque worker (nginx: worker process)" in dc.stale_reason(files[2])
    c = dc.check_pidfiles(files, "/p")
    assert c.verdict == "fail" and c.fix.startswith("remove them (rm /p/resque_1.pid /p/resque_2.pid")
    assert dc.check_pidfiles(files[:1], "/p").verdict == "pass"
    assert "/tmp/resque_0.monit-lock /tmp/resque_1.monit-lock" in pidfiles.pidfiles_command(settings())


# --- doctor: the Rakefile ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, lazy",
    [
        ('require "resque/tasks"\ntask "resque:setup" => :environment\n', True),
        ("task 'resque:setup' => :environment do\n  Resque.redis = 'x'\nend\n", True),
        ('task "resque:setup": :environment do\n  User.columns\nend\n', False),
        (
            'task "resque:setup" => :environment do\n'
            "  ActiveRecord::Base.send(:subclasses).each { |klass| klass.columns }\nend\n",
            False,
        ),
        ('task "resque:setup" => :environment do Rails.application.eager_load! end\n', False),
        (
            "namespace :resque do\n  task setup: :environment do\n    Resque.logger = Logger.new($stdout)\n"
            "  end\nend\n",
            True,
        ),
        (
            "namespace :resque do\n  task :setup => :environment do\n    Rails.application.eager_load!\n  end\nend\n",
            False,
        ),
        ("task :setup do\n  puts 1\nend\n", None),  # not resque's
    ],
)
def test_setup_tasks_and_preloading(text, lazy):
    found = rakefile.setup_tasks(text)
    if lazy is None:
        assert found == []
        return
    assert len(found) == 1
    c = dc.check_rakefile({"current/Rakefile": text}, "r2")
    assert c.verdict == ("warn" if lazy else "pass")
    if lazy:
        assert "current/Rakefile:" in c.detail and dc.PRELOAD_FIX in c.fix


def test_body_stops_at_the_task_end():
    text = "task 'resque:setup' => :environment do\n  Resque.redis = 'x'\nend\n\ntask :other do\n  User.columns\nend\n"
    assert dc.check_rakefile({"current/Rakefile": text}, "r2").verdict == "warn"


def test_rakefile_without_task_or_release():
    assert dc.check_rakefile({"current/Rakefile": "require 'rake'\n"}, "r2").verdict == "pass"
    assert dc.check_rakefile({}, None).verdict == "warn"


def test_parse_rake_files():
    out = (
        "\n__deployhooks_section__ Rakefile\nrequire 'x'\n"
        '\n__deployhooks_section__ lib/tasks/resque.rake\ntask "resque:setup"\n'
    )
    assert rakefile.parse_rake_files(out) == {
        "current/Rakefile": "require 'x'\n",
        "current/lib/tasks/resque.rake": 'task "resque:setup"\n',
    }


# --- doctor: the whole list --------------------------------------------------------------------


def test_exit_code_and_render():
    checks = [dc.Check("a", "pass", "fine"), dc.Check("bb", "warn", "hmm", "do x\nand y")]
    assert d.exit_code(checks) == 0
    assert d.exit_code(checks + [dc.Check("c", "fail", "bad", "fix c")]) == 1
    out = d.render("util1", checks + [dc.Check("c", "fail", "bad", "fix c")]).splitlines()
    assert out[0] == "util1: pass  a   fine"
    assert out[1] == "util1: warn  bb  hmm"
    assert out[2] == "util1:           fix: do x" and out[3] == "util1:                and y"
    assert out[4] == "util1: FAIL  c   bad"
    assert out[-1] == "util1: 1 pass, 1 warn, 1 fail"


def test_run_checks_in_order_on_plain_facts():
    st = settings()
    monitrc = ip.desired_monitrc(st, WRAPPER)
    status = HostFacts(
        [worker(10, "r2"), worker(11, "r2")],
        {
            "resque_shop_0": ServiceStatus("resque_shop_0", "OK", None, 10),
            "resque_shop_1": ServiceStatus("resque_shop_1", "OK", None, 11),
        },
        None,
        "r2",
    )
    facts = d.Facts(
        resque_yml="production: r1:6379\n",
        redis=(0, "PONG\n"),
        wrapper=WRAPPER,
        confs={0: "QUEUE=critical,high\n", 1: "QUEUE='*'\n"},
        monitrc=monitrc,
        status=status,
        pidfiles=[],
        rake_files={},
    )
    checks = d.run_checks(st, facts, "util1")
    assert [c.name for c in checks] == [
        "resque.yml",
        "redis",
        "wrapper",
        "conf files",
        "monitrc",
        "monit stop timeout",
        "monit",
        "worker releases",
        "pidfiles and locks",
        "Rakefile",
    ]
    assert {c.verdict for c in checks} == {"pass"}
    facts.wrapper = None
    checks = {c.name: c for c in d.run_checks(st, facts, "util1")}
    assert checks["wrapper"].verdict == "fail" and checks["monitrc"].verdict == "warn"
