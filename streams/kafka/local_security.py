"""What `streams broker start --secure` adds to the local broker: a SASL_SSL listener, its
certificates (made with the JDK's keytool) and one user's credentials, all kept in the
broker's home, and the client.properties file that connects to it.

Owns those files and the broker settings for that listener; must not start processes other
than keytool, nor print a secret (the password lives only in files readable by the owner).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from streams.errors import BrokerStartFailed

USER = "streams"
_VALID_DAYS = "3650"
_SAN = "SAN=dns:localhost,ip:127.0.0.1"


@dataclass(frozen=True, slots=True)
class SecureFiles:
    """The secure listener's files under `<broker home>/secure`."""

    directory: Path

    @property
    def ca_pem(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def keystore(self) -> Path:
        return self.directory / "broker.p12"

    @property
    def secret_file(self) -> Path:
        return self.directory / "secret"

    @property
    def client_properties(self) -> Path:
        return self.directory / "client.properties"

    def secret(self) -> str:
        return self.secret_file.read_text(encoding="utf-8").strip()


def ensure_secure_files(directory: Path, keytool: str = "keytool") -> SecureFiles:
    """Make the CA, the broker's PKCS#12 keystore (signed by the CA, for localhost and
    127.0.0.1) and a random secret (the keystore's and the user's password), once; later
    starts reuse them. BrokerStartFailed (one line) when keytool is missing or fails."""
    files = SecureFiles(directory)
    if files.ca_pem.exists() and files.keystore.exists() and files.secret_file.exists():
        return files
    found = shutil.which(keytool)
    if found is None:
        raise BrokerStartFailed(
            "keytool (the JDK's) is needed for --secure: install a full JDK 17+"
        )
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True, mode=0o700)
    secret = secrets.token_urlsafe(24)
    _write_private(files.secret_file, secret + "\n")
    ca_store = directory / "ca.p12"
    csr, signed = directory / "broker.csr", directory / "broker.crt"
    store = ["-storetype", "PKCS12", "-storepass:file", str(files.secret_file)]
    steps = [
        ["-genkeypair", "-alias", "ca", "-keyalg", "RSA", "-keysize", "2048",
         "-dname", "CN=streams local CA", "-ext", "bc:c", "-validity", _VALID_DAYS,
         "-keystore", str(ca_store), *store],
        ["-genkeypair", "-alias", "broker", "-keyalg", "RSA", "-keysize", "2048",
         "-dname", "CN=localhost", "-validity", _VALID_DAYS, "-keystore",
         str(files.keystore), *store],
        ["-certreq", "-alias", "broker", "-keystore", str(files.keystore), "-file", str(csr),
         *store],
        ["-gencert", "-alias", "ca", "-keystore", str(ca_store), "-infile", str(csr),
         "-outfile", str(signed), "-ext", _SAN, "-validity", _VALID_DAYS, "-rfc", *store],
        ["-exportcert", "-alias", "ca", "-keystore", str(ca_store), "-rfc",
         "-file", str(files.ca_pem), *store],
        ["-importcert", "-alias", "ca", "-file", str(files.ca_pem), "-keystore",
         str(files.keystore), "-noprompt", *store],
        ["-importcert", "-alias", "broker", "-file", str(signed), "-keystore",
         str(files.keystore), "-noprompt", *store],
    ]  # fmt: skip
    for step in steps:
        done = subprocess.run(
            [found, *step], capture_output=True, text=True, timeout=120, check=False
        )
        if done.returncode != 0:
            detail = (done.stderr or done.stdout).strip().splitlines()[-1:]
            raise BrokerStartFailed(f"keytool {step[0]} failed: {' '.join(detail)}")
    for leftover in (csr, signed):
        leftover.unlink(missing_ok=True)
    return files


def secure_listener_settings(files: SecureFiles) -> dict[str, str]:
    """The broker settings of the SASL_SSL listener (added beside PLAINTEXT, which stays
    the broker's own inter-broker listener): PLAIN, one user, the keystore."""
    secret = files.secret()
    jaas = (
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
        f'username="{USER}" password="{secret}" user_{USER}="{secret}";'
    )
    prefix = "listener.name.sasl_ssl."
    return {
        "sasl.enabled.mechanisms": "PLAIN",
        f"{prefix}plain.sasl.jaas.config": jaas,
        f"{prefix}ssl.keystore.location": str(files.keystore),
        f"{prefix}ssl.keystore.type": "PKCS12",
        f"{prefix}ssl.keystore.password": secret,
        f"{prefix}ssl.key.password": secret,
    }


def write_client_properties(files: SecureFiles, bootstrap: str) -> Path:
    """client.properties for the secure listener (owner-only: it holds the password)."""
    text = (
        "# Written by `streams broker start --secure`: the local broker's SASL_SSL listener.\n"
        f"bootstrap.servers={bootstrap}\n"
        "security.protocol=SASL_SSL\n"
        "sasl.mechanism=PLAIN\n"
        f"sasl.username={USER}\n"
        f"sasl.password={files.secret()}\n"
        f"ssl.ca.location={files.ca_pem}\n"
    )
    _write_private(files.client_properties, text)
    return files.client_properties


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
