"""Certificates and keys for the local control plane.

One self-signed CA signs the apiserver's serving certificate and a client
certificate per component. Client identities follow the Kubernetes bootstrap
RBAC conventions (``CN`` is the user, ``O`` the group), so RBAC authorization
stays on and every component gets only what its bootstrap role grants.
"""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALIDITY = datetime.timedelta(days=365)


@dataclasses.dataclass(frozen=True)
class ClientIdentity:
    """Who a client certificate says it is."""

    file_stem: str
    """Files are written as ``<file_stem>.crt`` / ``<file_stem>.key``."""
    user: str
    """The certificate's common name: the Kubernetes user name."""
    groups: tuple[str, ...] = ()
    """Organizations: the Kubernetes groups."""


ADMIN = ClientIdentity("admin", "fleetshift-admin", ("system:masters",))
CONTROLLER_MANAGER = ClientIdentity("controller-manager", "system:kube-controller-manager")
SCHEDULER = ClientIdentity("scheduler", "system:kube-scheduler")
KWOK = ClientIdentity("kwok", "fleetshift-kwok", ("system:masters",))
CLIENTS = (ADMIN, CONTROLLER_MANAGER, SCHEDULER, KWOK)
# The real node's identities (``up --node real``).
KUBE_PROXY = ClientIdentity("kube-proxy", "system:kube-proxy")
APISERVER_KUBELET_CLIENT = ClientIdentity(
    "apiserver-kubelet-client", "kube-apiserver-kubelet-client", ("system:masters",)
)
COREDNS = ClientIdentity("coredns", "system:fleetshift-coredns")
METRICS_SERVER = ClientIdentity("metrics-server", "system:fleetshift-metrics-server")
FRONT_PROXY_CLIENT = ClientIdentity("front-proxy-client", "front-proxy-client")
"""What the apiserver's aggregator presents to aggregated APIs (metrics-server), which then
trust its ``X-Remote-User``/``X-Remote-Group`` headers (``--requestheader-allowed-names``)."""


def node_client(node_name: str) -> ClientIdentity:
    """The kubelet's identity, as the Node authorizer expects it."""
    return ClientIdentity("kubelet", f"system:node:{node_name}", ("system:nodes",))


@dataclasses.dataclass(frozen=True)
class Pki:
    """Paths of everything :func:`write_pki` produced."""

    folder: Path

    @property
    def ca_cert(self) -> Path:
        return self.folder / "ca.crt"

    @property
    def serving_cert(self) -> Path:
        return self.folder / "apiserver.crt"

    @property
    def serving_key(self) -> Path:
        return self.folder / "apiserver.key"

    @property
    def service_account_key(self) -> Path:
        return self.folder / "sa.key"

    @property
    def service_account_pub(self) -> Path:
        return self.folder / "sa.pub"

    def client_cert(self, identity: ClientIdentity) -> Path:
        return self.folder / f"{identity.file_stem}.crt"

    def client_key(self, identity: ClientIdentity) -> Path:
        return self.folder / f"{identity.file_stem}.key"


def _name(common_name: str, organizations: tuple[str, ...] = ()) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organizations]
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _sign(
    subject: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    is_ca: bool = False,
    usages: tuple[x509.ObjectIdentifier, ...] = (),
    alt_names: tuple[x509.GeneralName, ...] = (),
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=not is_ca,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=is_ca,
                crl_sign=is_ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
    if alt_names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(list(alt_names)), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


def write_pki(
    folder: Path,
    *,
    clients: tuple[ClientIdentity, ...] = CLIENTS,
    ip_addresses: tuple[str, ...] = ("127.0.0.1",),
) -> Pki:
    """Create the CA, serving, client and service-account keys in ``folder``.

    ``ip_addresses`` go in the serving certificate (the real node adds its node IP and the
    ``kubernetes`` Service's ClusterIP).
    """
    folder.mkdir(parents=True, exist_ok=True)
    pki = Pki(folder)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("fleetshift-local-ca")
    ca_cert = _sign(ca_name, ca_key.public_key(), ca_name, ca_key, is_ca=True)
    _write_key(folder / "ca.key", ca_key)
    _write_cert(pki.ca_cert, ca_cert)

    serving_key = ec.generate_private_key(ec.SECP256R1())
    serving_cert = _sign(
        _name("kube-apiserver"),
        serving_key.public_key(),
        ca_name,
        ca_key,
        usages=(ExtendedKeyUsageOID.SERVER_AUTH,),
        alt_names=(
            x509.DNSName("localhost"),
            x509.DNSName("kubernetes"),
            x509.DNSName("kubernetes.default"),
            x509.DNSName("kubernetes.default.svc"),
            x509.DNSName("kubernetes.default.svc.cluster.local"),
            *(x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses),
        ),
    )
    _write_key(pki.serving_key, serving_key)
    _write_cert(pki.serving_cert, serving_cert)

    for identity in clients:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _sign(
            _name(identity.user, identity.groups),
            key.public_key(),
            ca_name,
            ca_key,
            usages=(ExtendedKeyUsageOID.CLIENT_AUTH,),
        )
        _write_key(pki.client_key(identity), key)
        _write_cert(pki.client_cert(identity), cert)

    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write_key(pki.service_account_key, sa_key)
    pki.service_account_pub.write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return pki


def write_serving_cert(
    pki: Pki, stem: str, dns_names: tuple[str, ...], ip_addresses: tuple[str, ...] = ()
) -> tuple[Path, Path]:
    """A serving certificate signed by ``pki``'s CA (e.g. for an aggregated API server, whose
    APIService trusts the CA); returns the certificate and key paths."""
    ca_key = serialization.load_pem_private_key((pki.folder / "ca.key").read_bytes(), None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise TypeError(f"{pki.folder / 'ca.key'} is not the EC key write_pki makes")
    ca_name = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes()).subject
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _sign(
        _name(dns_names[0]),
        key.public_key(),
        ca_name,
        ca_key,
        usages=(ExtendedKeyUsageOID.SERVER_AUTH,),
        alt_names=(
            *(x509.DNSName(name) for name in dns_names),
            *(x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses),
        ),
    )
    cert_path, key_path = pki.folder / f"{stem}.crt", pki.folder / f"{stem}.key"
    _write_key(key_path, key)
    _write_cert(cert_path, cert)
    return cert_path, key_path
