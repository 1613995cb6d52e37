"""parwatch nats-config and the NATS permission table: files, modes, keys, certificates, and the deploy/ files.

The permissions themselves are tried on a real nats-server in
tests/integration/parwatch/test_nats_permissions.py.
"""

from __future__ import annotations

import datetime as dt
import re
import stat
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from parwatch.nats_access import SERVICES, fixed_roles, permissions_for
from parwatch.nats_config import (
    DEFAULT_NODES,
    NatsConfigError,
    Request,
    render_server_conf,
    summary,
    write_deployment,
)
from shared.settings import CommonSettings

REPO = Path(__file__).resolve().parents[3]
NOW = dt.datetime(2026, 11, 25, 2, 0, tzinfo=dt.UTC)


def test_the_deployed_cluster_config_is_what_nats_config_writes_for_compose() -> None:
    assert (REPO / "deploy" / "nats" / "nats-cluster.conf").read_text(encoding="utf-8") == render_server_conf(
        nodes=DEFAULT_NODES
    )


def test_one_node_is_a_single_server_and_several_a_cluster_with_tls_routes() -> None:
    single = render_server_conf(nodes=("nats-a",))
    assert "cluster {" not in single and "tls {" in single and "include ./auth/auth.conf" in single
    cluster = render_server_conf(nodes=("a", "b", "c", "d"))
    assert re.findall(r"nats-route://(\w+):6222", cluster) == ["a", "b", "c", "d"]
    assert "verify: true" in cluster.split("cluster {", 1)[1]


def test_secrets_are_private_and_never_in_the_summary(tmp_path: Path) -> None:
    written = write_deployment(tmp_path, Request(publishers=("motcua.tuyphong",)), now=NOW)
    roles = {u.role for u in written.users}
    assert roles == {*fixed_roles(), "publisher-motcua.tuyphong"}
    secrets = [*tmp_path.glob("creds/*.nk"), tmp_path / "ca" / "ca-key.pem", *tmp_path.glob("nats/*/server-key.pem")]
    assert len(secrets) == len(roles) + 1 + len(DEFAULT_NODES)
    for path in secrets:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    for folder in ("creds", "ca", *(f"nats/{n}" for n in DEFAULT_NODES)):
        assert stat.S_IMODE((tmp_path / folder).stat().st_mode) == 0o700, folder
    text = "\n".join(summary(tmp_path, written))
    for path in secrets:
        longest = max(path.read_text().splitlines(), key=len)  # the seed, or a line of a PEM key
        assert longest not in text, path
    auth = (tmp_path / "nats" / "auth" / "auth.conf").read_text()
    assert all(p.read_text().strip() not in auth for p in tmp_path.glob("creds/*.nk"))
    assert all(p.read_text().strip() in auth for p in tmp_path.glob("creds/*.pub"))


def test_running_again_keeps_keys_and_certificates_and_adds_a_node(tmp_path: Path) -> None:
    write_deployment(tmp_path, Request(), now=NOW)
    before = {p: p.read_bytes() for p in [*tmp_path.glob("creds/*"), *tmp_path.glob("nats/*/*.pem")]}
    written = write_deployment(tmp_path, Request(nodes=(*DEFAULT_NODES, "nats-4")), now=NOW)
    assert written.certificates == ("nats-4",) and not written.new_credentials and not written.ca_created
    assert all(p.read_bytes() == body for p, body in before.items())
    assert "nats-route://nats-4:6222" in (tmp_path / "nats" / "nats-cluster.conf").read_text()


def test_a_node_certificate_serves_clients_and_routes_for_its_names(tmp_path: Path) -> None:
    write_deployment(tmp_path, Request(nodes=("nats-1", "nats-2"), sans=("nats.example.vn", "10.0.0.7")), now=NOW)
    ca = x509.load_pem_x509_certificate((tmp_path / "ca" / "ca.pem").read_bytes())
    cert = x509.load_pem_x509_certificate((tmp_path / "nats" / "nats-2" / "server-cert.pem").read_bytes())
    cert.verify_directly_issued_by(ca)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"nats-2", "nats.example.vn", "localhost"}
    assert {str(a) for a in san.get_values_for_type(x509.IPAddress)} == {"10.0.0.7", "127.0.0.1"}
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(usage) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    # A changed name list issues the certificate again.
    again = write_deployment(tmp_path, Request(nodes=("nats-1", "nats-2"), sans=("nats.example.vn",)), now=NOW)
    assert again.certificates == ("nats-1", "nats-2")


def test_rotation_keeps_the_old_key_valid_until_finished(tmp_path: Path) -> None:
    first = write_deployment(tmp_path, Request(), now=NOW)
    old = {u.role: u.public_key for u in first.users}["scoring"]
    during = write_deployment(tmp_path, Request(rotate=("scoring",)), now=NOW)
    scoring = [u for u in during.users if u.role == "scoring"]
    assert {u.previous for u in scoring} == {True, False} and old in {u.public_key for u in scoring if u.previous}
    with pytest.raises(NatsConfigError, match="under way"):
        write_deployment(tmp_path, Request(rotate=("scoring",)), now=NOW)
    after = write_deployment(tmp_path, Request(finish_rotation=("scoring",)), now=NOW)
    assert [u.public_key for u in after.users if u.role == "scoring"] != [old]
    assert old not in (tmp_path / "nats" / "auth" / "auth.conf").read_text()


def test_a_publisher_is_removed_and_bad_names_refused(tmp_path: Path) -> None:
    write_deployment(tmp_path, Request(publishers=("kiosk-1",)), now=NOW)
    after = write_deployment(tmp_path, Request(remove_publishers=("kiosk-1",)), now=NOW)
    assert "publisher-kiosk-1" not in {u.role for u in after.users}
    for bad in ("", "a b", "x.previous", "-x"):
        with pytest.raises(NatsConfigError):
            write_deployment(tmp_path, Request(publishers=(bad,)), now=NOW)
    with pytest.raises(NatsConfigError):
        write_deployment(tmp_path, Request(rotate=("root",)), now=NOW)


def test_the_helm_values_hold_the_same_users(tmp_path: Path) -> None:
    written = write_deployment(tmp_path, Request(), now=NOW)
    values = yaml.safe_load((tmp_path / "k8s" / "nats-auth-values.yaml").read_text())
    users = values["config"]["merge"]["accounts"]["PARWATCH"]["users"]
    assert {u["nkey"] for u in users} == {u.public_key for u in written.users}


def test_the_table_is_what_each_service_registers(tmp_path: Path) -> None:
    """The consumers (subject, durable) of the permission table are those the services' create_app declare."""
    from services.deadline_monitor.app import create_app as monitor
    from services.dossier_tracker.app import create_app as tracker
    from services.notifier.app import create_app as notifier
    from services.scoring.app import create_app as scoring

    apps = {"dossier_tracker": tracker, "deadline_monitor": monitor, "scoring": scoring, "notifier": notifier}
    for svc in SERVICES:
        service, _ = apps[svc.name](CommonSettings(data_dir=tmp_path / svc.name))
        declared = {(s.subject, s.durable) for s in service.consumers.subscriptions}
        assert declared == {(c.subject, c.durable) for c in svc.consumes}, svc.name
        allowed = permissions_for(svc.name, public_key="U" + "A" * 55)
        assert {f"parwatch.deliver.{d}" for _, d in declared} <= set(allowed["subscribe"]["allow"])


def test_nothing_set_is_a_plain_connection_that_manages_the_streams(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NKEY_SEED_FILE", "TLS_CA_FILE", "TLS_CERT_FILE", "TLS_KEY_FILE", "MANAGE_STREAMS"):
        monkeypatch.delenv(f"PARWATCH_NATS_{name}", raising=False)
    common = CommonSettings()
    assert common.nats_auth().connect_options() == {} and common.nats_auth().broker_options() == {}
    assert common.manages_streams()


def test_a_credential_sets_the_private_inbox_and_leaves_the_streams_to_the_admin(tmp_path: Path) -> None:
    written = write_deployment(tmp_path, Request(), now=NOW)
    common = CommonSettings(nats_nkey_seed_file=tmp_path / "creds" / "notifier.nk",
                            nats_tls_ca_file=tmp_path / "creds" / "ca.pem")
    key = {u.role: u.public_key for u in written.users}["notifier"]
    options = common.nats_auth().connect_options()
    assert options["inbox_prefix"] == f"_INBOX_{key}" and options["tls"] is not None
    assert not common.manages_streams()
    with pytest.raises(ValueError, match="nkey"):
        CommonSettings(nats_nkey_seed_file=tmp_path / "creds" / "notifier.pub")


def test_a_client_certificate_without_the_ca_is_refused_not_ignored(tmp_path: Path) -> None:
    cert, key, ca = tmp_path / "client.pem", tmp_path / "client-key.pem", tmp_path / "ca.pem"
    for path in (cert, key, ca):
        path.write_text("-----BEGIN CERTIFICATE-----\n")  # present: what is checked is which go together
    with pytest.raises(ValueError, match="needs nats_tls_ca_file"):
        CommonSettings(nats_tls_cert_file=cert, nats_tls_key_file=key)
    with pytest.raises(ValueError, match="go together"):
        CommonSettings(nats_tls_cert_file=cert, nats_tls_ca_file=ca)


def test_compose_gives_each_service_its_own_credential_and_each_node_its_files() -> None:
    from parwatch.nats_config import node_files

    text = (REPO / "deploy" / "compose.yaml").read_text(encoding="utf-8")
    uses = re.findall(r"\$\{PARWATCH_NATS_SECRETS([^}]*)\}", text)
    assert uses and all(u.startswith(":?") for u in uses)  # no credential, no start
    services = yaml.safe_load(text)["services"]

    def credentials(name: str) -> list[str]:
        return re.findall(r"/creds/([\w.-]+\.nk):/run/secrets/nats\.nk:ro", " ".join(services[name]["volumes"]))

    for svc in SERVICES:
        name = svc.name.replace("_", "-")
        assert credentials(name) == [f"{svc.name}.nk"], name
        env = services[name]["environment"]
        assert env["PARWATCH_NATS_NKEY_SEED_FILE"] == "/run/secrets/nats.nk"
        assert env["PARWATCH_NATS_TLS_CA_FILE"] == "/run/secrets/nats-ca.pem"
        assert services[name]["depends_on"]["nats-streams"] == {"condition": "service_completed_successfully"}
    assert credentials("nats-streams") == ["admin.nk"]
    assert services["nats-streams"]["command"] == ["parwatch", "streams", "ensure"]
    for node in DEFAULT_NODES:
        mounts = " ".join(services[node]["volumes"])
        for rel, src in node_files(Path("OUT"), node).items():
            if rel == "nats-cluster.conf":
                assert "./nats/nats-cluster.conf:/etc/nats/nats-cluster.conf:ro" in mounts
            elif rel == "auth/auth.conf":  # by its folder (next test)
                assert f"/{src.parent.relative_to('OUT')}:/etc/nats/auth:ro" in mounts, node
            else:
                assert f"/{src.relative_to('OUT')}:/etc/nats/{rel}:ro" in mounts, (node, rel)


def test_compose_mounts_the_users_by_their_folder_so_a_reload_reads_a_rotation(tmp_path: Path) -> None:
    """A run that changes the users replaces auth.conf (a new file, renamed over the old): a bind mount of the file
    keeps the old inode, and a reload (SIGHUP) would read the old users. compose mounts its folder, where the
    container sees the new file; nothing else is in that folder, no secret of another node."""
    write_deployment(tmp_path, Request(), now=NOW)
    auth = tmp_path / "nats" / "auth" / "auth.conf"
    first = auth.stat().st_ino
    write_deployment(tmp_path, Request(rotate=("scoring",)), now=NOW)
    assert auth.stat().st_ino != first and "scoring (previous key" in auth.read_text()
    assert [p.name for p in auth.parent.iterdir()] == ["auth.conf"]
    assert not (tmp_path / "nats" / "auth.conf").exists()
    services = yaml.safe_load((REPO / "deploy" / "compose.yaml").read_text(encoding="utf-8"))["services"]
    for node in DEFAULT_NODES:
        targets = {target: source for source, target in
                   (m.removesuffix(":ro").rsplit(":", 1) for m in services[node]["volumes"])}
        assert targets["/etc/nats/auth"].endswith("/nats/auth"), node
        assert not [t for t in targets if t.endswith("auth.conf")], node
    assert "include ./auth/auth.conf" in (REPO / "deploy" / "nats" / "nats-cluster.conf").read_text(encoding="utf-8")


def _chart_route_hosts(values: dict[str, object], *, release: str, namespace: str) -> list[str]:
    """The hosts of the route URLs the NATS Helm chart writes for ``values`` (nats-io/k8s,
    helm/charts/nats/files/config/cluster.yaml): ``<statefulset>-<i>.<headless service>``, followed by
    ``.<namespace>.svc.<k8sClusterDomain>`` when ``routeURLs.useFQDN`` (the chart's default: false). The release
    "nats" names the StatefulSet ``nats`` and the headless Service ``nats-headless``."""
    cluster = values["config"]["cluster"]  # type: ignore[index]
    routes = {"useFQDN": False, "k8sClusterDomain": "cluster.local", **cluster.get("routeURLs", {})}
    domain = f"{release}-headless"
    if routes["useFQDN"]:
        domain = f"{domain}.{namespace}.svc.{routes['k8sClusterDomain']}"
    return [f"{release}-{i}.{domain}" for i in range(int(cluster["replicas"]))]


def _tls_handshake(*, cert: Path, key: Path, ca: Path, hostname: str) -> None:
    """A TLS handshake in memory, the client checking the server's certificate against ``ca`` and ``hostname``
    (as a node dialing a route does); ssl.SSLCertVerificationError when the name is not the certificate's."""
    import ssl

    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(ca))
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_ctx.wrap_bio(to_client, to_server, server_hostname=hostname)
    server = server_ctx.wrap_bio(to_server, to_client, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(10):
        for name, side in (("client", client), ("server", server)):
            if not done[name]:
                try:
                    side.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        if all(done.values()):
            return
    raise AssertionError(f"no TLS handshake for {hostname}")


def test_the_kubernetes_route_and_client_names_are_in_the_certificate_the_docs_issue(tmp_path: Path) -> None:
    """The certificate docs/running.md step 4 has `parwatch nats-config` issue for the Helm chart's pods serves
    every route URL the chart writes with deploy/k8s/nats-values.yaml (routes verify the peer's name) and the
    client URL of the ConfigMap."""
    import shlex

    running = (REPO / "docs" / "running.md").read_text(encoding="utf-8")
    step = running[running.index("4. **Kubernetes**"):running.index("5. **Check**")]
    command = re.search(r"parwatch nats-config (.+?)\n\s*kubectl", step, re.DOTALL)
    assert command, "step 4 runs parwatch nats-config"
    args = shlex.split(command.group(1).replace("\\\n", " "))
    nodes = [args[i + 1] for i, a in enumerate(args) if a == "--node"]
    sans = [args[i + 1] for i, a in enumerate(args) if a == "--san"]
    write_deployment(tmp_path, Request(nodes=tuple(nodes), sans=tuple(sans)), now=NOW)
    namespace = yaml.safe_load((REPO / "deploy" / "k8s" / "namespace.yaml").read_text())["metadata"]["name"]
    values = yaml.safe_load((REPO / "deploy" / "k8s" / "nats-values.yaml").read_text(encoding="utf-8"))
    assert "helm install nats nats/nats -n parwatch" in step and namespace == "parwatch"
    routes = _chart_route_hosts(values, release="nats", namespace=namespace)
    assert len(routes) == 3
    config = yaml.safe_load((REPO / "deploy" / "k8s" / "configmap.yaml").read_text(encoding="utf-8"))["data"]
    clients = [u.split("://", 1)[1].rsplit(":", 1)[0] for u in config["PARWATCH_NATS_URL"].split(",")]
    (node,) = nodes  # one certificate, every pod's (the chart mounts one Secret)
    folder = tmp_path / "nats" / node
    for host in (*routes, *clients):
        _tls_handshake(cert=folder / "server-cert.pem", key=folder / "server-key.pem",
                       ca=tmp_path / "ca" / "ca.pem", hostname=host)


def test_the_permission_table_and_the_contracts_table_agree_for_every_service() -> None:
    """What each service may publish (parwatch/nats_access.py) is what the contract says it publishes
    (parwatch/contract.PUBLISHERS, which docs/contract/asyncapi.json is written from), and what it consumes there
    is what its handlers register."""
    from parwatch.contract import PUBLISHERS, subscriptions

    def named(entry: str) -> str:
        return entry.split(" (", 1)[0]

    for svc in SERVICES:
        in_contract = {subject for subject, who in PUBLISHERS.items() if svc.name in map(named, who)}
        assert set(svc.publishes) == in_contract, svc.name
        registered = {s.subject for s in subscriptions() if s.service == svc.name}
        assert {c.subject for c in svc.consumes} == registered, svc.name
