#!/usr/bin/env python3
"""bench/docker-api-requests.py: where `docker run --rm IMAGE /bin/true`'s
time goes on the daemon's side, request by request.

    python3 bench/docker-api-requests.py SOCKET IMAGE [NETWORK [N]]

Replays the requests the docker 28 CLI sends for that command on the
Docker API socket SOCKET (berthd's --docker-socket, or dockerd's), without
the CLI's own start-up, N times (default 10, after one warm-up), and
prints each step's median and minimum: ping, create, the attach's 101,
the wait's head (condition=removed), start, the attach's end (the exit
and the removal), the wait's answer. NETWORK is the create's NetworkMode
(default none). It leaves nothing behind: the containers are AutoRemove.
"""
import json
import socket
import sys
import time


def connect(path):
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    return s


def send(s, method, path, body=None, headers=""):
    data = json.dumps(body).encode() if body is not None else b""
    head = f"{method} {path} HTTP/1.1\r\nHost: api.moby.localhost\r\n{headers}"
    if body is not None:
        head += f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
    s.sendall(head.encode() + b"\r\n" + data)


def read_head(s):
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise SystemExit("the daemon closed the connection before the head")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    return head.decode(), rest


def status(head):
    return int(head.split(" ", 2)[1])


def run_once(sock, config):
    t = [("t0", time.perf_counter())]
    mark = lambda name: t.append((name, time.perf_counter()))
    api = connect(sock)
    send(api, "HEAD", "/_ping")
    read_head(api)
    mark("ping")
    send(api, "POST", "/v1.50/containers/create", config)
    head, rest = read_head(api)
    if status(head) != 201:
        raise SystemExit(f"create: {head.splitlines()[0]} {rest!r}")
    while b"}" not in rest:
        rest += api.recv(65536)
    cid = json.loads(rest[rest.index(b"{"): rest.rindex(b"}") + 1])["Id"]
    mark("create")
    att = connect(sock)
    send(att, "POST", f"/v1.50/containers/{cid}/attach?stderr=1&stdout=1&stream=1",
         headers="Connection: Upgrade\r\nUpgrade: tcp\r\n")
    head, _ = read_head(att)
    if status(head) != 101:
        raise SystemExit(f"attach: {head.splitlines()[0]}")
    mark("attach 101")
    wait = connect(sock)
    send(wait, "POST", f"/v1.50/containers/{cid}/wait?condition=removed")
    _, answer = read_head(wait)
    mark("wait head")
    send(api, "POST", f"/v1.50/containers/{cid}/start")
    head, _ = read_head(api)
    if status(head) != 204:
        raise SystemExit(f"start: {head.splitlines()[0]}")
    mark("start")
    while att.recv(65536):
        pass
    mark("attach end")
    while b"StatusCode" not in answer:
        chunk = wait.recv(65536)
        if not chunk:
            break
        answer += chunk
    mark("wait answer")
    for s in (api, att, wait):
        s.close()
    steps = [(name, (b - a) * 1000) for (_, a), (name, b) in zip(t, t[1:])]
    return steps + [("total", (t[-1][1] - t[0][1]) * 1000)]


def main():
    sock, image = sys.argv[1], sys.argv[2]
    network = sys.argv[3] if len(sys.argv) > 3 else "none"
    n = int(sys.argv[4]) if len(sys.argv) > 4 else 10
    config = {
        "Image": image, "Cmd": ["/bin/true"], "AttachStdout": True, "AttachStderr": True,
        "HostConfig": {"AutoRemove": True, "NetworkMode": network},
        "NetworkingConfig": {"EndpointsConfig": {}},
    }
    run_once(sock, config)
    samples = {}
    for _ in range(n):
        for name, ms in run_once(sock, config):
            samples.setdefault(name, []).append(ms)
    print(f"| step | median ms | min ms |  ({n} runs, NetworkMode {network})")
    print("| --- | --- | --- |")
    for name, v in samples.items():
        v.sort()
        print(f"| {name} | {v[len(v) // 2]:.1f} | {v[0]:.1f} |")


if __name__ == "__main__":
    main()
