#!/usr/bin/env python3
"""Removes what a crashed testbed run left behind (never `mn -c`).

    /usr/bin/python3 mininet/cleanup.py [--dry-run]

Every run records what it creates in /tmp/shoal-tb-<pid>/state.json
(bridges, veths, /run/netns names, processes). This script looks only at
those files, and only at runs whose process is gone: it kills the recorded
processes that still run, deletes the recorded bridges (only when they
carry the testbed's external_ids:shoal-testbed mark), veths and namespace
names, and the run directory. Nothing else on the machine is touched.
"""

import argparse
import glob
import json
import os
import shutil
import signal
import subprocess
import sys


def alive(pid):
    """True for a running process (a zombie is not)."""
    try:
        with open('/proc/%d/status' % pid) as f:
            for line in f:
                if line.startswith('State:'):
                    return 'Z' not in line.split()[1]
    except (OSError, TypeError, IndexError):
        return False
    return False


def cmdline(pid):
    try:
        with open('/proc/%d/cmdline' % pid, 'rb') as f:
            return f.read().replace(b'\0', b' ').decode(errors='replace')
    except OSError:
        return ''


def run(cmd, dry):
    print(('would run: ' if dry else 'running: ') + ' '.join(cmd))
    if not dry:
        subprocess.run(cmd, capture_output=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--dry-run', action='store_true', help='only print what would be done')
    a = ap.parse_args()
    found = 0
    for path in glob.glob('/tmp/shoal-tb-*/state.json'):
        try:
            with open(path) as f:
                st = json.load(f)
        except (OSError, ValueError) as e:
            print('skipping %s: %s' % (path, e))
            continue
        owner = st.get('pid')
        if alive(owner):
            print('%s: run %s is still going; leaving it alone' % (path, owner))
            continue
        found += 1
        print('%s: run %s is gone; cleaning up after it' % (path, owner))
        for pid in st.get('pids', []):
            line = cmdline(pid)
            # Only processes that are still ours: shoal binaries, Mininet's
            # host shells (they hold the namespaces), iperf3, ping.
            if alive(pid) and any(k in line for k in ('shoal-', 'mininet:t', 'iperf3',
                                                      'ping')):
                print('killing %d: %s' % (pid, line.strip()))
                if not a.dry_run:
                    os.kill(pid, signal.SIGKILL)
        for name in st.get('netns', []):
            if os.path.exists('/run/netns/%s' % name):
                run(['ip', 'netns', 'delete', name], a.dry_run)
        for br in st.get('bridges', []):
            r = subprocess.run(['ovs-vsctl', 'get', 'bridge', br, 'external_ids:shoal-testbed'],
                               capture_output=True, text=True)
            if r.returncode == 0 and r.stdout.strip():
                run(['ovs-vsctl', '--if-exists', 'del-br', br], a.dry_run)
            elif r.returncode == 0:
                print('bridge %s is not marked as the testbed\'s; leaving it' % br)
        for link in st.get('links', []):
            if os.path.exists('/sys/class/net/%s' % link):
                run(['ip', 'link', 'delete', link], a.dry_run)
        # Veths Mininet made for the recorded bridges' links.
        for br in st.get('bridges', []):
            for intf in glob.glob('/sys/class/net/%s-eth*' % br) + \
                    glob.glob('/sys/class/net/%s-up' % br):
                run(['ip', 'link', 'delete', os.path.basename(intf)], a.dry_run)
        for name in st.get('netns', []):
            for suffix in ('-p', '-vf'):
                if os.path.exists('/sys/class/net/%s%s' % (name, suffix)):
                    run(['ip', 'link', 'delete', name + suffix], a.dry_run)
        if not a.dry_run:
            shutil.rmtree(os.path.dirname(path), ignore_errors=True)
    if not found:
        print('nothing to clean up')
    return 0


if __name__ == '__main__':
    sys.exit(main())
