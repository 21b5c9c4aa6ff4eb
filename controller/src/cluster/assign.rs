//! Which node masters which switch: balanced and sticky (pure).
//!
//! With `S` switches and `N` live nodes, every node masters `⌊S/N⌋` or
//! `⌈S/N⌉` switches when every switch is connected to every node (the
//! deployment the cluster expects: `ovs-vsctl set-controller BR tcp:A
//! tcp:B tcp:C`). A switch keeps its master while that node is alive,
//! connected to it and within its share, so a node's death moves only its
//! own switches and a node's return moves only as many as it takes to
//! balance again. A switch connected only to some nodes goes to one of
//! those (balance is then best effort).

use std::collections::{BTreeMap, BTreeSet};

/// The assignment of every switch connected to at least one live node.
///
/// - `current`: datapath id → master node now (nodes may be dead).
/// - `connected`: datapath id → nodes that have it connected.
/// - `live`: the nodes with a valid lease.
pub fn assign(
    current: &BTreeMap<u64, String>,
    connected: &BTreeMap<u64, BTreeSet<String>>,
    live: &BTreeSet<String>,
) -> BTreeMap<u64, String> {
    let eligible: BTreeMap<u64, Vec<&String>> = connected
        .iter()
        .map(|(&d, ns)| (d, ns.iter().filter(|n| live.contains(*n)).collect()))
        .filter(|(_, ns): &(u64, Vec<&String>)| !ns.is_empty())
        .collect();
    let s = eligible.len();
    let n = live.len().max(1);
    let (base, extra) = (s / n, s % n);
    let mut count: BTreeMap<&String, usize> = live.iter().map(|l| (l, 0)).collect();
    let mut full = 0usize; // nodes holding base + 1
    let can_take = |c: usize, full: usize| c < base || (c == base && full < extra);
    let mut out = BTreeMap::new();
    // Keep current masters within their share.
    for (&d, ns) in &eligible {
        let Some(cur) = current.get(&d) else { continue };
        let Some(node) = ns.iter().find(|n| **n == cur) else {
            continue;
        };
        let c = count.get(*node).copied().unwrap_or(0);
        if can_take(c, full) {
            if c == base {
                full += 1;
            }
            count.insert(node, c + 1);
            out.insert(d, (*node).clone());
        }
    }
    // The rest: to the least loaded eligible node that has room (or the
    // least loaded eligible one when none has: partial connectivity).
    for (&d, ns) in &eligible {
        if out.contains_key(&d) {
            continue;
        }
        let pick = |room: bool, full: usize| {
            ns.iter()
                .copied()
                .filter(|nd| !room || can_take(count.get(*nd).copied().unwrap_or(0), full))
                .min_by_key(|nd| (count.get(*nd).copied().unwrap_or(0), (*nd).clone()))
        };
        let Some(node) = pick(true, full).or_else(|| pick(false, full)) else {
            continue;
        };
        let c = count.get(node).copied().unwrap_or(0);
        if c == base {
            full += 1;
        }
        count.insert(node, c + 1);
        out.insert(d, node.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn nodes(k: usize) -> BTreeSet<String> {
        (0..k).map(|i| format!("n{i}")).collect()
    }

    fn all_connected(s: u64, live: &BTreeSet<String>) -> BTreeMap<u64, BTreeSet<String>> {
        (1..=s).map(|d| (d, live.clone())).collect()
    }

    fn loads(a: &BTreeMap<u64, String>) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for n in a.values() {
            *m.entry(n.clone()).or_insert(0) += 1;
        }
        m
    }

    fn balanced(a: &BTreeMap<u64, String>, s: usize, live: &BTreeSet<String>) -> bool {
        let l = loads(a);
        let n = live.len();
        live.iter().all(|x| {
            let c = l.get(x).copied().unwrap_or(0);
            c == s / n || c == s.div_ceil(n)
        })
    }

    #[test]
    fn five_switches_over_three_nodes() {
        let live = nodes(3);
        let a = assign(&BTreeMap::new(), &all_connected(5, &live), &live);
        assert_eq!(a.len(), 5);
        assert!(balanced(&a, 5, &live), "{a:?}");
    }

    #[test]
    fn a_dead_node_loses_only_its_own_switches() {
        let live = nodes(3);
        let conn = all_connected(9, &live);
        let a = assign(&BTreeMap::new(), &conn, &live);
        let mut two = live.clone();
        two.remove("n1");
        let b = assign(&a, &all_connected(9, &two), &two);
        for (d, n) in &a {
            if n != "n1" {
                assert_eq!(b.get(d), Some(n), "switch {d} moved off a live node");
            } else {
                assert_ne!(b.get(d).map(String::as_str), Some("n1"));
            }
        }
        assert!(balanced(&b, 9, &two), "{b:?}");
    }

    #[test]
    fn a_switch_connected_to_some_nodes_goes_to_one_of_them() {
        let live = nodes(3);
        let mut conn = all_connected(4, &live);
        conn.insert(9, ["n2".to_string()].into());
        conn.insert(10, ["gone".to_string()].into());
        let a = assign(&BTreeMap::new(), &conn, &live);
        assert_eq!(a.get(&9).map(String::as_str), Some("n2"));
        assert!(!a.contains_key(&10), "no live node has switch 10");
    }

    proptest! {
        #[test]
        fn balanced_and_stable(s in 0u64..60, k in 1usize..6, drop in 0usize..6, seed in any::<u64>()) {
            let live = nodes(k);
            let conn = all_connected(s, &live);
            // Any starting point, including masters on unknown nodes.
            let cur: BTreeMap<u64, String> = (1..=s)
                .filter(|d| (d ^ seed) % 3 != 0)
                .map(|d| (d, format!("n{}", (d.wrapping_mul(seed | 1) >> 3) % (k as u64 + 1))))
                .collect();
            let a = assign(&cur, &conn, &live);
            prop_assert_eq!(a.len(), s as usize);
            prop_assert!(balanced(&a, s as usize, &live));
            // Balanced already: nothing moves.
            prop_assert_eq!(&assign(&a, &conn, &live), &a);
            // A node dies: balanced again, and switches of live nodes stay
            // unless their node is over the new share.
            if k > 1 {
                let dead = format!("n{}", drop % k);
                let mut rest = live.clone();
                rest.remove(&dead);
                let b = assign(&a, &all_connected(s, &rest), &rest);
                prop_assert!(balanced(&b, s as usize, &rest));
                prop_assert!(b.values().all(|n| *n != dead));
                let moved = a.iter().filter(|(d, n)| **n != dead && b.get(*d) != Some(*n)).count();
                prop_assert_eq!(moved, 0);
            }
        }
    }
}
