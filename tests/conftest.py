pytest_plugins = ["tests.fixtures.redis", "tests.fixtures.monit", "tests.fixtures.sshd", "tests.fixtures.fleet"]
