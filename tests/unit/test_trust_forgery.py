"""A path's trust chain cannot be forged by a name with newlines in it.

Found: the chain command prints one line per entry, and a symlink's target is printed by name.
A deploy user who owns a folder on the wrapper's path could point a link at a target named
"...\\n@ end\\n@ wrapper /usr/bin/true\\n0 81ed /usr/bin/true\\n...": the parser then read a
second, clean "wrapper" section, which replaced the real one, and the wrapper was trusted.
"""

from __future__ import annotations

import os
import subprocess

from deployhooks.facts import trust

FORGED = "/nonexistent\n@ end\n@ wrapper /usr/bin/true\n0 81ed /usr/bin/true\n0 41ed /usr/bin\n0 41ed /usr\n0 41ed /"


def test_a_forged_section_does_not_replace_the_real_chain(tmp_path):
    theirs = tmp_path / "deploy-owned"
    theirs.mkdir()
    os.chown(theirs, 12345, 12345)
    wrapper = theirs / "wrapper"
    wrapper.symlink_to(FORGED)
    out = subprocess.run(["sh", "-c", trust.wrapper_chain_command(str(wrapper))], capture_output=True, text=True).stdout
    label_path, entries = trust.parse_chain(out)["wrapper"]
    found = trust.problems(str(wrapper), entries)
    assert any("owned by uid 12345" in p for p in found), found


def test_output_that_is_not_a_chain_is_not_trusted():
    # a label twice, and a line that is no entry: whatever printed it, root must not trust it
    text = "@ wrapper /w\n0 81ed /w\n0 41ed /\n@ end\n@ wrapper /w\n0 81ed /w\n@ end\n"
    [(_path, entries)] = trust.parse_chain(text).values()
    assert trust.problems("/w", entries)
    text = "@ wrapper /w\n0 81ed /w\nsomething else\n0 41ed /\n@ end\n"
    assert trust.problems("/w", trust.parse_chain(text)["wrapper"][1])
