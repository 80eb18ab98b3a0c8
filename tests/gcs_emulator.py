"""A local Google Cloud Storage for tests: `gcp-storage-emulator` on 127.0.0.1.

The `gcs` fixture starts the emulator (in memory, loopback only, a free port)
once per session with a bucket `BUCKET`, points the clients at it through
the standard variables only (gcsfs: `STORAGE_EMULATOR_HOST`; tensorstore,
which orbax writes arrays with: `TENSORSTORE_GCS_HTTP_URL` and
`GOOGLE_AUTH_TOKEN_FOR_TESTING`), which subprocesses inherit, and stops it at
the end. Without the package (CI installs it with the `test` extra) the
tests that use it skip, saying why.

Run as a script, this file is the emulator with two fixes (`_serve`). Its
server reads one connection at a time, so an idle pooled connection stalls all
others: connections are read in threads. And its media
downloads lack the `x-goog-generation` header that GCS sends and ignore the
`ifGenerationMatch`/`ifGenerationNotMatch` preconditions. tensorstore's OCDBT
(orbax's array format) reads a manifest's generation from that header and
revalidates its cache with the precondition; without them every second
write to a checkpoint fails with "Malformed StorageGeneration".
"""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

BUCKET = "pix2pix-test"
VARIABLES = (
    "STORAGE_EMULATOR_HOST", "TENSORSTORE_GCS_HTTP_URL", "GOOGLE_AUTH_TOKEN_FOR_TESTING",
    "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT",
)  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_up(url: str, process: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the GCS emulator exited: {process.communicate()[0][-2000:]}")
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"{url}/storage/v1/b/{BUCKET}", timeout=2) as reply,
        ):
            if reply.status == 200:
                return
        time.sleep(0.1)
    raise TimeoutError(f"the GCS emulator did not answer at {url} within {timeout} s")


def _die_with_parent() -> None:
    """In the emulator's process: end with the test process, even if that one is killed."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _clear_client_caches() -> None:
    """gcsfs keeps filesystem instances, built for the emulator that was up then."""
    with contextlib.suppress(ImportError):
        import gcsfs

        gcsfs.GCSFileSystem.clear_instance_cache()


@pytest.fixture(scope="session")
def gcs():
    """The emulator's URL; `gs://BUCKET/...` is writable while it runs."""
    pytest.importorskip(
        "gcp_storage_emulator", reason="gcp-storage-emulator is not installed (the test extra)"
    )
    pytest.importorskip("gcsfs", reason="gcsfs (epath's gs:// filesystem) is not installed")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    args = [sys.executable, __file__, "start", "--host=127.0.0.1", f"--port={port}",
            "--in-memory", f"--default-bucket={BUCKET}", "--quiet"]  # fmt: skip
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               preexec_fn=_die_with_parent)  # fmt: skip
    saved = {name: os.environ.get(name) for name in VARIABLES}
    try:
        _wait_until_up(url, process)
        os.environ.update(
            STORAGE_EMULATOR_HOST=url, TENSORSTORE_GCS_HTTP_URL=url,
            GOOGLE_AUTH_TOKEN_FOR_TESTING="emulator",
            # Not a pointer but a switch: gcsfs's bucket-type lookup (hierarchical namespaces)
            # asks GCS's control-plane API, which the emulator lacks; unanswered, it is retried
            # at every operation, each time probing for credentials first.
            GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT="false",
        )  # fmt: skip
        _clear_client_caches()
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        _clear_client_caches()


def _serve_connections_in_threads() -> None:
    """Read each connection in its own thread; handle one request at a time.

    The emulator's server reads connections one after the other: a client that opens a
    connection and sends nothing yet (connection pools do) blocks every other client,
    for ever. Requests are still handled one at a time, under a lock: the in-memory
    storage was not written for concurrent access.
    """
    import threading
    from http import server as http_server

    from gcp_storage_emulator import server as emulator_server

    class ThreadingServer(http_server.ThreadingHTTPServer):
        daemon_threads = True

    lock, handle = threading.Lock(), emulator_server.Router.handle

    def locked_handle(self, method):
        with lock:
            return handle(self, method)

    http_server.HTTPServer = ThreadingServer  # the name the emulator's server looks up
    emulator_server.Router.handle = locked_handle
    emulator_server.RequestHandler.timeout = 60  # drop connections idle for a minute


def _serve() -> None:
    """The emulator's command line, its media downloads answering as GCS does (see above)."""
    from http import HTTPStatus

    from gcp_storage_emulator.exceptions import NotFound
    from gcp_storage_emulator.handlers import objects

    original = objects.download

    def download(request, response, storage, *args, **kwargs):
        try:
            obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
        except NotFound:
            return original(request, response, storage, *args, **kwargs)
        generation = obj["generation"]
        match = request.query.get("ifGenerationMatch", [None])[0]
        not_match = request.query.get("ifGenerationNotMatch", [None])[0]
        if not_match == generation:
            response.status = HTTPStatus.NOT_MODIFIED
            return None
        if match is not None and match != generation:
            response.status = HTTPStatus.PRECONDITION_FAILED
            return None
        response["x-goog-generation"] = generation
        response["x-goog-metageneration"] = obj["metageneration"]
        return original(request, response, storage, *args, **kwargs)

    objects.download = download  # before the server module builds its routing table
    _serve_connections_in_threads()
    from gcp_storage_emulator.__main__ import main

    main(sys.argv[1:])


if __name__ == "__main__":
    _serve()
