"""Unit tests of the testbed's pure parts (no root, no network):

    /usr/bin/python3 -m unittest discover -s mininet -p 'test_*.py'

Run by tests/e2e_mininet.rs (`testbed_unit_tests`) as part of the suite.
"""

import json
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import dc  # noqa: E402
import scenario as scn  # noqa: E402
import testbed  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def base(**kw):
    s = {'name': 't', 'duration_s': 20,
         'topology': {'pods': 2, 'hosts_per_tor': 1, 'vms_per_host': 2}}
    s.update(kw)
    return s


class TopologyTest(unittest.TestCase):
    def test_names_dpids_and_wiring(self):
        p = dc.topology_params({'cores': 2, 'aggs_per_pod': 2, 'pods': 2, 'tors_per_pod': 2,
                                'hosts_per_tor': 2, 'vms_per_host': 2})
        d = dc.DataCenter(p, 'x')
        self.assertEqual(d.cores, ['tc1', 'tc2'])
        self.assertEqual(d.aggs, ['ta1', 'ta2', 'ta3', 'ta4'])
        self.assertEqual(len(d.hyps), 8)
        self.assertEqual(d.dpids['tc2'], 0x102)
        self.assertEqual(d.dpids['ta3'], 0x203)
        self.assertEqual(d.dpids['tt4'], 0x304)
        self.assertEqual(d.dpids['th8'], 0x408)
        links = d.switch_links()
        # every agg to every core, every ToR to both aggs of its pod, one uplink per hypervisor
        self.assertEqual(len(links), 4 * 2 + 4 * 2 + 8)
        self.assertIn(('ta3', 'tt3', 'agg'), links)
        self.assertNotIn(('ta1', 'tt3', 'agg'), links)
        self.assertEqual(d.n_directed_links(), 2 * len(links))
        self.assertEqual(d.vms_of['th2'], ['tv3', 'tv4'])
        self.assertEqual(d.level('th1', 'th1'), 0)
        self.assertEqual(d.level('th1', 'th2'), 1)   # same ToR
        self.assertEqual(d.level('th1', 'th3'), 2)   # same pod
        self.assertEqual(d.level('th1', 'th5'), 3)   # across the core
        every_name = d.all_switches() + list(d.vm_info) + [x['name'] for x in
                                                          d.dom0_info.values()]
        self.assertTrue(all(n.startswith('t') for n in every_name))
        self.assertEqual(len(set(every_name)), len(every_name))
        for v in d.vm_info.values():
            for k in ('iface', 'port', 'vf_iface', 'vf_port'):
                self.assertLessEqual(len(v[k]), 15, v[k])   # IFNAMSIZ

    def test_fat_tree_k4(self):
        p = dc.topology_params({'fat_tree_k': 4, 'vms_per_host': 1})
        self.assertEqual((p['cores'], p['pods'], p['aggs_per_pod'], p['tors_per_pod'],
                          p['hosts_per_tor']), (4, 4, 2, 2, 2))
        d = dc.DataCenter(p, 'x')
        self.assertEqual(len(d.cores + d.aggs + d.tors), 20)
        self.assertEqual(len(d.hyps), 16)
        links = d.switch_links()
        kinds = [k for _, _, k in links]
        self.assertEqual((kinds.count('core'), kinds.count('agg'), kinds.count('host')),
                         (16, 16, 16))
        # agg j of every pod to cores 2j+1, 2j+2 (1-based names): each core
        # reaches each pod once.
        self.assertEqual(d.core_uplinks('ta1'), ['tc1', 'tc2'])
        self.assertEqual(d.core_uplinks('ta2'), ['tc3', 'tc4'])
        self.assertEqual(d.core_uplinks('ta7'), ['tc1', 'tc2'])
        for c in d.cores:
            pods = sorted(d.pod_of[a] for cc, a, k in links if k == 'core' and cc == c)
            self.assertEqual(pods, [0, 1, 2, 3])
        # every edge switch to both aggs of its pod, two hypervisors each
        self.assertIn(('ta3', 'tt4', 'agg'), links)
        self.assertNotIn(('ta3', 'tt5', 'agg'), links)
        self.assertEqual([h for h in d.hyps if d.tor_of[h] == 'tt5'], ['th9', 'th10'])
        self.assertEqual(d.level('th1', 'th9'), 3)
        sim = scn.to_simulator(scn.load({'name': 'f', 'topology': {'fat_tree_k': 4,
                                                                   'vms_per_host': 1}}))
        ups = {s['id']: s['uplinks'] for s in sim['topology']['switches']}
        self.assertEqual(ups['ta4'], ['tc3', 'tc4'])
        # the fat tree fixes its shape; the tiered layout is unchanged
        with self.assertRaises(dc.TopologyError):
            dc.topology_params({'fat_tree_k': 4, 'cores': 1})
        with self.assertRaises(dc.TopologyError):
            dc.topology_params({'fat_tree_k': 3})
        with self.assertRaises(dc.TopologyError):
            dc.topology_params({'fat_tree_k': 6})
        self.assertEqual(dc.topology_params({})['fat_tree_k'], 0)

    def test_limits(self):
        for bad in ({'link_mbps': 200}, {'pods': 0}, {'vf_per_host': 3, 'vms_per_host': 2},
                    {'cores': 1.5}, {'mgmt_net': '10.99.1'}, {'bogus': 1},
                    {'pods': 8, 'tors_per_pod': 4, 'hosts_per_tor': 2}):
            with self.assertRaises(dc.TopologyError, msg=str(bad)):
                dc.topology_params(bad)


class ScenarioTest(unittest.TestCase):
    def test_shipped_scenarios_load(self):
        d = os.path.join(HERE, 'scenarios')
        names = sorted(f for f in os.listdir(d) if f.endswith('.json'))
        self.assertIn('smoke.json', names)
        for f in names:
            scn.load(os.path.join(d, f))

    def test_defaults(self):
        sc = scn.load(base())
        self.assertEqual(sorted(sc['vms']), ['tv1', 'tv2', 'tv3', 'tv4'])
        self.assertEqual(sc['vms']['tv1']['memory_mb'], 64)
        self.assertEqual(sc['controller']['interval_s'], 2.0)
        self.assertEqual(sc['hostd']['interval_s'], 2.0)

    def errors(self, raw):
        with self.assertRaises(scn.ScenarioError) as cm:
            scn.load(raw)
        return str(cm.exception)

    def test_errors_name_the_field(self):
        self.assertIn('unknown field', self.errors(base(bogus=1)))
        self.assertIn('traffic[0].dst', self.errors(base(traffic=[
            {'src': 'tv1', 'dst': 'tv9', 'mbps': 1}])))
        self.assertIn('traffic[1].port', self.errors(base(traffic=[
            {'src': 'tv1', 'dst': 'tv3', 'mbps': 1, 'port': 6000},
            {'src': 'tv2', 'dst': 'tv3', 'mbps': 1, 'port': 6000}])))
        self.assertIn('traffic[0].mbps', self.errors(base(traffic=[
            {'src': 'tv1', 'dst': 'tv3', 'mbps': 500}])))
        self.assertIn('vms.tv7', self.errors(base(vms={'tv7': {}})))
        self.assertIn('points[1].t', self.errors(base(vms={'tv1': {'series': {'points': [
            {'t': 5, 'cpu': 0.1}, {'t': 5, 'cpu': 0.2}]}}})))
        self.assertIn('cpu', self.errors(base(vms={'tv1': {'series': {'points': [
            {'t': 0, 'cpu': 1.5}]}}})))
        self.assertIn('actions[0].to', self.errors(base(actions=[
            {'do': 'migrate', 'vm': 'tv1', 'to': 'th9', 'deadline_s': 10}])))
        self.assertIn('actions[0].do', self.errors(base(actions=[{'do': 'reboot'}])))
        self.assertIn('controller.config', self.errors(base(controller={
            'config': {'execute': {'x': None}}})))
        self.assertIn('topology.link_mbps', self.errors(base(topology={'link_mbps': 0})))

    def test_series_like_hostd(self):
        s = {'interpolation': 'linear', 'points': [{'t': 0, 'cpu': 0.0}, {'t': 10, 'cpu': 1.0}]}
        self.assertAlmostEqual(scn.series_at(s, 2.5, 'cpu'), 0.25)
        self.assertEqual(scn.series_at(s, -1, 'cpu'), 0.0)
        self.assertEqual(scn.series_at(s, 99, 'cpu'), 1.0)
        s['interpolation'] = 'hold'
        self.assertEqual(scn.series_at(s, 9.9, 'cpu'), 0.0)
        s['after_end'] = 'loop'
        s['interpolation'] = 'linear'
        self.assertAlmostEqual(scn.series_at(s, 12.5, 'cpu'), 0.25)
        self.assertEqual(scn.series_at(s, 1, 'dirty_mbps'), 0.0)


class ModelTest(unittest.TestCase):
    def test_prediction(self):
        p = scn.vmpatrol_predict(96, 0, 8)
        self.assertEqual((p['rounds'], p['traffic_mb'], p['time_s']), (1, 96, 12))
        self.assertIsNone(scn.vmpatrol_predict(96, 4, 4))
        p = scn.vmpatrol_predict(100, 10, 20)
        # n = min(ceil(log_0.5(0.3*20/100)), ceil(log_0.5(1*10/(100*10)))) = min(5, 7)
        self.assertEqual(p['rounds'], 5)
        self.assertAlmostEqual(p['traffic_mb'], 100 * (1 - 0.5 ** 6) / 0.5)
        self.assertAlmostEqual(p['downtime_s'], 5 * 0.5 ** 5)

    def test_min_bandwidth_meets_the_deadline_tightly(self):
        p = scn.vmpatrol_min_bandwidth(96, 1, 36, 12)
        self.assertLessEqual(p['time_s'], 36)
        worse = scn.vmpatrol_predict(96, 1, p['bandwidth_mbps'] * 0.99)
        self.assertGreater(worse['time_s'], 36)
        self.assertIsNone(scn.vmpatrol_min_bandwidth(96, 1, 2, 12))


class TomlTest(unittest.TestCase):
    def test_merge_and_render(self):
        base_ = {'db': '/x.db', 'topology': {'lldp_interval_s': 1.0},
                 'execute': {'reservation': 'meter'}}
        m = scn.merge(base_, {'execute': {'reservation': 'queue'},
                              'policy': {'name': 'sandpiper', 'hotspot': {'k': 2}}})
        self.assertEqual(base_['execute']['reservation'], 'meter', 'base untouched')
        t = scn.to_toml(m)
        self.assertIn('db = "/x.db"', t)
        self.assertIn('[execute]\nreservation = "queue"', t)
        self.assertIn('[policy]\nname = "sandpiper"', t)
        self.assertIn('[policy.hotspot]\nk = 2', t)
        self.assertLess(t.index('db ='), t.index('[topology]'))
        with self.assertRaises(ValueError):
            scn.to_toml({'a': None})
        with self.assertRaises(ValueError):
            scn.to_toml({'a b': 1})


class SimulatorScenarioTest(unittest.TestCase):
    def test_same_tree_series_and_traffic(self):
        sc = scn.load(base(
            duration_s=20, controller={'interval_s': 5},
            topology={'pods': 2, 'hosts_per_tor': 1, 'vms_per_host': 2, 'vf_per_host': 1,
                      'host_cores': 2, 'link_mbps': 50},
            vms={'tv1': {'vcpus': 2, 'series': {'interpolation': 'hold', 'points': [
                {'t': 0, 'cpu': 0.1, 'dirty_mbps': 1}, {'t': 10, 'cpu': 0.9, 'dirty_mbps': 3}]}}},
            traffic=[{'src': 'tv1', 'dst': 'tv3', 'mbps': 8, 'start_s': 5, 'stop_s': 12.5}]))
        sim = scn.to_simulator(sc)
        self.assertEqual(sim['rounds'], 4)
        self.assertEqual(sim['interval_s'], 5)
        sw = {s['id']: s for s in sim['topology']['switches']}
        self.assertEqual(sw['tc1']['level'], 'core')
        self.assertEqual(sw['ta2']['uplinks'], ['tc1'])
        self.assertEqual(sw['tt2']['uplinks'], ['ta2'])
        self.assertEqual(sw['tt1']['uplink_bps'], 50e6)
        h = {x['id']: x for x in sim['hosts']}
        self.assertEqual(h['th2']['tor'], 'tt2')
        self.assertEqual(h['th1']['cores'], 2)
        self.assertEqual(h['th1']['vf_count'], 1)
        v = {x['name']: x for x in sim['vms']}
        self.assertEqual(v['tv1']['host'], 'th1')
        self.assertEqual(v['tv3']['host'], 'th2')
        self.assertEqual(v['tv1']['dirty_rate_mbps'], 3)
        # rounds evaluate at t = 5, 10, 15, 20; cpu in cores (x vcpus)
        self.assertEqual(v['tv1']['cpu'], [0.2, 1.8, 1.8, 1.8])
        tr = sim['traffic']
        self.assertEqual(len(tr), 1)
        self.assertEqual((tr[0]['src'], tr[0]['dst']), ('tv1', 'tv3'))
        # 1 MB/s while on: round (5,10] full, (10,15] half, others none
        self.assertEqual(tr[0]['bytes_per_s'], [0.0, 1e6, 0.5e6, 0.0])
        json.dumps(sim)


def grouped(**kw):
    """Two pods, two hosts each, two VMs per host (tv1..tv8, th1..th4)."""
    s = base(topology={'pods': 2, 'hosts_per_tor': 2, 'vms_per_host': 2})
    s.update(kw)
    return s


class GroupsAndClientsTest(unittest.TestCase):
    def errors(self, raw):
        with self.assertRaises(scn.ScenarioError) as cm:
            scn.load(raw)
        return str(cm.exception)

    def test_environments_and_domains_validated(self):
        sc = scn.load(grouped(
            environments={'tenant1': {'members': ['tv1', 'tv2', 'tv3'], 'head': 'tv1'},
                          'tenant2': {'members': ['tv5']}},
            domains={'d0': ['th1', 'th2'], 'd1': ['th3', 'th4']}))
        self.assertEqual(sc['environments']['tenant1'],
                         {'members': ['tv1', 'tv2', 'tv3'], 'head': 'tv1'})
        self.assertIsNone(sc['environments']['tenant2']['head'])
        self.assertEqual(sc['domains']['d1'], ['th3', 'th4'])
        self.assertEqual(scn.load(grouped())['environments'], {})
        self.assertIn('environments.e.head', self.errors(grouped(
            environments={'e': {'members': ['tv1', 'tv2'], 'head': 'tv3'}})))
        self.assertIn('environments.b.members[0]: tv2 is already in environment a',
                      self.errors(grouped(environments={'a': {'members': ['tv1', 'tv2']},
                                                        'b': {'members': ['tv2']}})))
        self.assertIn('environments.e.members[1]: unknown VM',
                      self.errors(grouped(environments={'e': {'members': ['tv1', 'tv99']}})))
        self.assertIn('environments.e.members', self.errors(grouped(
            environments={'e': {'members': []}})))
        self.assertIn('environments.e: unknown field', self.errors(grouped(
            environments={'e': {'members': ['tv1'], 'gateway': 'tv1'}})))
        self.assertIn('domains.d1[0]: th2 is already in domain d0', self.errors(grouped(
            domains={'d0': ['th1', 'th2'], 'd1': ['th2']})))
        self.assertIn('domains.d0[1]: unknown hypervisor', self.errors(grouped(
            domains={'d0': ['th1', 'th9']})))
        self.assertIn('domains: must be an object', self.errors(grouped(domains=['th1'])))

    def test_groups_in_the_controller_config_and_simulator(self):
        sc = scn.load(grouped(
            environments={'tenant1': {'members': ['tv1', 'tv2', 'tv3'], 'head': 'tv1'},
                          'solo': {'members': ['tv8']}},
            domains={'d0': ['th1', 'th2'], 'd1': ['th3', 'th4']}))
        g = scn.controller_groups(sc)
        self.assertEqual(g, {'domains': {'d0': ['th1', 'th2'], 'd1': ['th3', 'th4']},
                             'environments': [
                                 {'name': 'tenant1', 'members': ['tv1', 'tv2', 'tv3'],
                                  'head': 'tv1'},
                                 {'name': 'solo', 'members': ['tv8']}]})
        t = scn.to_toml({'groups': g})
        self.assertIn('[groups]\nenvironments = [{ name = "tenant1", members = '
                      '["tv1", "tv2", "tv3"], head = "tv1" }, { name = "solo", '
                      'members = ["tv8"] }]', t)
        self.assertIn('[groups.domains]\nd0 = ["th1", "th2"]\nd1 = ["th3", "th4"]', t)
        self.assertEqual(scn.controller_groups(scn.load(grouped())), {})
        sim = scn.to_simulator(sc)
        h = {x['id']: x for x in sim['hosts']}
        self.assertEqual([h[x].get('domain') for x in ('th1', 'th2', 'th3', 'th4')],
                         ['d0', 'd0', 'd1', 'd1'])
        v = {x['name']: x for x in sim['vms']}
        self.assertEqual(v['tv1']['environment'], 'tenant1')
        self.assertTrue(v['tv1']['head'])
        self.assertNotIn('head', v['tv2'])
        self.assertEqual(v['tv3']['environment'], 'tenant1')
        self.assertNotIn('environment', v['tv4'])
        self.assertEqual(v['tv8']['environment'], 'solo')
        # VMs carry their address (S-CORE's round-robin token goes in IPv4 order)
        self.assertEqual(v['tv3']['ip'], '10.0.1.3')
        self.assertNotIn('externals', sim)

    def test_clients(self):
        sc = scn.load(grouped(
            clients={'c1': {'switch': 'tc1'}, 'web': {'switch': 'tt2'}},
            traffic=[{'src': 'c1', 'dst': 'tv5', 'mbps': 4},
                     {'src': 'tv2', 'dst': 'web', 'mbps': 2}]))
        self.assertEqual(sc['clients']['c1'], {'switch': 'tc1', 'ip': '10.0.3.1',
                                               'mac': '02:74:63:00:00:01', 'node': 'tx1'})
        self.assertEqual(sc['clients']['web']['ip'], '10.0.3.2')
        sim = scn.to_simulator(sc)
        self.assertEqual(sim['externals'], [
            {'name': 'c1', 'switch': 'tc1', 'ip': '10.0.3.1'},
            {'name': 'web', 'switch': 'tt2', 'ip': '10.0.3.2'}])
        self.assertEqual(sorted((t['src'], t['dst']) for t in sim['traffic']),
                         [('c1', 'tv5'), ('tv2', 'web')])
        d = dc.DataCenter(sc['topology'], 'x')
        d.clients = sc['clients']
        self.assertEqual(d.ip_of('web'), '10.0.3.2')
        self.assertEqual(d.ip_of('tv3'), '10.0.1.3')
        self.assertIn('both clients', self.errors(grouped(
            clients={'c1': {'switch': 'tc1'}, 'c2': {'switch': 'ta1'}},
            traffic=[{'src': 'c1', 'dst': 'c2', 'mbps': 1}])))
        self.assertIn('clients.c1.switch', self.errors(grouped(
            clients={'c1': {'switch': 'th1'}})))
        self.assertIn('clients.c1.switch', self.errors(grouped(
            clients={'c1': {'switch': 'tc9'}})))
        self.assertIn('clients.tv1: the name is taken', self.errors(grouped(
            clients={'tv1': {'switch': 'tc1'}})))
        self.assertIn('clients.C-1', self.errors(grouped(clients={'C-1': {'switch': 'tc1'}})))
        self.assertIn('clients.c1: unknown field', self.errors(grouped(
            clients={'c1': {'switch': 'tc1', 'ip': '1.2.3.4'}})))
        self.assertIn('traffic[0].src: unknown VM or client', self.errors(grouped(
            traffic=[{'src': 'c7', 'dst': 'tv1', 'mbps': 1}])))


class HelpersTest(unittest.TestCase):
    def test_iperf_and_ping_lines(self):
        m = testbed.IPERF_LINE.search(
            '[  5]   3.00-4.00   sec  7.15 MBytes  60.0 Mbits/sec                  ')
        self.assertEqual((m.group(5), m.group(6)), ('60.0', 'M'))
        m = testbed.IPERF_LINE.search(
            '[  5]   1.00-2.00   sec   122 KBytes   999 Kbits/sec  0.020 ms  0/89 (0%)')
        self.assertAlmostEqual(float(m.group(5)) * testbed.UNIT[m.group(6)], 0.999)
        m = testbed.PING_LINE.search(
            '[1700000000.123456] 64 bytes from 10.0.1.4: icmp_seq=12 ttl=64 time=7.31 ms')
        self.assertEqual((m.group(1), m.group(2), m.group(3)), ('1700000000.123456', '12',
                                                                '7.31'))

    def test_dpids_and_assignments(self):
        self.assertEqual(testbed._dpid_hex('0000000000000401'), '0000000000000401')
        self.assertEqual(testbed._dpid_hex('0x401'), '0000000000000401')
        self.assertEqual(testbed._dpid_hex(0x401), '0000000000000401')
        a = [{'host': 'th1', 'vf_count': 1, 'attached': ['tv2'], 'last_changes': []},
             {'host': 'th2', 'vf_count': 1, 'attached': [], 'last_changes': []}]
        self.assertEqual(testbed._assigned_vms(a), {'tv2'})
        self.assertIsNone(testbed._assigned_vms(None))


if __name__ == '__main__':
    unittest.main()
