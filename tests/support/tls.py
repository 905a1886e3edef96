"""A throwaway CA, a broker certificate for 127.0.0.1/localhost, and a private Kafka broker that
only lets clients in over TLS + SASL/SCRAM-SHA-512.

The broker is the dev stack's (``dev/stack.py``: same jars, same ``kafka_config`` base, same
``start_kafka``/``down`` bookkeeping), with three listeners on loopback:

- ``PLAINTEXT`` (inter-broker only; nothing in the tests uses it),
- ``CONTROLLER`` (KRaft, plaintext),
- ``SASL_SSL`` (the client listener: PEM certificate, SCRAM-SHA-512 users created at format time).

SCRAM users in KRaft live in the metadata log, so they are written by ``StorageTool format
--add-scram`` before the first start; ``start_kafka`` then sees ``meta.properties`` and skips its
own (SCRAM-less) format.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import ipaddress
import subprocess
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import stack as devstack  # dev/stack.py (tests/conftest.py puts dev/ on sys.path)
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from finops_app import kafka
from finops_app.config import Secret, Settings

SCRAM_MECHANISM = "SCRAM-SHA-512"


@dataclass(frozen=True)
class CertFiles:
    ca: Path  # CA certificate (clients trust this)
    cert: Path  # broker certificate (SAN: IP 127.0.0.1, DNS localhost)
    key: Path  # broker private key, unencrypted PKCS#8
    keystore: Path  # key + certificate chain in one PEM file (ssl.keystore.type=PEM)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_certs(directory: Path, days: int = 2) -> CertFiles:
    """A self-signed CA and a broker certificate it signed, as PEM files in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    until = now + dt.timedelta(days=days)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("finops test CA"))
        .issuer_name(_name("finops test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(until)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    pem = serialization.Encoding.PEM
    ca_pem = ca_cert.public_bytes(pem)
    cert_pem = cert.public_bytes(pem)
    key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    files = CertFiles(
        ca=directory / "ca.pem",
        cert=directory / "broker.pem",
        key=directory / "broker.key",
        keystore=directory / "broker-keystore.pem",
    )
    files.ca.write_bytes(ca_pem)
    files.cert.write_bytes(cert_pem)
    files.key.write_bytes(key_pem)
    files.keystore.write_bytes(key_pem + cert_pem + ca_pem)
    for path in (files.key, files.keystore):
        path.chmod(0o600)
    return files


@dataclass(frozen=True)
class SecureBroker:
    var: Path
    ports: devstack.Ports
    sasl_port: int
    certs: CertFiles
    users: Mapping[str, str]

    @property
    def broker_url(self) -> str:
        return f"kafka://127.0.0.1:{self.sasl_port}"

    def client_settings(self, username: str, password: str) -> dict[str, object]:
        """Settings keyword arguments for a SASL_SSL client of this broker."""
        return {
            "broker_url": self.broker_url,
            "kafka_security_protocol": "SASL_SSL",
            "kafka_ssl_cafile": str(self.certs.ca),
            "kafka_sasl_mechanism": SCRAM_MECHANISM,
            "kafka_sasl_username": username,
            "kafka_sasl_password": Secret(password),
        }

    def log_text(self) -> str:
        try:
            return (self.var / "kafka.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""


def secure_config(ports: devstack.Ports, sasl_port: int, certs: CertFiles) -> str:
    """Lines appended to dev/stack's server.properties (a later key wins in Java properties)."""
    listener = "listener.name.sasl_ssl"
    return "\n".join(
        [
            f"listeners=PLAINTEXT://127.0.0.1:{ports.kafka},CONTROLLER://127.0.0.1:{ports.controller},"
            f"SASL_SSL://127.0.0.1:{sasl_port}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{ports.kafka},SASL_SSL://127.0.0.1:{sasl_port}",
            f"sasl.enabled.mechanisms={SCRAM_MECHANISM}",
            f"{listener}.sasl.enabled.mechanisms={SCRAM_MECHANISM}",
            f"{listener}.{SCRAM_MECHANISM.lower()}.sasl.jaas.config="
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            f"{listener}.ssl.keystore.type=PEM",
            f"{listener}.ssl.keystore.location={certs.keystore}",
            f"{listener}.ssl.truststore.type=PEM",
            f"{listener}.ssl.truststore.location={certs.ca}",
            f"{listener}.ssl.client.auth=none",
        ]
    )


def _cluster_id() -> str:
    """A random cluster id as Kafka's ``Uuid.randomUuid`` makes one: never starting with "-", which
    the tool's argument parser takes for an option (1 draw in 64 failed every test of the module)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def format_storage(var: Path, ports: devstack.Ports, extra: str, users: Mapping[str, str]) -> None:
    """``StorageTool format`` with the SCRAM users, as dev/stack's start_kafka would (plus --add-scram)."""
    devstack.fetch_kafka_jars()
    props = devstack.kafka_config(var, ports, extra)
    cmd = [
        devstack._java(),
        "-cp",
        f"{devstack.JARS}/*",
        "kafka.tools.StorageTool",
        "format",
        "-t",
        _cluster_id(),
        "-c",
        str(props),
    ]
    for name, password in users.items():
        cmd += ["--add-scram", f"{SCRAM_MECHANISM}=[name={name},password={password}]"]
    done = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if done.returncode != 0:
        # the command line holds the passwords: show only the tool's output
        raise devstack.StackError(f"kafka StorageTool format failed:\n{done.stdout}\n{done.stderr}")


def sasl_ready(broker: SecureBroker, username: str) -> None:
    """A real metadata request over SASL_SSL with ``username``'s credentials."""
    import logging

    from aiokafka.admin import AIOKafkaAdminClient

    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    settings = Settings(**broker.client_settings(username, broker.users[username]))  # type: ignore[arg-type]

    async def probe() -> None:
        admin = AIOKafkaAdminClient(request_timeout_ms=3000, **kafka.client_kwargs(settings))
        await admin.start()
        try:
            await admin.list_topics()
        finally:
            await admin.close()

    asyncio.run(probe())


def start_secure_broker(
    var: Path, ports: devstack.Ports, sasl_port: int, users: Mapping[str, str], timeout: float = 90.0
) -> SecureBroker:
    """Format (with the SCRAM users) and start the broker; returns once SASL_SSL answers."""
    var.mkdir(parents=True, exist_ok=True)
    certs = make_certs(var / "tls")
    extra = secure_config(ports, sasl_port, certs)
    broker = SecureBroker(var=var, ports=ports, sasl_port=sasl_port, certs=certs, users=dict(users))
    for port in (ports.kafka, ports.controller, sasl_port):
        if not devstack.port_free(port):
            raise devstack.StackError(f"port {port} for the secured test broker is taken")
    format_storage(var, ports, extra, users)
    devstack.start_kafka(var, ports, extra_config=extra, heap="512m")  # skips its format: already done
    try:
        devstack._wait("kafka", var, lambda: sasl_ready(broker, next(iter(users))), timeout)
    except BaseException:
        devstack.down(var, ("kafka",))
        raise
    return broker


def stop_secure_broker(broker: SecureBroker) -> None:
    """Stops exactly the PID that start_kafka recorded in ``var/kafka.pid``."""
    devstack.down(broker.var, ("kafka",))
