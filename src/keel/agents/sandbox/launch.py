"""`python -m keel.agents.sandbox.launch SPEC`: exec a long-lived command (a stdio MCP server) in the
sandbox, for callers that start the process themselves (the `mcp` SDK's stdio client). SPEC is JSON:
{"command": [...], "limits": {...}, "cgroup": [paths]}. It joins the server's cgroup (made and removed by
its caller, `Sandbox.cgroup`), sets the rlimits, takes a uid of its own, writes the seccomp filter to an
inheritable memfd and execs bubblewrap: the same walls as `Sandbox.run`.
"""

from __future__ import annotations

import json
import os
import random
import sys

from keel.agents.sandbox.cgroups import RunCgroup
from keel.agents.sandbox.runner import UID_BASE, UID_SPAN, Limits, Sandbox, SandboxUnavailable, _limit


def main(argv: list[str]) -> int:
    spec = json.loads(argv[0])
    limits = Limits(**spec.get("limits", {}))
    box = Sandbox()
    try:
        bpf = box._prepare()
    except SandboxUnavailable as exc:
        print(f"keel sandbox: {exc}", file=sys.stderr)
        return 126
    fd = os.memfd_create("keel-seccomp", 0)  # inherited by bwrap
    os.write(fd, bpf)
    os.lseek(fd, 0, os.SEEK_SET)
    uid = UID_BASE + random.randrange(UID_SPAN)
    if spec.get("cgroup"):  # as root, before the uid drop: every process of the server is born inside
        RunCgroup(tuple(spec["cgroup"])).join()
    _limit(limits.rlimits())
    if os.geteuid() == 0:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    argv_ = box.argv(spec["command"], fd, limits.disk_mb, spec.get("net_dir"))  # net_dir: the allow-list proxy
    env = {"PATH": "/usr/bin:/bin", "HOME": "/sandbox", "LANG": "C.UTF-8", **spec.get("env", {})}
    os.execve(box.bwrap, argv_, env)
    return 127


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
