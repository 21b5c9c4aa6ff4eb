"""Unit tests of the testbed's sizing and verdict logic (no root, no OVS):
the calibrated link rate, the parsers behind the datapath backlog and the
iperf3 totals, and the VMPatrol verdict."""

import argparse
import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, 'experiments'))

import calibrate  # noqa: E402
import testbed  # noqa: E402
import vmpatrol  # noqa: E402

SS = """Netid Recv-Q Send-Q Local Address:Port  Peer Address:PortProcess
p_raw 0      0      [0]:*   *     users:(("ovs-vswitchd",pid=3759,fd=74)) skmem:(r0,rb212992,t2304,tb212992,f0,w0,o0,bl0,d0)
p_raw 4160   0      *:tq1-r *     users:(("ovs-vswitchd",pid=3759,fd=40)) skmem:(r4160,rb212992,t0,tb212992,f0,w0,o176,bl0,d3)
p_raw 6912   0      *:tq2-l *     users:(("ovs-vswitchd",pid=3759,fd=44)) skmem:(r6912,rb212992,t0,tb212992,f0,w0,o176,bl0,d0)
p_raw 9999   0      *:eth0  *     users:(("dhclient",pid=37590,fd=4)) skmem:(r9999,rb212992,t0,tb212992,f0,w0,o0,bl0,d7)
"""


class Calibration(unittest.TestCase):
    def cal(self, mbps):
        return {'hops': 7, 'throughput_mbps': mbps, 'mbps_hops': 7 * mbps, 'ovs_cpu_cores': 1.0,
                'ovs_thread_cpu': 1.0, 'load1_before': 0.5, 'mtu': 9000}

    def test_link_rate_is_a_share_of_the_chain_rounded_down_and_bounded(self):
        self.assertEqual(calibrate.choose_link_mbps(self.cal(137.9)), 55.0)  # 0.4 x 137.9
        self.assertEqual(calibrate.choose_link_mbps(self.cal(360.0)), 100.0)  # capped
        self.assertEqual(calibrate.choose_link_mbps(self.cal(12.0)), 10.0)    # floor
        self.assertEqual(calibrate.choose_link_mbps(self.cal(137.9), budget=0.5), 65.0)

    def test_describe_names_the_measurement_and_the_choice(self):
        text = calibrate.describe(self.cal(137.9), 55.0)
        self.assertIn('137.9 Mbit/s of TCP across 7 userspace bridges', text)
        self.assertIn('links at 55 Mbit/s', text)

    def test_chain_refuses_odd_hop_counts(self):
        with self.assertRaises(calibrate.CalibrationError):
            calibrate.Chain(0)
        with self.assertRaises(calibrate.CalibrationError):
            calibrate.Chain(17)

    def test_backlog_counts_only_the_datapath_sockets(self):
        self.assertEqual(calibrate.parse_ss_packet(SS, 3759), (4160 + 6912, 3))
        self.assertEqual(calibrate.parse_ss_packet(SS, 1), (0, 0))
        self.assertEqual(calibrate.parse_ss_packet('', 3759), (0, 0))


class IperfTotals(unittest.TestCase):
    def totals(self, line, proto):
        tb = testbed.Testbed.__new__(testbed.Testbed)
        tb.flow_totals = {}
        import threading
        tb.data_lock = threading.Lock()
        m = testbed.IPERF_LINE.search(line)
        tb.record_total({'label': 'f', 'proto': proto}, m, line)
        return tb.flow_totals['f']

    def test_udp_receiver_totals_come_from_datagrams(self):
        t = self.totals('[  5]   0.00-8.00   sec  9.54 MBytes  10.0 Mbits/sec  0.040 ms  '
                        '3/7143 (0.042%)  receiver', 'udp')
        self.assertEqual(t['datagrams_sent'], 7143)
        self.assertEqual(t['datagrams_lost'], 3)
        self.assertEqual(t['sent_bytes'], 7143 * 1400)
        self.assertEqual(t['received_bytes'], 7140 * 1400)
        self.assertAlmostEqual(t['mbps'], 7140 * 1400 * 8 / 8.0 / 1e6, places=3)

    def test_tcp_receiver_totals_come_from_bytes(self):
        t = self.totals('[  5]   0.00-10.04  sec  71.5 MBytes  59.7 Mbits/sec                  '
                        'receiver', 'tcp')
        self.assertEqual(t['received_bytes'], int(71.5 * 2 ** 20))
        self.assertNotIn('sent_bytes', t)


class HopRates(unittest.TestCase):
    def test_busiest_port_per_bridge_and_drops_in_the_window(self):
        import threading
        tb = testbed.Testbed.__new__(testbed.Testbed)
        tb.data_lock = threading.Lock()
        row = lambda t, b, p, tx, d: {'t_s': t, 'bridge': b, 'port': p,  # noqa: E731
                                      'tx_bytes_per_s': tx, 'rx_bytes_per_s': 0,
                                      'tx_dropped': d, 'rx_dropped': 0}
        tb.rows = {'ports': [row(1, 'th1', 1, 12.5e6, 0), row(1, 'th1', 2, 1e3, 0),
                             row(2, 'th1', 1, 11.5e6, 4), row(2, 'th1', 2, 1e3, 0),
                             row(3, 'th1', 1, 99e6, 9),   # outside the window
                             row(2, 'tt1', 3, None, None)]}
        h = tb.hop_rates(['th1', 'tt1'], 0, 2)
        self.assertEqual(h['th1'], {'port': 1, 'tx_mbps': 96.0, 'dropped': 4})
        self.assertEqual(h['tt1'], {'port': None, 'tx_mbps': None, 'dropped': 0})


class MatrixMedian(unittest.TestCase):
    def test_only_samples_whose_window_lies_inside_the_flow_count(self):
        import threading
        tb = testbed.Testbed.__new__(testbed.Testbed)
        tb.data_lock = threading.Lock()
        tb.sc = {'controller': {'window_intervals': 3, 'interval_s': 1.0},
                 'traffic': [{'src': 'a', 'dst': 'b', 'start_s': 3, 'stop_s': 11}]}
        ramp = {4: 3e5, 5: 6e5, 6: 9e5, 7: 1.2e6, 8: 1.29e6, 9: 1.28e6, 10: 1.3e6, 11: 1.29e6,
                12: 9e5, 13: 5e5, 14: 2e5}
        tb.rows = {'lambda': [{'t_s': t, 'src': 'a', 'dst': 'b', 'bytes_per_s': v}
                              for t, v in ramp.items()]}
        self.assertEqual(tb.matrix_rate_median('a', 'b'), 1.29e6)   # samples 8..11
        self.assertEqual(tb.matrix_rate_median('b', 'a'), 0.0)


class Verdict(unittest.TestCase):
    def args(self):
        return argparse.Namespace(link_mbps=100.0, competitor_mbps=60.0)

    def run_stats(self, before=59.5, backlog=12.0, drops=0, drops_max=None):
        return (None, None, None, None, {
            'competitor_mbps_before': before,
            'cpu_during': {'ovs_rx_backlog_kb_mean': backlog, 'ovs_rx_drops_mean': drops,
                           'ovs_rx_drops_max': drops if drops_max is None else drops_max,
                           'ovs_thread_mean': 0.95, 'machine_busy_mean': 0.7}})

    def test_a_clean_run_is_conclusive(self):
        s = {'migration_mbps_without': 45.0, 'competitor_mbps_during_without': 45.0}
        runs = {'with': self.run_stats(), 'without': self.run_stats()}
        self.assertEqual(vmpatrol.verdict(self.args(), s, runs), [])
        self.assertEqual(s['link_fill_without'], 0.9)

    def test_a_datapath_that_fell_behind_makes_it_inconclusive(self):
        s = {'migration_mbps_without': 45.0, 'competitor_mbps_during_without': 45.0}
        runs = {'with': self.run_stats(backlog=68.0), 'without': self.run_stats(drops=4)}
        r = vmpatrol.verdict(self.args(), s, runs)
        self.assertEqual(len(r), 2, r)
        self.assertIn('with reservation: the datapath fell behind: on average 68 KiB', r[0])
        self.assertIn('without reservation', r[1])
        self.assertIn('overflowed', r[1])

    def test_a_burst_of_drops_leaves_it_conclusive(self):
        # Seen in a busy suite run: 7 drops in one second, 0.2 a second on
        # average over the migration, every acceptance point met.
        s = {'migration_mbps_without': 45.0, 'competitor_mbps_during_without': 45.0}
        runs = {'with': self.run_stats(drops=0.2, drops_max=7), 'without': self.run_stats()}
        self.assertEqual(vmpatrol.verdict(self.args(), s, runs), [])

    def test_a_short_path_or_an_unfilled_link_makes_it_inconclusive(self):
        s = {'migration_mbps_without': 25.4, 'competitor_mbps_during_without': 34.2}
        runs = {'with': self.run_stats(before=40.0), 'without': self.run_stats()}
        r = vmpatrol.verdict(self.args(), s, runs)
        self.assertEqual(len(r), 2, r)
        self.assertIn('the competitor reached 40.0 Mbit/s of its 60 Mbit/s', r[0])
        self.assertIn('filled only 60% of the 100 Mbit/s bottleneck link', r[1])


if __name__ == '__main__':
    unittest.main()
