"""Shared helpers for the Python SDK end-to-end scripts.

Every script is a standalone program: it reads the hub's connection strings
from the environment (set by twinhub/tests/sdk_e2e.rs, or by hand), prints
each step, and exits non-zero with a clear message on the first failed
assertion. The hub's CA must be trusted through REQUESTS_CA_BUNDLE.
"""

import base64
import json
import os
import re
import signal
import sys
import traceback

from msrest.exceptions import HttpOperationError

# A hung request must fail the script, not the whole CI run.
SCRIPT_TIMEOUT_S = 90


class CheckFailed(Exception):
    """An assertion about the hub's behaviour did not hold."""


def env(name):
    value = os.environ.get(name)
    if not value:
        raise CheckFailed(f"environment variable {name} is required (see twinhub/tests/sdk_e2e.rs)")
    return value


def step(message):
    print(f"--- {message}", flush=True)


def info(message):
    print(f"    {message}", flush=True)


def check(condition, message):
    if not condition:
        raise CheckFailed(message)


def check_eq(actual, expected, what):
    if actual != expected:
        raise CheckFailed(f"{what}: expected {expected!r}, got {actual!r}")


def main(script_name, body):
    """Runs `body` and exits with 0 on success, 1 on any failure."""

    def on_timeout(_signum, _frame):
        raise CheckFailed(f"timed out after {SCRIPT_TIMEOUT_S} s")

    signal.signal(signal.SIGALRM, on_timeout)
    signal.alarm(SCRIPT_TIMEOUT_S)
    try:
        body()
    except CheckFailed as err:
        print(f"FAIL {script_name}: {err}", file=sys.stderr, flush=True)
        traceback.print_exc()
        sys.exit(1)
    except HttpOperationError as err:
        print(f"FAIL {script_name}: unexpected {describe_http_error(err)}", file=sys.stderr, flush=True)
        traceback.print_exc()
        sys.exit(1)
    except Exception as err:  # noqa: BLE001 - any other failure is a test failure too
        print(f"FAIL {script_name}: {type(err).__name__}: {err}", file=sys.stderr, flush=True)
        traceback.print_exc()
        sys.exit(1)
    signal.alarm(0)
    print(f"PASS {script_name}", flush=True)
    sys.exit(0)


def describe_http_error(err):
    response = err.response
    if response is None:
        return f"HttpOperationError without a response: {err}"
    code = response.headers.get("iothub-errorcode")
    return (
        f"HTTP {response.status_code} {response.request.method} {response.request.url}"
        + (f" iothub-errorcode={code}" if code else "")
        + f" body={response.text!r}"
    )


def expect_http_error(what, call, status, code=None):
    """Calls `call()`, which must raise HttpOperationError for an HTTP `status`
    response; with `code`, the body must be `{"Message":"ErrorCode:<code>;..."}`
    and the `iothub-errorcode` header `<code>` (spec §5.7)."""
    try:
        result = call()
    except HttpOperationError as err:
        info(f"{what} -> {describe_http_error(err)}")
        check(err.response is not None, f"{what}: no HTTP response")
        check_eq(err.response.status_code, status, f"{what}: HTTP status")
        if code is not None:
            check_eq(err.response.headers.get("iothub-errorcode"), code, f"{what}: iothub-errorcode header")
            content_type = err.response.headers.get("content-type", "")
            check("application/json" in content_type, f"{what}: error Content-Type must be application/json, got {content_type!r}")
            try:
                body = json.loads(err.response.text)
            except ValueError:
                raise CheckFailed(f"{what}: error body is not JSON: {err.response.text!r}") from None
            message = body.get("Message") if isinstance(body, dict) else None
            check(
                isinstance(message, str) and message.startswith(f"ErrorCode:{code};"),
                f"{what}: error Message must start with 'ErrorCode:{code};', got {message!r}",
            )
        return err
    raise CheckFailed(f"{what}: expected HTTP {status}, but the call succeeded: {result!r}")


def etag_counter(etag):
    """Decodes a twin etag: base64 of an 8-byte big-endian counter (spec §7.3)."""
    check(isinstance(etag, str), f"twin etag must be a string, got {etag!r}")
    raw = base64.b64decode(etag, validate=True)
    check(len(raw) == 8, f"twin etag {etag} must be base64 of 8 bytes")
    return int.from_bytes(raw, "big")


def check_generated_key(key, what):
    check(isinstance(key, str), f"{what} must be a string, got {key!r}")
    try:
        raw = base64.b64decode(key, validate=True)
    except ValueError:
        raise CheckFailed(f"{what} {key!r} is not base64") from None
    check(len(raw) == 32, f"{what} {key!r} must be base64 of 32 bytes, got {len(raw)} bytes")


def check_auto_generated_keys(device, what):
    """Checks the keys of a device created with empty keys (spec §5.2)."""
    auth = device.authentication
    check(auth is not None and auth.symmetric_key is not None, f"{what}: authentication.symmetricKey missing")
    check_generated_key(auth.symmetric_key.primary_key, f"{what}: primaryKey")
    check_generated_key(auth.symmetric_key.secondary_key, f"{what}: secondaryKey")
    check(
        auth.symmetric_key.primary_key != auth.symmetric_key.secondary_key,
        f"{what}: primary and secondary keys must differ",
    )


TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")


def check_timestamp(value, what):
    check(isinstance(value, str) and TIMESTAMP.match(value), f"{what} must be an ISO-8601 UTC timestamp, got {value!r}")


def check_metadata_node(md, keys, what, desired_version=None):
    """Checks a `$metadata` node: its `$lastUpdated`, and for each key a child
    node with `$lastUpdated` (+ `$lastUpdatedVersion` for desired, spec §7.5)."""
    check(isinstance(md, dict), f"{what}: metadata node missing, got {md!r}")
    check_timestamp(md.get("$lastUpdated"), f"{what}: $lastUpdated")
    for key in keys:
        node = md.get(key)
        check(isinstance(node, dict), f"{what}: metadata for {key!r} missing in {md!r}")
        check_timestamp(node.get("$lastUpdated"), f"{what}: {key}.$lastUpdated")
        if desired_version is not None:
            check_eq(node.get("$lastUpdatedVersion"), desired_version, f"{what}: {key}.$lastUpdatedVersion")


def user_props(section):
    """Members of a twin section without `$metadata` / `$version`."""
    return {k: v for k, v in (section or {}).items() if not k.startswith("$")}


def with_wrong_key(connection_string):
    """The same connection string, but with a random (wrong) key."""
    wrong = base64.b64encode(os.urandom(32)).decode()
    replaced, count = re.subn(r"SharedAccessKey=[^;]*", f"SharedAccessKey={wrong}", connection_string)
    check(count == 1, "connection string must contain SharedAccessKey=")
    return replaced
