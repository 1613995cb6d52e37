"""``parwatch nats-config``: a deployment's NATS server config, nkeys and TLS certificates, in one folder.

Run it once to create a deployment, and again to change it: it keeps every
key and certificate it finds and writes only what is missing or asked for.

::

    OUT/
      ca/ca.pem, ca/ca-key.pem      the deployment's CA; keep the key offline (it signs a new node's certificate)
      nats/                         for every NATS node, mounted at /etc/nats (--conf-dir)
        nats-cluster.conf           the server config: JetStream, fsync, routes, TLS on client and route ports
        auth/auth.conf              the PARWATCH account and its users (public keys and permissions), alone in
                                    its folder: a node mounts the folder (``node_files``)
        ca.pem                      the CA certificate
        <node>/server-cert.pem      each node's certificate (client and route TLS) and key,
        <node>/server-key.pem       mounted as tls/server-*.pem
      creds/                        one credential per role, for the process that has that role
        <role>.nk                   its nkey seed (secret)
        <role>.pub                  its public key (auth.conf is written from these)
        ca.pem                      the CA certificate, for clients
      k8s/nats-auth-values.yaml     the same users as Helm values for the NATS chart (config.merge.accounts)

Secrets (seeds, private keys) are written with mode 0600 in folders of mode
0700 and never printed. Roles and permissions: :mod:`parwatch.nats_access`.

Rotating a credential: ``--rotate ROLE`` makes a new key and keeps the old
one valid (``<role>.previous.*``, both in ``auth.conf``) until
``--finish-rotation ROLE``; after each step, the servers reload their config
(``nats-server --signal reload``, or SIGHUP). Adding a node: ``--node`` for
every node, old and new: the new node gets its certificate, every node's
config its route.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from parwatch.nats_access import ACCOUNT, PUBLISHER_PREFIX, fixed_roles, permissions_for
from shared.events import MAX_MESSAGE_BYTES
from shared.nats_auth import inbox_prefix

#: compose's nodes (deploy/compose.yaml); deploy/nats/nats-cluster.conf is the config for them.
DEFAULT_NODES = ("nats-1", "nats-2", "nats-3")
#: Names every node's certificate holds besides its own: a client on the node's host.
LOCAL_NAMES = ("localhost", "127.0.0.1")
CA_DAYS = 3650
CERT_DAYS = 825
#: A node certificate closer than this to its end is issued again.
RENEW_BEFORE = dt.timedelta(days=30)
PREVIOUS = ".previous"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
NODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,252}$")


class NatsConfigError(ValueError):
    """A request the generator refuses; the message says why."""


@dataclass(frozen=True)
class ServerLayout:
    """Where a node keeps its files and what it listens on."""

    conf_dir: str = "/etc/nats"
    store_dir: str = "/data"
    client_port: int = 4222
    cluster_port: int = 6222
    http_port: int = 8222
    listen: str = "0.0.0.0"  # a server in a container listens on its interfaces
    max_file_store: str = "20GB"


def render_server_conf(*, nodes: Sequence[str], layout: ServerLayout = ServerLayout()) -> str:
    """The server config of every node (its name from ``$SERVER_NAME``); a cluster with routes to every node
    when there are two or more, a single server otherwise."""
    tls_dir = f"{layout.conf_dir.rstrip('/')}/tls"
    tls = (
        f'  cert_file: "{tls_dir}/server-cert.pem"\n'
        f'  key_file: "{tls_dir}/server-key.pem"\n'
        f'  ca_file: "{tls_dir}/ca.pem"\n'
        "  timeout: 5\n"
    )
    route_tls = "".join(f"  {line}\n" for line in tls.splitlines())
    parts = [
        f"""\
# A NATS JetStream node of parwatch, as `parwatch nats-config` writes it (parwatch/nats_config.py); the
# compose cluster's (nats-1, nats-2, nats-3) is deploy/nats/nats-cluster.conf. Next to it in {layout.conf_dir}:
# auth/auth.conf (the users), tls/ca.pem, tls/server-cert.pem and tls/server-key.pem (this node's certificate).
# Each node gets its name from the environment: SERVER_NAME=nats-1 ...
server_name: $SERVER_NAME
listen: {layout.listen}:{layout.client_port}
# Monitoring (/healthz, /varz) is plain HTTP: publish it on loopback or the cluster's network only.
http: {layout.listen}:{layout.http_port}

# parwatch events are at most 64 KiB (shared/events.MAX_MESSAGE_BYTES, also every
# stream's max_msg_size); 8 KiB more leaves room for the headers.
max_payload: {MAX_MESSAGE_BYTES + 8 * 1024}

jetstream {{
  store_dir: {layout.store_dir}
  # File storage only; memory is for the consumers' state.
  max_memory_store: 256MB
  # parwatch reserves each stream's byte budget here when it creates it:
  # about 6.1 GiB in all by default (shared/streams.py, PARWATCH_STREAM_MAX_BYTES),
  # so a flood of one input stream never takes the room of alerts and dead letters.
  max_file_store: {layout.max_file_store}
  # fsync every write before it is acknowledged. With the default (a flush every
  # 2 minutes), Jepsen's analysis of NATS 2.12.1 lost acknowledged writes when
  # nodes crashed together; parwatch's inputs are official records, so it pays
  # the cost (docs/running.md).
  sync_interval: always
}}

# Clients connect over TLS only, checking this node's certificate against the deployment's CA.
tls {{
{tls}}}

# Who may connect and do what: one nkey per service, admin, operator and each publisher, in the
# account PARWATCH (parwatch/nats_access.py). A user unknown here is refused. The file is replaced (not
# rewritten) when the users change: mount its folder, which a reload (SIGHUP) then reads anew.
include ./auth/auth.conf
"""
    ]
    if len(nodes) > 1:
        routes = "\n".join(f"    nats-route://{node}:{layout.cluster_port}" for node in nodes)
        parts.append(f"""
cluster {{
  name: parwatch
  listen: {layout.listen}:{layout.cluster_port}
  routes: [
{routes}
  ]
  # Clients get the other nodes' addresses from the URL list they are given.
  no_advertise: true
  # Routes over TLS both ways: each node shows its certificate and checks the other's (same CA).
  tls {{
{route_tls}    verify: true
  }}
}}
""")
    parts.append("""
# Graceful restarts: clients are moved before a node goes away.
lame_duck_duration: 30s
lame_duck_grace_period: 10s
""")
    return "".join(parts)


@dataclass(frozen=True)
class User:
    role: str
    public_key: str
    previous: bool = False  # the old key of a rotation, valid until it is finished


def render_auth_conf(users: Sequence[User]) -> str:
    lines = [
        "# The NATS users of parwatch, written by `parwatch nats-config` from the public keys in its creds/ folder",
        "# and the roles of parwatch/nats_access.py. Do not edit: run it again (then reload the servers).",
        "accounts {",
        f"  {ACCOUNT} {{",
        "    jetstream: enabled",
        "    users: [",
    ]
    for user in users:
        perms = json.dumps(permissions_for(user.role, public_key=user.public_key), separators=(", ", ": "))
        lines.append(f"      # {user.role}{' (previous key, until the rotation is finished)' if user.previous else ''}")
        lines.append(f'      {{nkey: "{user.public_key}", permissions: {perms}}}')
    lines += ["    ]", "  }", "}", ""]
    return "\n".join(lines)


def helm_auth_values(users: Sequence[User]) -> dict[str, Any]:
    """The same users as values of the NATS Helm chart (``config.merge.accounts``)."""
    return {
        "config": {
            "merge": {
                "accounts": {
                    ACCOUNT: {
                        "jetstream": "enabled",
                        "users": [
                            {"nkey": u.public_key, "permissions": permissions_for(u.role, public_key=u.public_key)}
                            for u in users
                        ],
                    }
                }
            }
        }
    }


# -- keys -------------------------------------------------------------------------------------------------------


def new_user_seed() -> bytes:
    import nkeys

    return bytes(nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER))


def public_key_of_seed(seed: bytes) -> str:
    import nkeys

    kp = nkeys.from_seed(bytearray(seed))
    try:
        return str(kp.public_key.decode())
    finally:
        kp.wipe()


def _write(path: Path, data: bytes, *, secret: bool) -> None:
    """Write ``data`` to ``path``; a secret is never readable by others, not even for a moment."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = 0o600 if secret else 0o644
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _secret_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def valid_role(role: str) -> bool:
    if role in fixed_roles():
        return True
    return role.startswith(PUBLISHER_PREFIX) and bool(NAME.match(role[len(PUBLISHER_PREFIX) :]))


def publisher_role(name: str) -> str:
    if not NAME.match(name) or name.endswith(PREVIOUS):
        raise NatsConfigError(f"publisher name {name!r}: 1 to 64 letters, digits, '.', '_' or '-' (e.g. its source)")
    return f"{PUBLISHER_PREFIX}{name}"


@dataclass
class Credentials:
    """The ``creds/`` folder: a seed and a public key per role, and the previous ones of rotations under way."""

    folder: Path
    written: list[str] = field(default_factory=list)

    def users(self) -> list[User]:
        out = []
        for pub in sorted(self.folder.glob("*.pub")):
            role = pub.name.removesuffix(".pub")
            previous = role.endswith(PREVIOUS)
            role = role.removesuffix(PREVIOUS)
            if not valid_role(role):
                raise NatsConfigError(f"{pub}: no role {role!r} (parwatch/nats_access.py)")
            key = pub.read_text(encoding="ascii").strip()
            if not re.fullmatch(r"U[A-Z2-7]{55}", key):
                raise NatsConfigError(f"{pub} does not hold a user's public nkey")
            out.append(User(role, key, previous))
        return out

    def has(self, role: str) -> bool:
        return (self.folder / f"{role}.pub").is_file()

    def create(self, role: str) -> None:
        seed = new_user_seed()
        _write(self.folder / f"{role}.nk", seed + b"\n", secret=True)
        _write(self.folder / f"{role}.pub", public_key_of_seed(seed).encode() + b"\n", secret=False)
        self.written.append(f"{role}.nk")

    def rotate(self, role: str) -> None:
        if not self.has(role):
            raise NatsConfigError(f"--rotate {role}: no credential to rotate")
        if (self.folder / f"{role}{PREVIOUS}.pub").exists():
            raise NatsConfigError(f"--rotate {role}: a rotation is under way; --finish-rotation {role} first")
        for suffix in (".nk", ".pub"):
            current = self.folder / f"{role}{suffix}"
            if current.exists():
                current.rename(self.folder / f"{role}{PREVIOUS}{suffix}")
        self.create(role)

    def finish_rotation(self, role: str) -> None:
        found = [self.folder / f"{role}{PREVIOUS}{s}" for s in (".nk", ".pub")]
        if not any(p.exists() for p in found):
            raise NatsConfigError(f"--finish-rotation {role}: no rotation under way")
        for p in found:
            p.unlink(missing_ok=True)

    def remove(self, role: str) -> None:
        gone = [p for p in self.folder.glob(f"{role}*") if p.name.removesuffix(".nk").removesuffix(".pub")
                .removesuffix(PREVIOUS) == role]
        if not gone:
            raise NatsConfigError(f"no credential {role}")
        for p in gone:
            p.unlink()


# -- certificates -------------------------------------------------------------------------------------------------


def _names(names: Iterable[str]) -> list[Any]:
    from cryptography import x509

    out: list[Any] = []
    for name in dict.fromkeys(names):
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            out.append(x509.DNSName(name))
    return out


def _key_pem(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def create_ca(folder: Path, *, now: dt.datetime) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "parwatch"),
                      x509.NameAttribute(NameOID.COMMON_NAME, "parwatch NATS CA")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write(folder / "ca-key.pem", _key_pem(key), secret=True)
    _write(folder / "ca.pem", cert.public_bytes(serialization.Encoding.PEM), secret=False)


def _load_ca(folder: Path) -> tuple[Any, Any]:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert = x509.load_pem_x509_certificate((folder / "ca.pem").read_bytes())
    key_file = folder / "ca-key.pem"
    if not key_file.is_file():
        raise NatsConfigError(f"{key_file} is needed to issue a node certificate: bring the CA key back (it is kept "
                              "offline) and run again")
    return cert, serialization.load_pem_private_key(key_file.read_bytes(), password=None)


def node_certificate_current(folder: Path, *, names: Sequence[str], ca_cert: Any, now: dt.datetime) -> bool:
    """Whether ``folder`` holds a certificate of this CA for exactly ``names``, not about to end."""
    from cryptography import x509

    cert_file, key_file = folder / "server-cert.pem", folder / "server-key.pem"
    if not (cert_file.is_file() and key_file.is_file()):
        return False
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    if cert.issuer != ca_cert.subject or cert.not_valid_after_utc - RENEW_BEFORE < now:
        return False
    from cryptography.exceptions import InvalidSignature

    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(san) == set(_names(names))


def issue_node_certificate(folder: Path, *, node: str, names: Sequence[str], ca_folder: Path,
                           now: dt.datetime) -> None:
    """A node's certificate for client TLS and for routes (server and client use), signed by the CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca_cert, ca_key = _load_ca(ca_folder)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "parwatch"),
                                 x509.NameAttribute(NameOID.COMMON_NAME, node)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(min(now + dt.timedelta(days=CERT_DAYS), ca_cert.not_valid_after_utc))
        .add_extension(x509.SubjectAlternativeName(_names(names)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                       critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write(folder / "server-key.pem", _key_pem(key), secret=True)
    _write(folder / "server-cert.pem", cert.public_bytes(serialization.Encoding.PEM), secret=False)


# -- the whole folder ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    nodes: tuple[str, ...] = DEFAULT_NODES
    sans: tuple[str, ...] = ()
    publishers: tuple[str, ...] = ()
    rotate: tuple[str, ...] = ()
    finish_rotation: tuple[str, ...] = ()
    remove_publishers: tuple[str, ...] = ()
    layout: ServerLayout = ServerLayout()


@dataclass(frozen=True)
class Written:
    """What a run did: for the summary (no secret in it)."""

    users: tuple[User, ...]
    new_credentials: tuple[str, ...]
    certificates: tuple[str, ...]
    ca_created: bool


def write_deployment(out: Path, request: Request, *, now: dt.datetime | None = None) -> Written:
    """Create or bring up to date the deployment folder ``out`` (module docstring)."""
    now = now or dt.datetime.now(dt.UTC)
    if not request.nodes:
        raise NatsConfigError("at least one --node")
    for node in request.nodes:
        if not NODE.match(node):
            raise NatsConfigError(f"--node {node!r}: a host name")
    for role in (*request.rotate, *request.finish_rotation):
        if not valid_role(role):
            raise NatsConfigError(f"no role {role!r}: one of {', '.join(fixed_roles())} or publisher-<name>")
    out.mkdir(parents=True, exist_ok=True)
    ca_folder, nats_folder = _secret_dir(out / "ca"), out / "nats"
    creds = Credentials(_secret_dir(out / "creds"))

    for name in request.remove_publishers:
        creds.remove(publisher_role(name))
    for role in request.finish_rotation:
        creds.finish_rotation(role)
    wanted = [*fixed_roles(), *(publisher_role(n) for n in request.publishers)]
    for role in wanted:
        if not creds.has(role):
            creds.create(role)
    for role in request.rotate:
        creds.rotate(role)
    users = creds.users()

    ca_created = not (ca_folder / "ca.pem").is_file()
    if ca_created:
        create_ca(ca_folder, now=now)
    from cryptography import x509

    ca_cert = x509.load_pem_x509_certificate((ca_folder / "ca.pem").read_bytes())
    issued = []
    for node in request.nodes:
        names = [node, *request.sans, *LOCAL_NAMES]
        folder = _secret_dir(nats_folder / node)
        if not node_certificate_current(folder, names=names, ca_cert=ca_cert, now=now):
            issue_node_certificate(folder, node=node, names=names, ca_folder=ca_folder, now=now)
            issued.append(node)
    ca_pem = (ca_folder / "ca.pem").read_bytes()
    _write(nats_folder / "ca.pem", ca_pem, secret=False)
    _write(creds.folder / "ca.pem", ca_pem, secret=False)
    _write(nats_folder / "nats-cluster.conf", render_server_conf(nodes=request.nodes, layout=request.layout).encode(),
           secret=False)
    _write(nats_folder / "auth" / "auth.conf", render_auth_conf(users).encode(), secret=False)
    (nats_folder / "auth.conf").unlink(missing_ok=True)  # where an older nats-config wrote it: no stale copy
    values = "# Helm values of the NATS chart: parwatch's users (parwatch nats-config; docs/running.md).\n"
    values += yaml.safe_dump(helm_auth_values(users), sort_keys=False, width=120)
    _write(out / "k8s" / "nats-auth-values.yaml", values.encode(), secret=False)
    return Written(users=tuple(users), new_credentials=tuple(creds.written), certificates=tuple(issued),
                   ca_created=ca_created)


def summary(out: Path, written: Written) -> list[str]:
    """What to tell the operator: paths and public keys, never a seed or a private key."""
    lines = [f"NATS deployment in {out}/"]
    if written.ca_created:
        lines.append(f"  new CA: {out}/ca/ca.pem (keep ca/ca-key.pem offline: it signs a new node's certificate)")
    for node in written.certificates:
        lines.append(f"  certificate issued for node {node}: {out}/nats/{node}/server-cert.pem")
    for name in written.new_credentials:
        lines.append(f"  new credential: {out}/creds/{name} (mode 0600; give it to that process only)")
    lines.append("  users (role, public key, inbox prefix for its replies):")
    for user in written.users:
        mark = " (previous key)" if user.previous else ""
        lines.append(f"    {user.role:<24} {user.public_key}  {inbox_prefix(user.public_key)}{mark}")
    lines.append("Servers already running take new users after a config reload (nats-server --signal reload).")
    return lines


def node_files(out: Path, node: str) -> dict[str, Path]:
    """What a node needs, by its path relative to ``--conf-dir``: the files of ``out`` to put there (on a host,
    copy them). compose mounts ``auth/`` as a folder and the others one by one: a run that changes the users
    replaces ``auth.conf`` by a new file, which a bind mount of the file itself would never show (it keeps the old
    inode), so a reload would read the old users again."""
    return {
        "nats-cluster.conf": out / "nats" / "nats-cluster.conf",
        "auth/auth.conf": out / "nats" / "auth" / "auth.conf",
        "tls/ca.pem": out / "nats" / "ca.pem",
        "tls/server-cert.pem": out / "nats" / node / "server-cert.pem",
        "tls/server-key.pem": out / "nats" / node / "server-key.pem",
    }
