"""Shared helpers for Shoal's Mininet scripts (Python 3, Mininet 2.3 API).

Everything here follows docs/testbed.md: Open vSwitch on the
userspace datapath (``datapath='user'``), OpenFlow 1.3 only, the controller
reached over TCP, TX checksum offload off on every veth end (TCP through a
userspace bridge fails otherwise), link rates with ``bw=`` only.
"""

import json
import os
import secrets
import ssl
import subprocess
import time
import urllib.error
import urllib.request

from mininet.node import OVSSwitch, RemoteController

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class UserOVS(OVSSwitch):
    """An OVS bridge on the userspace datapath speaking OpenFlow 1.3."""

    def __init__(self, name, **params):
        params.setdefault('datapath', 'user')
        params.setdefault('protocols', 'OpenFlow13')
        params.setdefault('failMode', 'secure')
        super().__init__(name, **params)


class ShoalController(RemoteController):
    """The Shoal controller the testbed started (and whose port it waited
    for) before building the network."""

    def checkListening(self):
        """Mininet's check (``echo A | telnet -e A IP PORT`` in a shell
        whose output it reads without a timeout) once hung a test run for
        minutes; the testbed has already seen the port listening."""
        return


def remote_controller(port=6653, protocol='tcp'):
    """The controller target of the switches: ``tcp:`` or ``ssl:``
    (OpenFlow over TLS with the certificates of ``Pki.ovs_set_ssl``)."""
    return ShoalController('c0', ip='127.0.0.1', port=port, protocol=protocol)


# https:// for every API call once set_tls(ca) was called: the controller's
# and the host daemons' certificates are checked against that CA only.
SCHEME = 'http'
SSL_CTX = None


def set_tls(ca_file):
    """Talk HTTPS (verified against ``ca_file``) to every API; None: HTTP."""
    global SCHEME, SSL_CTX
    if ca_file:
        SCHEME, SSL_CTX = 'https', ssl.create_default_context(cafile=ca_file)
    else:
        SCHEME, SSL_CTX = 'http', None


def _run_quiet(args, cwd):
    r = subprocess.run(args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True)
    if r.returncode != 0:
        raise RuntimeError('%s: %s' % (' '.join(args), r.stdout.strip()[-500:]))


class Pki:
    """The certificates of a TLS test bed, in ``directory``:

    - OpenFlow: Open vSwitch's own PKI (``ovs-pki``): ``ctl-*`` for the
      controller, ``sc-*`` for the switches, and the two CAs;
    - HTTPS: a CA and one server certificate whose subject alternative names
      are ``ips`` (the controller's and every host daemon's API address).
    """

    def __init__(self, directory, ips):
        self.dir = directory
        os.makedirs(directory, exist_ok=True)
        pki = os.path.join(directory, 'pki')
        log = os.path.join(directory, 'ovs-pki.log')
        _run_quiet(['ovs-pki', 'init', '--force', '--dir=%s' % pki, '-l', log], directory)
        for name, kind in (('ctl', 'controller'), ('sc', 'switch')):
            _run_quiet(['ovs-pki', 'req+sign', name, kind, '--force', '--dir=%s' % pki,
                        '-l', log], directory)
        ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes']
        _run_quiet(['openssl', 'req', '-x509'] + ec +
                   ['-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2',
                    '-subj', '/CN=shoal-testbed-ca',
                    '-addext', 'basicConstraints=critical,CA:TRUE',
                    '-addext', 'keyUsage=critical,keyCertSign,cRLSign'], directory)
        _run_quiet(['openssl', 'req'] + ec +
                   ['-keyout', 'server.key', '-out', 'server.csr',
                    '-subj', '/CN=shoal-testbed'], directory)
        with open(os.path.join(directory, 'ext.cnf'), 'w') as f:
            f.write('subjectAltName=%s\nbasicConstraints=CA:FALSE\n'
                    'extendedKeyUsage=serverAuth,clientAuth\n'
                    % ','.join('IP:%s' % ip for ip in sorted(set(ips))))
        _run_quiet(['openssl', 'x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem',
                    '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'server.pem',
                    '-days', '2', '-extfile', 'ext.cnf'], directory)
        for k in ('server.key', 'ca.key', 'ctl-privkey.pem', 'sc-privkey.pem'):
            os.chmod(os.path.join(directory, k), 0o600)
        self.ca = os.path.join(directory, 'ca.pem')
        self.cert = os.path.join(directory, 'server.pem')
        self.key = os.path.join(directory, 'server.key')
        self.previous_ssl = None

    def controller_tables(self):
        """The controller's ``[tls]`` table: HTTPS API, https:// host
        daemons, OpenFlow over TLS requiring a switch certificate."""
        d = self.dir
        return {'tls': {'api_cert_file': self.cert, 'api_key_file': self.key,
                        'hostd_ca_file': self.ca,
                        'openflow_cert_file': os.path.join(d, 'ctl-cert.pem'),
                        'openflow_key_file': os.path.join(d, 'ctl-privkey.pem'),
                        'openflow_ca_file': os.path.join(d, 'pki', 'switchca', 'cacert.pem')}}

    def hostd_lines(self):
        """A host daemon's TLS lines: HTTPS API, the CA of its peers."""
        return ['tls_cert_file = "%s"' % self.cert, 'tls_key_file = "%s"' % self.key,
                'ca_file = "%s"' % self.ca]

    def ovs_set_ssl(self):
        """Gives Open vSwitch the switch certificate (``ovs-vsctl set-ssl``),
        remembering what was set before for ``ovs_restore``."""
        r = subprocess.run(['ovs-vsctl', 'get-ssl'], stdout=subprocess.PIPE, text=True)
        self.previous_ssl = r.stdout if r.returncode == 0 else ''
        d = self.dir
        subprocess.run(['ovs-vsctl', 'set-ssl', os.path.join(d, 'sc-privkey.pem'),
                        os.path.join(d, 'sc-cert.pem'),
                        os.path.join(d, 'pki', 'controllerca', 'cacert.pem')], check=True)

    def ovs_restore(self):
        """Puts Open vSwitch's SSL settings back as they were."""
        if self.previous_ssl is None:
            return
        prev = {}
        for line in self.previous_ssl.splitlines():
            k, _, v = line.partition(':')
            prev[k.strip()] = v.strip()
        if prev.get('Private key') and prev.get('Certificate') and prev.get('CA Certificate'):
            subprocess.run(['ovs-vsctl', 'set-ssl', prev['Private key'], prev['Certificate'],
                            prev['CA Certificate']], check=False)
        else:
            subprocess.run(['ovs-vsctl', 'del-ssl'], check=False)
        self.previous_ssl = None


def offload_off(net):
    """TX checksum offload off on both ends of every link."""
    for link in net.links:
        for intf in (link.intf1, link.intf2):
            intf.node.cmd('ethtool -K %s tx off >/dev/null 2>&1' % intf.name)


def set_mtu(net, mtu):
    """The same MTU on both ends of every link (the ends inside hosts too,
    so that their TCP segments fill it)."""
    for link in net.links:
        for intf in (link.intf1, link.intf2):
            intf.node.cmd('ip link set dev %s mtu %d' % (intf.name, mtu))


def binary(name, bin_dir=None):
    """Path of a Shoal binary: ``bin_dir``, else ``$SHOAL_BIN_DIR``, else the
    newer of ``target/release`` and ``target/debug``."""
    for d in (bin_dir, os.environ.get('SHOAL_BIN_DIR')):
        if d:
            p = os.path.join(d, name)
            if os.path.exists(p):
                return p
            raise SystemExit('%s not found in %s' % (name, d))
    found = [os.path.join(ROOT, 'target', prof, name) for prof in ('release', 'debug')]
    found = [p for p in found if os.path.exists(p)]
    if not found:
        raise SystemExit('%s is not built: run scripts/demo.sh (or cargo build '
                         '--release -p shoal-controller -p shoal-hostd) first' % name)
    return max(found, key=os.path.getmtime)


def controller_binary(bin_dir=None):
    return binary('shoal-controller', bin_dir)


# The operator token api_get and http present when no token is given (set by
# operator_auth). Every controller route but /healthz needs one.
OPERATOR_TOKEN = None


def write_secret(path, token):
    """Writes ``token`` to ``path`` readable by its owner only (the
    controller and hostd refuse token files open to group or others)."""
    if os.path.exists(path):
        os.remove(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, 'w') as f:
        f.write(token + '\n')


def new_token():
    """A fresh random token."""
    return secrets.token_hex(24)


def operator_auth(directory, hosts=()):
    """Writes the credentials of a test bed into ``directory``: a read+write
    operator token (remembered for api_get/http), the controller's token
    for host daemons (``controller.token``) and one token per host in
    ``hosts/<id>.token``. Returns the controller's ``auth`` and ``hostd``
    tables (dicts, for scenario.to_toml)."""
    global OPERATOR_TOKEN
    OPERATOR_TOKEN = new_token()
    op = os.path.join(directory, 'operator.token')
    write_secret(op, OPERATOR_TOKEN)
    write_secret(os.path.join(directory, 'controller.token'), new_token())
    hdir = os.path.join(directory, 'hosts')
    os.makedirs(hdir, exist_ok=True)
    for h in hosts:
        write_secret(os.path.join(hdir, '%s.token' % h), new_token())
    return {'auth': {'host_tokens_dir': hdir,
                     'operators': [{'name': 'testbed', 'role': 'write', 'token_file': op}]},
            'hostd': {'token_file': os.path.join(directory, 'controller.token')}}


def read_token(path):
    with open(path) as f:
        return f.readline().strip()


def start_controller(config_text, api, log_path, of_port=6653, started=None):
    """Starts shoal-controller with a TOML config; returns the Popen.
    ``started``: a list the Popen is appended to as soon as the process
    runs, before its API answers, so that the caller can stop it when that
    wait fails or is interrupted."""
    cfg = log_path + '.toml'
    with open(cfg, 'w') as f:
        f.write(config_text)
    log = open(log_path, 'w')
    proc = subprocess.Popen(
        [controller_binary(), 'run', '--config', cfg,
         '--of-listen', '127.0.0.1:%d' % of_port, '--api-listen', api,
         '--db', os.path.join(os.path.dirname(log_path), 'shoal.db')],
        stdout=log, stderr=log)
    if started is not None:
        started.append(proc)
    wait_for(lambda: api_get(api, '/healthz'), 20, 'the controller API')
    return proc


def http(api, method, path, body=None, token=None, timeout=5):
    """One HTTP call to ``api`` (``host:port``). Returns ``(status, document)``:
    the JSON body parsed (or the raw text when it is not JSON); status 0 and
    the error text when the server cannot be reached."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request('%s://%s%s' % (SCHEME, api, path), data=data, method=method)
    if data is not None:
        req.add_header('Content-Type', 'application/json')
    token = token or OPERATOR_TOKEN
    if token:
        req.add_header('Authorization', 'Bearer %s' % token)
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=SSL_CTX) as r:
            code, raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        code, raw = e.code, e.read()
    except (urllib.error.URLError, OSError) as e:
        return 0, str(e)
    text = raw.decode(errors='replace')
    try:
        return code, json.loads(text) if text else None
    except ValueError:
        return code, text


def api_get(api, path):
    """GET a JSON document from the controller, or None."""
    req = urllib.request.Request('%s://%s%s' % (SCHEME, api, path))
    if OPERATOR_TOKEN:
        req.add_header('Authorization', 'Bearer %s' % OPERATOR_TOKEN)
    try:
        with urllib.request.urlopen(req, timeout=5, context=SSL_CTX) as r:
            return json.loads(r.read().decode())
    except (urllib.error.URLError, OSError, ValueError):
        return None


def wait_for(fn, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(0.5)
    raise SystemExit('timed out after %ss waiting for %s' % (timeout, what))


def wait_links(api, n_directed, timeout=30):
    """Waits until the controller knows exactly n_directed LLDP links."""
    def ok():
        links = api_get(api, '/api/v1/links')
        return links is not None and len(links) == n_directed
    wait_for(ok, timeout, '%d directed links' % n_directed)


def dpid(n):
    """A Mininet dpid string (16 hex digits)."""
    return '%016x' % n
