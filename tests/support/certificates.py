"""A certificate authority and certificates for the TLS tests, made with `cryptography`."""

from __future__ import annotations

import datetime
import ipaddress
import shutil
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_file(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return path


@dataclass(frozen=True, slots=True)
class Authority:
    """A CA: its certificate's file, and what signs the certificates it issues."""

    cert_file: Path
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @classmethod
    def create(cls, directory: Path, name: str) -> Authority:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(_name(name))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                    encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )  # fmt: skip
        path = directory / f"{name}.pem"
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return cls(path, cert, key)

    def issue(self, directory: Path, name: str, days: float = 1.0) -> tuple[Path, Path]:
        """A certificate for 127.0.0.1 and localhost, good for serving and for calling (as a
        service's is), valid for `days` from now: its file and its key's."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        cert_file = directory / f"{name}.pem"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return cert_file, _key_file(key, directory / f"{name}.key")


@dataclass(frozen=True)
class Pki:
    """The deployment's CA, a service's certificate, and a CA nobody here trusts."""

    ca: Path
    cert: Path
    key: Path
    stranger_ca: Path

    @classmethod
    def create(cls, directory: Path, name: str = "inventory") -> Pki:
        """A CA, a certificate of it for `name`, and a stranger CA, in `directory`."""
        ours, stranger = Authority.create(directory, "a4co-ca"), Authority.create(directory, "stranger-ca")
        cert, key = ours.issue(directory, name)
        return cls(ours.cert_file, cert, key, stranger.cert_file)

    def renew(self, authority: Authority, name: str) -> None:
        """Write a certificate of `authority` (90 days), its key and the CA over these files, as a
        renewal does."""
        cert, key = authority.issue(self.cert.parent, name, days=90)
        shutil.copyfile(cert, self.cert)
        shutil.copyfile(key, self.key)
        shutil.copyfile(authority.cert_file, self.ca)

    def copy(self, directory: Path) -> Pki:
        """The same files somewhere else: another service's own."""
        directory.mkdir()
        ca, cert, key = (Path(shutil.copy(p, directory)) for p in (self.ca, self.cert, self.key))
        return Pki(ca, cert, key, self.stranger_ca)

    def env(self, mutual: bool = False) -> dict[str, str]:
        return {
            "A4CO_TLS_CERT_FILE": str(self.cert),
            "A4CO_TLS_KEY_FILE": str(self.key),
            "A4CO_TLS_CA_FILE": str(self.ca),
            "A4CO_TLS_CLIENT_AUTH": "1" if mutual else "0",
        }
