"""Snowflake key-pair auth from settings: an encrypted PEM key in, DER bytes and SNOWFLAKE_JWT out.

No network: ``connect_kwargs`` is what ``snowflake.connector.connect`` would receive.
- key file + passphrase: ``private_key`` is unencrypted PKCS#8 DER that loads back to the same
  RSA key, ``authenticator`` is SNOWFLAKE_JWT, and no password is sent;
- a wrong or missing passphrase, or an unreadable file: a ConfigError that names the settings
  and never contains the passphrase;
- no key file: the password is used and no key / JWT authenticator is set.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from finops_app.config import Secret, Settings
from finops_app.errors import ConfigError
from finops_app.sinks.connection import connect_kwargs, describe, private_key_der

PASSPHRASE = "s3cr3t-Passphrase-7f2c"
PASSWORD = "pw-for-the-password-path-91ab"


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def encrypted_pem(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> Path:
    path = tmp_path / "rsa_key.p8"
    path.write_bytes(
        rsa_key.private_bytes(
            encoding=serialization.Encoding.PEM,
            format=serialization.PrivateFormat.PKCS8,
            encryption_algorithm=serialization.BestAvailableEncryption(PASSPHRASE.encode()),
        )
    )
    return path


@pytest.fixture
def plain_pem(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> Path:
    path = tmp_path / "rsa_key_plain.pem"
    path.write_bytes(
        rsa_key.private_bytes(
            encoding=serialization.Encoding.PEM,
            format=serialization.PrivateFormat.TraditionalOpenSSL,
            encryption_algorithm=serialization.NoEncryption(),
        )
    )
    return path


def public_numbers(key: object) -> rsa.RSAPublicNumbers:
    assert isinstance(key, rsa.RSAPrivateKey)
    return key.public_key().public_numbers()


def test_encrypted_key_file_gives_key_pair_auth_without_password(
    encrypted_pem: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    settings = Settings(
        snowflake_private_key_file=str(encrypted_pem),
        snowflake_private_key_passphrase=Secret(PASSPHRASE),
        snowflake_password=Secret(PASSWORD),  # set, but must not be sent with a key pair
    )
    kwargs = connect_kwargs(settings)

    assert kwargs["authenticator"] == "SNOWFLAKE_JWT"
    assert "password" not in kwargs
    assert PASSWORD not in repr(kwargs)
    der = kwargs["private_key"]
    assert isinstance(der, bytes)
    assert der[:1] == b"\x30"  # an ASN.1 SEQUENCE, not PEM text
    assert PASSPHRASE.encode() not in der
    loaded = serialization.load_der_private_key(der, password=None)  # unencrypted PKCS#8
    assert public_numbers(loaded) == rsa_key.public_key().public_numbers()
    assert loaded.private_numbers() == rsa_key.private_numbers()  # type: ignore[union-attr]
    assert der == rsa_key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    assert kwargs["user"] == settings.snowflake_user and kwargs["account"] == settings.snowflake_account
    assert "key pair" in describe(settings)


def test_unencrypted_key_file_needs_no_passphrase(plain_pem: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    kwargs = connect_kwargs(Settings(snowflake_private_key_file=str(plain_pem)))
    assert kwargs["authenticator"] == "SNOWFLAKE_JWT" and "password" not in kwargs
    loaded = serialization.load_der_private_key(kwargs["private_key"], password=None)
    assert public_numbers(loaded) == rsa_key.public_key().public_numbers()


def test_key_file_from_environment(encrypted_pem: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    settings = Settings.from_env(
        {
            "FINOPS_SNOWFLAKE_PRIVATE_KEY_FILE": str(encrypted_pem),
            "FINOPS_SNOWFLAKE_PRIVATE_KEY_PASSPHRASE": PASSPHRASE,
        }
    )
    assert isinstance(settings.snowflake_private_key_passphrase, Secret)
    assert PASSPHRASE not in repr(settings)
    loaded = serialization.load_der_private_key(connect_kwargs(settings)["private_key"], password=None)
    assert public_numbers(loaded) == rsa_key.public_key().public_numbers()


@pytest.mark.parametrize("given", ["wrong-passphrase-0000", ""], ids=["wrong", "missing"])
def test_bad_passphrase_names_the_setting_and_hides_the_passphrase(encrypted_pem: Path, given: str) -> None:
    settings = Settings(
        snowflake_private_key_file=str(encrypted_pem), snowflake_private_key_passphrase=Secret(given)
    )
    with pytest.raises(ConfigError) as info:
        connect_kwargs(settings)
    message = str(info.value)
    assert "FINOPS_SNOWFLAKE_PRIVATE_KEY_PASSPHRASE" in message
    assert "FINOPS_SNOWFLAKE_PRIVATE_KEY_FILE" in message
    assert str(encrypted_pem) in message  # which file
    assert PASSPHRASE not in message
    if given:
        assert given not in message
    # nothing chained that a traceback would print either
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_passphrase_for_an_unencrypted_key_is_a_clear_error(plain_pem: Path) -> None:
    with pytest.raises(ConfigError) as info:
        private_key_der(str(plain_pem), PASSPHRASE)
    assert "FINOPS_SNOWFLAKE_PRIVATE_KEY_PASSPHRASE" in str(info.value)
    assert PASSPHRASE not in str(info.value)


def test_missing_key_file_names_the_setting(tmp_path: Path) -> None:
    missing = tmp_path / "nope.p8"
    with pytest.raises(ConfigError) as info:
        connect_kwargs(
            Settings(
                snowflake_private_key_file=str(missing), snowflake_private_key_passphrase=Secret(PASSPHRASE)
            )
        )
    assert "FINOPS_SNOWFLAKE_PRIVATE_KEY_FILE" in str(info.value) and str(missing) in str(info.value)
    assert PASSPHRASE not in str(info.value)


def test_not_a_key_file_is_a_clear_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("-----BEGIN PRIVATE KEY-----\nnot base64 at all\n-----END PRIVATE KEY-----\n")
    with pytest.raises(ConfigError, match="FINOPS_SNOWFLAKE_PRIVATE_KEY_FILE"):
        connect_kwargs(Settings(snowflake_private_key_file=str(junk)))


def test_password_path_without_a_key_file() -> None:
    settings = Settings(
        snowflake_password=Secret(PASSWORD), snowflake_private_key_passphrase=Secret(PASSPHRASE)
    )
    kwargs = connect_kwargs(settings)
    assert kwargs["password"] == PASSWORD
    assert "private_key" not in kwargs
    assert "authenticator" not in kwargs  # the connector's default (password) authenticator
    assert "password" in describe(settings) and PASSWORD not in describe(settings)
