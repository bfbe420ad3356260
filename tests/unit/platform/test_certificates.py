"""TLS files read again while a service runs (decision 59): a renewal is loaded, a touch is not a
change, and files caught half-written are rejected, the ones before kept, until they are whole."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from services.platform.grpc.tls import Certificates, Tls
from tests.support.certificates import Authority

SERVICE = "unit-certificates"


def reloads(outcome: str) -> float:
    return (
        REGISTRY.get_sample_value("a4co_tls_reloads_total", {"service": SERVICE, "outcome": outcome}) or 0.0
    )


def expiry() -> float | None:
    return REGISTRY.get_sample_value("a4co_tls_certificate_expiry_timestamp_seconds", {"service": SERVICE})


class Files:
    """A service's certificate, key and CA at fixed paths, renewed by copying new ones over them."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.ca = Authority.create(directory, "ca")
        self.cert, self.key = directory / "tls.crt", directory / "tls.key"
        self.renew(days=1.0)

    def issue(self, days: float) -> tuple[Path, Path]:
        return self.ca.issue(self.directory, f"issued-{days}", days=days)

    def renew(self, days: float) -> None:
        cert, key = self.issue(days)
        shutil.copyfile(cert, self.cert)
        shutil.copyfile(key, self.key)

    def certificates(self) -> Certificates:
        return Certificates(
            Tls.from_env(
                {
                    "A4CO_TLS_CERT_FILE": str(self.cert),
                    "A4CO_TLS_KEY_FILE": str(self.key),
                    "A4CO_TLS_CA_FILE": str(self.ca.cert_file),
                }
            ),
            SERVICE,
        )


@pytest.fixture
def files(tmp_path: Path) -> Files:
    return Files(tmp_path)


def test_a_renewed_certificate_is_loaded_and_its_expiry_exported(files: Files) -> None:
    certificates = files.certificates()
    first = certificates.tls
    assert expiry() == first.expires
    assert not certificates.check(), "nothing changed"
    loaded = reloads("loaded")
    files.renew(days=30)
    assert certificates.check()
    assert certificates.generation == 1
    assert certificates.tls.cert == files.cert.read_bytes() != first.cert
    assert certificates.tls.key == files.key.read_bytes()
    assert certificates.tls.expires is not None
    assert first.expires is not None
    assert certificates.tls.expires > first.expires + 28 * 86_400
    assert expiry() == certificates.tls.expires
    assert reloads("loaded") == loaded + 1
    assert not certificates.check(), "looked at again, unchanged"
    assert certificates.server_credentials() is not None


def test_files_touched_but_not_changed_are_not_a_renewal(files: Files) -> None:
    certificates = files.certificates()
    stat = files.cert.stat()
    os.utime(files.cert, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert not certificates.check()
    assert certificates.generation == 0


def test_a_certificate_without_its_new_key_is_rejected_until_the_key_comes(
    files: Files, caplog: pytest.LogCaptureFixture
) -> None:
    certificates = files.certificates()
    before, rejected = certificates.tls, reloads("rejected")
    cert, key = files.issue(days=30)
    shutil.copyfile(cert, files.cert)  # the renewal is half-way: the key is the old one
    with caplog.at_level(logging.WARNING):
        assert not certificates.check()
    assert certificates.tls == before, "the files read before are kept"
    assert certificates.generation == 0
    assert reloads("rejected") == rejected + 1
    said = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("not the key of A4CO_TLS_CERT_FILE's certificate" in m for m in said), said
    assert not certificates.check(), "the same half-written files are not tried again"
    assert reloads("rejected") == rejected + 1
    shutil.copyfile(key, files.key)
    assert certificates.check()
    assert certificates.tls.cert == cert.read_bytes()
    assert certificates.generation == 1


@pytest.mark.parametrize("damage", ["garbage", "missing"])
def test_a_certificate_unreadable_or_missing_is_rejected_and_the_one_before_kept(
    files: Files, damage: str
) -> None:
    certificates = files.certificates()
    before, rejected = certificates.tls, reloads("rejected")
    if damage == "garbage":
        files.cert.write_text("-----BEGIN CERTIFICATE-----\ncut short")
    else:
        files.cert.unlink()
    assert not certificates.check()
    assert certificates.tls == before
    assert reloads("rejected") == rejected + 1
    assert certificates.server_credentials() is not None, "still serving the certificate read before"


def test_plaintext_has_nothing_to_watch() -> None:
    certificates = Certificates()
    assert not certificates.watched
    assert not certificates.check()
    assert certificates.server_credentials() is None
