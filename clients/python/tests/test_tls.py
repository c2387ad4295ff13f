"""TLS and mTLS from grpcio: the server started with --tls-cert/--tls-key (and
--tls-client-ca), reached with grpc.ssl_channel_credentials. Certificates are made here."""

from __future__ import annotations

import datetime
import ipaddress
import ssl

import grpc
import pytest
from conftest import fixture_json
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from google.protobuf import json_format, struct_pb2
from mlua_swarm.v1 import task_pb2 as task_pb
from mlua_swarm.v1 import task_pb2_grpc

RUN = 30  # seconds, RunTask


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class Ca:
    def __init__(self, cn: str):
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name(cn)).issuer_name(_name(cn))
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.pem = _pem(self.cert)

    def leaf(self, cn: str, server: bool) -> tuple[bytes, bytes]:
        """(cert PEM, key PEM) of a server cert for 127.0.0.1/localhost, or a client cert."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(cn)).issuer_name(self.cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False)
        )
        if server:
            builder = builder.add_extension(x509.SubjectAlternativeName([
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
                critical=False)
        return _pem(builder.sign(self.key, hashes.SHA256())), _key_pem(key)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    ca, other = Ca("mse test ca"), Ca("some other ca")
    files = {"ca.pem": ca.pem}
    for name, (cert, key) in {"server": ca.leaf("server", True),
                              "client": ca.leaf("operator-1", False),
                              "stranger": other.leaf("stranger", False)}.items():
        files[f"{name}.pem"], files[f"{name}.key"] = cert, key
    for name, data in files.items():
        (d / name).write_bytes(data)

    class Pki:
        dir = d
        ca_pem = ca.pem

        @staticmethod
        def path(name: str) -> str:
            return str(d / name)

        @staticmethod
        def read(name: str) -> bytes:
            return files[name]

    return Pki


def tls_args(pki, mtls: bool) -> list[str]:
    args = ["--tls-cert", pki.path("server.pem"), "--tls-key", pki.path("server.key")]
    return args + (["--tls-client-ca", pki.path("ca.pem")] if mtls else [])


def https_context(pki, client: str | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=pki.path("ca.pem"))
    if client:
        ctx.load_cert_chain(pki.path(f"{client}.pem"), pki.path(f"{client}.key"))
    return ctx


def credentials(pki, client: str | None = None) -> grpc.ChannelCredentials:
    if client is None:
        return grpc.ssl_channel_credentials(root_certificates=pki.ca_pem)
    return grpc.ssl_channel_credentials(root_certificates=pki.ca_pem,
                                        private_key=pki.read(f"{client}.key"),
                                        certificate_chain=pki.read(f"{client}.pem"))


def run_main(addr: str, creds: grpc.ChannelCredentials) -> task_pb.Task:
    init = struct_pb2.Struct()
    init.update({"input": "x"})
    req = task_pb.RunTaskRequest(
        blueprint=task_pb.BlueprintRef(stored=task_pb.StoredBlueprintRef(id="main")),
        init_ctx=init)
    with grpc.secure_channel(addr, creds) as ch:
        return task_pb2_grpc.TaskServiceStub(ch).RunTask(req, timeout=RUN).task


def run_task_for_remote(addr: str, creds: grpc.ChannelCredentials) -> task_pb.Task:
    init = struct_pb2.Struct()
    init.update({"input": "over tls"})
    bp = struct_pb2.Struct()
    bp.update(fixture_json("operator.json"))
    req = task_pb.RunTaskRequest(blueprint=task_pb.BlueprintRef(inline=bp), init_ctx=init)
    with grpc.secure_channel(addr, creds) as ch:
        return task_pb2_grpc.TaskServiceStub(ch).RunTask(req, timeout=RUN).task


def test_grpcio_runs_a_task_over_tls(pki, start_server):
    srv = start_server(tls_args(pki, mtls=False), tls=https_context(pki))
    t = run_main(srv.addr, credentials(pki))
    assert t.state == task_pb.TASK_STATE_COMPLETED, srv.log_tail()
    assert json_format.MessageToDict(t.final_ctx)["input"] == "x"
    # A plaintext channel to the TLS port gets nowhere.
    with grpc.insecure_channel(srv.addr) as ch:
        with pytest.raises(grpc.FutureTimeoutError):
            grpc.channel_ready_future(ch).result(timeout=2)


def test_grpcio_mtls_needs_a_cert_of_the_ca(pki, start_server):
    srv = start_server(tls_args(pki, mtls=True), tls=https_context(pki, "client"))
    t = run_main(srv.addr, credentials(pki, "client"))
    assert t.state == task_pb.TASK_STATE_COMPLETED, srv.log_tail()
    for who in (None, "stranger"):
        with pytest.raises(grpc.RpcError) as ei:
            run_main(srv.addr, credentials(pki, who))
        assert ei.value.code() == grpc.StatusCode.UNAVAILABLE, (who, ei.value)


def test_the_sdk_operator_serves_a_task_over_mtls(pki, start_server, start_operator):
    srv = start_server(tls_args(pki, mtls=True), tls=https_context(pki, "client"))
    op = start_operator(srv.addr, tls=credentials(pki, "client"))
    t = run_task_for_remote(srv.addr, credentials(pki, "client"))
    assert t.state == task_pb.TASK_STATE_COMPLETED, srv.log_tail()
    assert json_format.MessageToDict(t.final_ctx)["output"] == "OVER TLS"
    assert len(op.seen["spawn"]) == 1 and op.welcomes[0].epoch == 1
