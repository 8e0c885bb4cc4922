"""A stdio MCP server in plain stdlib Python (the sandbox holds only /usr: no SDK): newline-delimited
JSON-RPC answering initialize, tools/list and tools/call. Its one tool, `whoami`, reports what the process
sees of its world (uid, host files, its environment's declared secret), so a test can show where it ran;
with `spread: [n, MiB]` it first forks n children that each touch that much memory and counts those killed."""

import json
import os
import sys


def tool_result(args):
    seen = {
        "uid": os.getuid(),
        "etc_shadow": os.path.exists("/etc/shadow"),
        "root_dir": sorted(os.listdir("/")),
        "token_set": bool(os.environ.get("MINI_TOKEN")),
        "echo": args.get("say", ""),
        "token_echo": os.environ.get("MINI_TOKEN", ""),
        "net_socket": os.environ.get("KEEL_NET_SOCKET", ""),
    }
    if args.get("connect"):  # host:port through Keel's allow-list proxy: its answer's status line
        import socket

        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(os.environ["KEEL_NET_SOCKET"])
        s.sendall(f"CONNECT {args['connect']} HTTP/1.1\r\n\r\n".encode())
        seen["connect"] = s.recv(200).decode("latin-1").split("\r\n")[0]
        s.close()
    if args.get("spread"):  # [children, MiB each]: memory spread over processes, each under its rlimit
        n, mib = args["spread"]
        kids = []
        for _ in range(n):
            pid = os.fork()
            if pid == 0:
                x = bytearray(mib * 1024 * 1024)
                for j in range(0, len(x), 4096):
                    x[j] = 1
                os._exit(0)
            kids.append(pid)
        seen["killed"] = sum(1 for p in kids if os.waitpid(p, 0)[1] != 0)
    return {"content": [{"type": "text", "text": json.dumps(seen)}], "isError": False}


def answer(msg):
    method, params = msg.get("method"), msg.get("params") or {}
    if method == "initialize":
        return {
            "protocolVersion": params.get("protocolVersion"),
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "mini", "version": "1"},
        }
    if method == "tools/list":
        schema = {
            "type": "object",
            "properties": {"say": {"type": "string"}, "connect": {"type": "string"}, "spread": {"type": "array"}},
        }
        return {"tools": [{"name": "whoami", "description": "where am I", "inputSchema": schema}]}
    if method == "tools/call":
        return tool_result(params.get("arguments") or {})
    if method == "ping":
        return {}
    return None


for line in sys.stdin:
    if not line.strip():
        continue
    msg = json.loads(line)
    if "id" not in msg or "method" not in msg:
        continue
    result = answer(msg)
    if result is None:
        out = {"jsonrpc": "2.0", "id": msg["id"], "error": {"code": -32601, "message": "no such method"}}
    else:
        out = {"jsonrpc": "2.0", "id": msg["id"], "result": result}
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()
