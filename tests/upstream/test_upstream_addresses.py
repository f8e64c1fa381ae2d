"""Which addresses an HTTP/SSE upstream may have (gateway/upstream_addresses.py): cloud metadata and link-local
addresses are refused by default, loopback and private ones allowed (local MCP servers), PORTCULLIS_UPSTREAM_ADDRESSES
decides; legacy numeric IPv4 hosts are refused naming the dotted form; a host name is judged by every address it
resolves to. The rule runs in the dashboard's server form, in register_server (tests/test_commands.py) and again just
before a connection opens (open_transport), so a DNS or setting change after registration is caught too."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from django.test import override_settings

from gateway.models import Server
from gateway.upstream.connect import UpstreamError
from gateway.upstream.listing import fetch_tool_definitions
from gateway.upstream_addresses import AddressRefused, check_url, check_url_before_connecting, kind_of, literal

DEFAULT = frozenset({"public", "private", "loopback"})


@pytest.mark.parametrize(("address", "kind"), [
    ("8.8.8.8", "public"), ("2606:4700:4700::1111", "public"),
    ("10.1.2.3", "private"), ("172.20.0.5", "private"), ("192.168.1.20", "private"), ("100.64.0.1", "private"),
    ("fd12:3456::1", "private"),
    ("127.0.0.1", "loopback"), ("127.8.9.10", "loopback"), ("::1", "loopback"),
    ("169.254.1.1", "link-local"), ("fe80::1", "link-local"), ("fe80::1%eth0", "link-local"),
    ("169.254.169.254", "metadata"), ("fd00:ec2::254", "metadata"), ("169.254.170.2", "metadata"),
    ("100.100.100.200", "metadata"), ("::ffff:169.254.169.254", "metadata"), ("64:ff9b::a9fe:a9fe", "metadata"),
    ("::ffff:127.0.0.1", "loopback"),
    ("0.0.0.0", "reserved"),  # noqa: S104 - an address classified, nothing bound
    ("::", "reserved"), ("224.0.0.1", "reserved"), ("255.255.255.255", "reserved"),
    ("240.0.0.1", "reserved"), ("192.0.2.1", "reserved"), ("2001:db8::1", "reserved"),
])
def test_every_address_has_one_kind(address, kind):
    assert kind_of(ipaddress.ip_address(address)) == kind


@pytest.mark.parametrize(("host", "dotted"), [
    ("2130706433", "127.0.0.1"), ("0x7f000001", "127.0.0.1"), ("0X7F.1", "127.0.0.1"), ("0177.0.0.1", "127.0.0.1"),
    ("127.1", "127.0.0.1"), ("127.000.000.001", "127.0.0.1"), ("2852039166", "169.254.169.254"),
    ("0xa9.0xfe.0xa9.0xfe", "169.254.169.254"), ("3232235777", "192.168.1.1"),
])
def test_a_legacy_numeric_ipv4_host_is_refused_naming_the_dotted_form(host, dotted):
    assert socket.gethostbyname(host) == dotted  # what a resolver would quietly connect to
    with pytest.raises(AddressRefused, match=f"legacy form .* write it as {dotted}"):
        literal(host)


@pytest.mark.parametrize("host", ["4294967296", "256.1.1.1", "1.2.3.4.5", "08.1.1.1", "example.123"])
def test_a_numeric_host_that_is_no_address_is_refused(host):
    with pytest.raises(AddressRefused, match="neither a host name nor an IPv4 address"):
        literal(host)


@pytest.mark.parametrize(("host", "expected"), [
    ("127.0.0.1", "127.0.0.1"), ("127.0.0.1.", "127.0.0.1"), ("fd00:ec2::254", "fd00:ec2::254"),
    ("localhost", None), ("mcp-server", None), ("1e100.net", None),
])
def test_a_dotted_quad_or_ipv6_literal_is_an_address_and_a_name_is_not(host, expected):
    assert literal(host) == (None if expected is None else ipaddress.ip_address(expected))


@pytest.mark.parametrize(("url", "kind"), [
    ("http://169.254.169.254/latest/meta-data/", "metadata"),
    ("http://[fd00:ec2::254]/latest/meta-data/", "metadata"),
    ("http://metadata.google.internal/computeMetadata/v1/", "metadata"),
    ("http://METADATA.google.internal./computeMetadata/v1/", "metadata"),
    ("http://[::ffff:a9fe:a9fe]/", "metadata"),
    ("http://169.254.10.10:8080/mcp", "link-local"),
    ("http://[fe80::1%25eth0]:3001/mcp", "link-local"),
    ("http://0.0.0.0:3001/mcp", "reserved"),
])
def test_metadata_link_local_and_reserved_addresses_are_refused_by_default(url, kind):
    with pytest.raises(AddressRefused, match=f"is a {kind} address"):
        check_url(url, DEFAULT)


@pytest.mark.parametrize("url", ["http://127.0.0.1:3001/mcp", "http://[::1]:3001/mcp", "http://localhost:3001/mcp",
                                 "http://192.168.1.20/mcp", "https://8.8.8.8/mcp", "http://listener.example/mcp"])
def test_loopback_private_public_and_names_not_resolvable_yet_are_allowed_by_default(url):
    check_url(url, DEFAULT)


def test_a_name_is_judged_by_the_addresses_it_resolves_to():
    with pytest.raises(AddressRefused, match=r"localhost \(resolves to 127\.0\.0\.1\) is a loopback address.*"
                                             "add loopback to PORTCULLIS_UPSTREAM_ADDRESSES"):
        check_url("http://localhost:3001/mcp", frozenset({"public", "private"}))


def test_listing_a_kind_allows_it():
    check_url("http://169.254.169.254/", frozenset({"metadata"}))
    check_url("http://169.254.10.10/", frozenset({"link-local"}))
    with pytest.raises(AddressRefused, match="reserved"):
        check_url("http://0.0.0.0/", frozenset({"public", "private", "loopback", "link-local", "metadata"}))


def test_the_setting_decides_when_no_kinds_are_given():
    check_url("http://127.0.0.1/mcp")
    with override_settings(PORTCULLIS_UPSTREAM_ADDRESSES=["public"]), pytest.raises(AddressRefused, match="loopback"):
        check_url("http://127.0.0.1/mcp")
    with override_settings(PORTCULLIS_UPSTREAM_ADDRESSES=["public", "private", "loopback", "metadata"]):
        check_url("http://169.254.169.254/")


# --- the dashboard's server form ---

def register(client, url):
    return client.post("/servers/new/", {"slug": "remote", "name": "", "transport": "http", "command": "",
                                         "url": url, "env": "", "headers": "", "timeout_seconds": "30",
                                         "enabled": "on"})


def assert_url_error(response, message):
    body = response.content.decode()
    assert response.status_code == 200, response.status_code
    assert message in body, body[body.find('name="url"'):][:2000]
    assert body.index(message) > body.index('name="url"')
    assert not Server.objects.filter(slug="remote").exists()


@pytest.mark.parametrize(("url", "message"), [
    ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a metadata address"),
    ("http://[fd00:ec2::254]/latest/meta-data/", "fd00:ec2::254 is a metadata address"),
    ("http://metadata.google.internal/computeMetadata/v1/", "metadata.google.internal is a metadata address"),
    ("http://169.254.10.10:8080/mcp", "169.254.10.10 is a link-local address"),
], ids=["aws-metadata", "aws-metadata-ipv6", "gcp-metadata-name", "link-local"])
def test_the_server_form_refuses_a_metadata_or_link_local_url_and_says_what_to_do(staff_client, url, message):
    response = register(staff_client, url)
    assert_url_error(response, message)
    assert "Point the URL at the MCP server itself, or have an administrator add" in response.content.decode()


@pytest.mark.parametrize(("url", "dotted"), [("http://2130706433/", "127.0.0.1"),
                                             ("http://0x7f000001:3001/mcp", "127.0.0.1")])
def test_the_server_form_answers_an_integer_host_with_a_field_error_not_a_500(staff_client, url, dotted):
    assert_url_error(register(staff_client, url), f"write it as {dotted}")


def test_the_server_form_answers_a_host_django_cannot_store_with_a_field_error_not_a_500(staff_client):
    assert_url_error(register(staff_client, "http://mcp_server:3001/mcp"), "Enter a valid URL")


def test_the_server_form_registers_a_local_upstream_by_default(staff_client):
    response = register(staff_client, "http://127.0.0.1:3001/mcp")
    assert response.status_code == 302
    assert Server.objects.get(slug="remote").url == "http://127.0.0.1:3001/mcp"


@override_settings(PORTCULLIS_UPSTREAM_ADDRESSES=["public", "private"])
def test_the_server_form_refuses_loopback_when_the_setting_leaves_it_out(staff_client):
    assert_url_error(register(staff_client, "http://localhost:3001/mcp"),
                     "localhost (resolves to 127.0.0.1) is a loopback address")


# --- just before connecting ---

class Listener:
    """A TCP port on 127.0.0.1 that counts the connections made to it (and closes them)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()

    def stop(self):
        self.stopping.set()
        self.thread.join(timeout=5)
        self.sock.close()


@pytest.fixture
def listener():
    port = Listener()
    yield port
    port.stop()


def open_and_use(server: Server) -> None:
    """List the upstream's tools (what refresh_tools does): connects, initializes, lists; within 5 s."""
    server.timeout_seconds = 5
    asyncio.run(fetch_tool_definitions(server))


@pytest.mark.parametrize("transport", [Server.Transport.HTTP, Server.Transport.SSE])
def test_a_registered_name_that_now_resolves_to_a_refused_address_is_refused_before_connecting(listener, transport):
    # Registered while loopback was allowed; now the rule (or what the name resolves to) says no.
    server = Server(slug="remote", transport=transport, url=f"http://localhost:{listener.port}/mcp")
    refused = "server 'remote' was not contacted: localhost \\(resolves to 127.0.0.1\\) is a loopback address"
    with override_settings(PORTCULLIS_UPSTREAM_ADDRESSES=["public", "private"]), \
            pytest.raises(UpstreamError, match=refused):
        open_and_use(server)
    assert listener.connections == 0


def test_a_metadata_url_written_straight_into_the_database_is_refused_before_connecting():
    server = Server(slug="meta", transport=Server.Transport.HTTP, url="http://169.254.169.254/latest/meta-data/")
    with pytest.raises(UpstreamError, match="server 'meta' was not contacted: 169.254.169.254 is a metadata address"):
        open_and_use(server)


def test_a_name_that_does_not_resolve_is_refused_before_connecting():
    with pytest.raises(AddressRefused, match="cannot resolve 'listener.example'"):
        asyncio.run(check_url_before_connecting("http://listener.example/mcp", DEFAULT))


def test_an_allowed_upstream_is_still_connected_to(listener):
    server = Server(slug="remote", transport=Server.Transport.HTTP, url=f"http://127.0.0.1:{listener.port}/mcp")
    with pytest.raises(UpstreamError) as refused:  # the listener speaks no HTTP
        open_and_use(server)
    assert "not contacted" not in str(refused.value)
    assert listener.connections >= 1


# --- the setting ---

def test_an_unknown_kind_in_the_setting_stops_the_start_naming_the_variable(tmp_path):
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PORTCULLIS_UPSTREAM_ADDRESSES": "public,cloud", "PORTCULLIS_STATE_DIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, "manage.py", "check"], cwd=root, env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2
    assert "PORTCULLIS_UPSTREAM_ADDRESSES" in proc.stderr and "'cloud'" in proc.stderr
    assert "public, private, loopback, link-local, metadata" in proc.stderr
