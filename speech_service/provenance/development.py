"""A development signer for Content Credentials: a CA and a signing certificate (ES256, P-256) made
on the spot, both named "UNTRUSTED development" so no reader mistakes them for an operator's.

`python -m speech_service.provenance.development DIR` writes `ca.pem`, `chain.pem` (signer, then
CA) and `key.pem` (set-up does, for the offline profiles); without configured files the service
makes a throwaway one in memory (`credentials.ContentCredentials`)."""

from __future__ import annotations

import argparse
import datetime
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LABEL = "UNTRUSTED development"


@dataclass(frozen=True)
class SignerFiles:
    """PEM text of a signer: its chain (signing certificate first), its private key, its root CA."""

    chain: str
    key: str
    ca: str


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, f"f5-voice-service ({LABEL})")])


def _usage(*, signs_certificates: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=not signs_certificates, content_commitment=False,
                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                         key_cert_sign=signs_certificates, crl_sign=signs_certificates,
                         encipher_only=False, decipher_only=False)


def make_signer(days: int = 3650) -> SignerFiles:
    """A CA and a C2PA signing certificate it issued (C2PA asks for a leaf with digitalSignature and
    an extended key usage such as emailProtection)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    valid = {"not_valid_before": now - datetime.timedelta(days=1),
             "not_valid_after": now + datetime.timedelta(days=days)}
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder(subject_name=_name(f"{LABEL} CA"), issuer_name=_name(f"{LABEL} CA"),
                                  public_key=ca_key.public_key(), serial_number=x509.random_serial_number(), **valid)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(_usage(signs_certificates=True), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder(subject_name=_name(f"{LABEL} signer"), issuer_name=ca.subject,
                                    public_key=key.public_key(), serial_number=x509.random_serial_number(), **valid)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_usage(signs_certificates=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))

    def pem(cert: x509.Certificate) -> str:
        return cert.public_bytes(serialization.Encoding.PEM).decode()

    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    return SignerFiles(chain=pem(leaf) + pem(ca), key=key_pem, ca=pem(ca))


def write_signer(directory: Path) -> None:
    """Writes the three files, unless `directory` already holds a signer (its CA stays trusted)."""
    if (directory / "chain.pem").is_file() and (directory / "key.pem").is_file():
        return
    directory.mkdir(parents=True, exist_ok=True)
    files = make_signer()
    (directory / "ca.pem").write_text(files.ca)
    (directory / "chain.pem").write_text(files.chain)
    key = directory / "key.pem"
    key.touch(mode=0o600)
    key.write_text(files.key)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path)
    write_signer(parser.parse_args().directory)
