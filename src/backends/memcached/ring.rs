//! Which memcached server holds a key: consistent hashing.
//!
//! Every server owns many points on a ring of 64-bit hashes; a key belongs
//! to the first point at or after its own hash. Adding or removing one
//! server of N then moves only about 1/N of the keys, where `hash % N`
//! would move nearly all of them (and every client would look offline
//! until its node re-registered it).
//!
//! Every node must map keys exactly alike, whatever its build: the hash is
//! FNV-1a with a fixed finisher, not the standard library's hasher (whose
//! output may change between Rust releases), and the points depend only on
//! the server addresses as configured. Nodes must therefore list the same
//! servers (order does not matter).

/// Points per server: enough that each owns close to 1/N of the ring.
const POINTS_PER_SERVER: usize = 160;

pub struct Ring {
    /// (point, server index), sorted by point.
    points: Vec<(u64, usize)>,
}

impl Ring {
    /// A ring over `servers` (addresses, as given to every node).
    pub fn new(servers: &[String]) -> Self {
        let mut points: Vec<(u64, usize)> = servers
            .iter()
            .enumerate()
            .flat_map(|(index, server)| {
                (0..POINTS_PER_SERVER)
                    .map(move |i| (hash(format!("{server}#{i}").as_bytes()), index))
            })
            .collect();
        // Ties (astronomically unlikely) break by address, not by order.
        points.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| servers[a.1].cmp(&servers[b.1])));
        Self { points }
    }

    /// The index of the server that holds `key`.
    pub fn server_for(&self, key: &str) -> usize {
        let h = hash(key.as_bytes());
        let at = self.points.partition_point(|(point, _)| *point < h);
        self.points.get(at).unwrap_or(&self.points[0]).1
    }
}

/// FNV-1a, then splitmix64's finisher to spread FNV's weak low bits.
fn hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn servers(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("10.0.0.{i}:11211")).collect()
    }

    #[test]
    fn keys_spread_evenly_and_the_same_on_every_node() {
        let ring = Ring::new(&servers(3));
        let mut counts = [0usize; 3];
        for i in 0..30_000 {
            counts[ring.server_for(&format!("sb:presence:client-{i}"))] += 1;
        }
        for count in counts {
            assert!((7_000..13_000).contains(&count), "{counts:?}");
        }
        // Order of the list does not matter; the hash is fixed.
        let mut reversed = servers(3);
        reversed.reverse();
        let other = Ring::new(&reversed);
        for i in 0..1000 {
            let key = format!("k{i}");
            assert_eq!(
                servers(3)[ring.server_for(&key)],
                reversed[other.server_for(&key)]
            );
        }
        // Pinned: a change here would split a cluster of mixed versions.
        assert_eq!(hash(b"sb:presence:alice"), 14_804_095_265_112_023_456);
    }

    #[test]
    fn adding_a_server_moves_about_its_share() {
        let (three, four) = (Ring::new(&servers(3)), Ring::new(&servers(4)));
        let moved = (0..20_000)
            .filter(|i| {
                let key = format!("c{i}");
                three.server_for(&key) != four.server_for(&key)
            })
            .count();
        // Ideally a quarter (5,000).
        assert!((3_500..6_500).contains(&moved), "{moved}");
    }
}
