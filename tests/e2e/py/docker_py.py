"""docker-py against berthd's Docker API (run by tests/e2e/tests/docker_py.rs).

DOCKER_HOST names berthd's socket; BERTH_PY_IMAGE is an image archive to
load. Prints "ok" when every check passed; an assertion names what failed.
"""

import os
import sys
import time

import docker
from docker.errors import APIError, NotFound


def main():
    client = docker.from_env(timeout=60)
    assert client.ping() is True
    assert client.version()["ApiVersion"].startswith("1.")

    # run(remove=True): the output, and the container is gone.
    out = client.containers.run("busybox", ["echo", "hi"], remove=True)
    assert out == b"hi\n", out
    assert client.containers.list(all=True) == [], "run --rm left a container"

    # A failing command: ContainerError with the exit code.
    try:
        client.containers.run("busybox", ["sh", "-c", "exit 3"], remove=True)
        raise AssertionError("exit 3 raised nothing")
    except docker.errors.ContainerError as e:
        assert e.exit_status == 3, e

    # run(detach=True), logs(stream=True), exec_run, kill, wait, remove.
    c = client.containers.run(
        "busybox",
        ["sh", "-c", "for i in 1 2 3; do echo line$i; done; while true; do sleep 0.1; done"],
        detach=True,
        name="py",
        labels={"suite": "docker-py"},
    )
    assert len(c.id) == 64, c.id
    c.reload()
    assert c.status == "running", c.status
    assert c.name == "py", c.name
    assert c.labels.get("suite") == "docker-py", c.labels
    seen = b""
    deadline = time.monotonic() + 20
    for chunk in c.logs(stream=True, follow=True):
        seen += chunk
        if b"line3\n" in seen or time.monotonic() > deadline:
            break
    assert seen.startswith(b"line1\nline2\nline3\n"), seen
    r = c.exec_run(["sh", "-c", "echo from-exec; exit 4"])
    assert r.exit_code == 4, r
    assert r.output == b"from-exec\n", r
    assert [x.name for x in client.containers.list()] == ["py"]
    c.kill()
    res = c.wait(timeout=20)
    assert res["StatusCode"] == 137, res
    c.remove()
    try:
        client.containers.get("py")
        raise AssertionError("a removed container was found")
    except NotFound:
        pass

    # wait(condition="next-exit") on an exited container: its next run's
    # exit. The reply's headers come once the wait is in place, so the
    # start cannot slip in before it.
    # The first run exits 5, the next one 6.
    c2 = client.containers.run(
        "busybox", ["sh", "-c", "[ -f /ran ] && exit 6; touch /ran; exit 5"], detach=True
    )
    assert c2.wait(timeout=20)["StatusCode"] == 5
    resp = client.api._post(
        client.api._url("/containers/{0}/wait", c2.id),
        params={"condition": "next-exit"},
        stream=True,
    )
    assert resp.status_code == 200, resp.status_code
    c2.start()
    assert resp.json()["StatusCode"] == 6
    c2.remove()

    # Errors map to docker-py's exceptions as with Docker.
    try:
        client.api.kill("nosuchcontainer")
        raise AssertionError("kill of a missing container raised nothing")
    except NotFound as e:
        assert e.status_code == 404, e
        assert "No such container" in str(e), e
    try:
        client.containers.create("busybox", ["true"], name="bad name!")
        raise AssertionError("a bad name raised nothing")
    except APIError as e:
        assert e.status_code == 400 and e.is_client_error(), e
    try:
        client.images.get("nosuchimage:1")
        raise AssertionError("a missing image raised nothing")
    except docker.errors.ImageNotFound:
        pass
    busy = client.containers.run("busybox", ["sleep", "100"], detach=True)
    try:
        busy.remove()
        raise AssertionError("removing a running container raised nothing")
    except APIError as e:
        assert e.status_code == 409, e
    busy.remove(force=True)

    # images.load
    with open(os.environ["BERTH_PY_IMAGE"], "rb") as f:
        loaded = client.images.load(f.read())
    tags = [t for i in loaded for t in i.tags]
    assert "pyimg:1" in tags, tags
    assert "pyimg:1" in [t for i in client.images.list() for t in i.tags]

    # volumes.create and a named volume shared by two runs.
    v = client.volumes.create("pyvol", labels={"k": "v"})
    assert v.name == "pyvol" and v.attrs["Labels"] == {"k": "v"}, v.attrs
    client.containers.run(
        "busybox", ["sh", "-c", "echo kept >/data/f"], remove=True,
        volumes={"pyvol": {"bind": "/data", "mode": "rw"}},
    )
    out = client.containers.run(
        "busybox", ["cat", "/data/f"], remove=True,
        volumes={"pyvol": {"bind": "/data", "mode": "ro"}},
    )
    assert out == b"kept\n", out
    v.remove()
    assert "pyvol" not in [x.name for x in client.volumes.list()]

    # networks.create: list, inspect, a server on it reached by name from
    # another container, connect/disconnect, remove.
    net = client.networks.create("pynet", driver="bridge", labels={"k": "n"})
    assert len(net.id) == 64, net.id
    assert "pynet" in [n.name for n in client.networks.list()]
    assert [n.name for n in client.networks.list(names=["pynet"])] == ["pynet"]
    got = client.networks.get("pynet")
    assert got.id == net.id and got.attrs["Labels"] == {"k": "n"}, got.attrs
    assert got.attrs["Driver"] == "bridge", got.attrs
    try:
        client.networks.create("pynet")
        raise AssertionError("a second network of the same name raised nothing")
    except APIError as e:
        assert e.status_code == 409, e
    srv = client.containers.run(
        "busybox",
        ["sh", "-c", "mkdir -p /www && echo hello-py > /www/i && exec httpd -f -p 80 -h /www"],
        detach=True, name="pysrv", network="pynet",
    )
    body = b""
    deadline = time.monotonic() + 20
    while b"hello-py" not in body and time.monotonic() < deadline:
        try:
            body = client.containers.run(
                "busybox",
                ["sh", "-c", "printf 'GET /i HTTP/1.0\\r\\n\\r\\n' | nc -w 2 pysrv 80"],
                remove=True, network="pynet",
            )
        except docker.errors.ContainerError:
            time.sleep(0.1)
    assert b"hello-py" in body, body
    net.reload()
    assert [c.name for c in net.containers] == ["pysrv"], net.attrs
    other = client.networks.create("pynet2")
    other.connect(srv)
    srv.reload()
    assert set(srv.attrs["NetworkSettings"]["Networks"]) == {"pynet", "pynet2"}, srv.attrs
    other.disconnect(srv)
    srv.reload()
    assert set(srv.attrs["NetworkSettings"]["Networks"]) == {"pynet"}, srv.attrs
    other.remove()
    srv.remove(force=True)
    net.remove()
    assert [n.name for n in client.networks.list(names=["pynet", "pynet2"])] == []
    try:
        client.networks.get("pynet")
        raise AssertionError("a removed network was found")
    except NotFound:
        pass
    print("ok")


if __name__ == "__main__":
    main()
    sys.exit(0)
