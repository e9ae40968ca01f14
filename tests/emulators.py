"""Cloud storage emulators for the tests: moto's S3 server and Azurite's blob service.

Each is started once per test session on a free port of 127.0.0.1, waited for, and
stopped by its PID at the end. When one cannot start (not installed, or it dies), the
tests that need it skip, or fail under ESG_REQUIRE_SERVICES=1 (.ci/run installs both:
moto with the `test` extra, Azurite with `npm ci --prefix tests/emulators`).

Test modules import the fixtures they use: `from tests.emulators import moto_s3`.

moto runs with IAM authentication on (after the set-up below), so wrong keys and missing
permissions are refused as by AWS: `admin` may do anything, `noperm` nothing.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import free_port, service_missing

HERE = Path(__file__).resolve().parent
AZURITE_MAIN = HERE / "emulators" / "node_modules" / "azurite" / "dist" / "src" / "blob" / "main.js"
#: Azurite's well-known development account (published in Azure's documentation)
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
REGION = "us-east-1"


class EmulatorFailed(Exception):
    pass


@dataclasses.dataclass
class Process:
    name: str
    proc: subprocess.Popen
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-2000:]
        except OSError:
            return ""


def _start(name: str, argv: list[str], ready_url: str, workdir: Path, env: dict | None = None,
           timeout: float = 60) -> Process:
    """Start a server and wait until `ready_url` answers with any HTTP status."""
    log = workdir / f"{name}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=workdir, env={**os.environ, **(env or {})})
    process = Process(name, proc, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise EmulatorFailed(f"{name} exited with status {proc.returncode}:\n{process.tail()}")
        try:
            urllib.request.urlopen(ready_url, timeout=2).close()
            return process
        except urllib.error.HTTPError:
            return process  # it answers
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            time.sleep(0.1)
    process.stop()
    raise EmulatorFailed(f"{name} did not answer {ready_url} within {timeout:.0f} s:\n{process.tail()}")


# --- moto (S3) ----------------------------------------------------------------------------


@dataclasses.dataclass
class MotoS3:
    endpoint: str
    admin_key: str
    admin_secret: str
    noperm_key: str
    noperm_secret: str

    def client(self, key: str | None = None, secret: str | None = None):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name=REGION,
                            aws_access_key_id=key or self.admin_key, aws_secret_access_key=secret or self.admin_secret)

    def options(self, bucket: str, **extra) -> dict:
        """Connector options for the admin user (its secret goes in as the password)."""
        return {"bucket": bucket, "endpoint_url": self.endpoint, "region": REGION,
                "access_key_id": self.admin_key, **extra}


def _moto_executable() -> str | None:
    beside = Path(sys.executable).parent / "moto_server"
    return str(beside) if beside.exists() else shutil.which("moto_server")


@pytest.fixture(scope="session")
def moto_s3():
    exe = _moto_executable()
    if exe is None:
        service_missing("moto_server (pip install 'moto[server]')")
    workdir = Path(tempfile.mkdtemp(prefix="esg-moto-"))
    port = free_port()
    try:
        process = _start("moto_server", [exe, "-H", "127.0.0.1", "-p", str(port)],
                         f"http://127.0.0.1:{port}/moto-api/data.json", workdir,
                         env={"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"})
    except EmulatorFailed as exc:
        shutil.rmtree(workdir, ignore_errors=True)
        service_missing(f"moto's S3 server ({exc})")
    try:
        endpoint = f"http://127.0.0.1:{port}"
        import boto3

        iam = boto3.client("iam", endpoint_url=endpoint, region_name=REGION,
                           aws_access_key_id="testing", aws_secret_access_key="testing")
        iam.create_user(UserName="admin")
        iam.put_user_policy(UserName="admin", PolicyName="everything", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
        admin = iam.create_access_key(UserName="admin")["AccessKey"]
        iam.create_user(UserName="noperm")
        noperm = iam.create_access_key(UserName="noperm")["AccessKey"]
        # from now on every request is authenticated and authorized, as by AWS
        request = urllib.request.Request(f"{endpoint}/moto-api/reset-auth", data=b"0", method="POST",
                                         headers={"Content-Type": "text/plain"})
        urllib.request.urlopen(request, timeout=10).close()
        yield MotoS3(endpoint, admin["AccessKeyId"], admin["SecretAccessKey"],
                     noperm["AccessKeyId"], noperm["SecretAccessKey"])
    finally:
        process.stop()
        shutil.rmtree(workdir, ignore_errors=True)


# --- Azurite (Azure Blob) --------------------------------------------------------------------


@dataclasses.dataclass
class Azurite:
    blob_endpoint: str  # http://127.0.0.1:PORT/devstoreaccount1

    @property
    def connection_string(self) -> str:
        return (f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
                f"BlobEndpoint={self.blob_endpoint};")

    def service(self):
        from azure.storage.blob import BlobServiceClient

        return BlobServiceClient.from_connection_string(self.connection_string)


@pytest.fixture(scope="session")
def azurite():
    node = shutil.which("node")
    if node is None or not AZURITE_MAIN.exists():
        service_missing("Azurite (node and `npm ci --prefix tests/emulators`)")
    workdir = Path(tempfile.mkdtemp(prefix="esg-azurite-"))
    port = free_port()
    try:
        process = _start("azurite", [node, str(AZURITE_MAIN), "--blobHost", "127.0.0.1", "--blobPort", str(port),
                                     "--location", str(workdir / "data"), "--skipApiVersionCheck", "--loose",
                                     "--disableTelemetry"],
                         f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}?comp=list", workdir)
    except EmulatorFailed as exc:
        shutil.rmtree(workdir, ignore_errors=True)
        service_missing(f"Azurite ({exc})")
    try:
        yield Azurite(f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}")
    finally:
        process.stop()
        shutil.rmtree(workdir, ignore_errors=True)
