//! Placement: which nodes hold a file.
//!
//! Every member of the committed cluster owns `vnodes_per_node` points
//! (virtual nodes, or vnodes) on a ring of `u64` positions. A vnode's
//! position is the first 8 bytes, read big-endian, of
//! `MD5("{node_id}#{vnode_index}")`, and a file's position is the same prefix
//! of `MD5(file_id)`. The replica set of a file is the first R distinct nodes
//! met walking clockwise (towards larger positions, wrapping past `u64::MAX`
//! to 0) from the first vnode whose position is at or after the file's.
//!
//! The ring is a pure function of the member set: every node that has applied
//! the same membership computes the same replica set for every file, with no
//! coordination. Adding or removing one node of N moves only about 1/N of the
//! files' first replicas, and the moved ones go to or come from that node.

use std::collections::BTreeSet;

use md5::{Digest, Md5};

use crate::model::NodeId;

/// Default number of vnodes per node.
///
/// With v vnodes a node's share of the ring deviates from 1/N by about
/// 1/sqrt(v) relative. 128 keeps every node within about ±30% of a fair
/// share at 3 to 100 nodes (the balance tests check this). A 100-node ring
/// still has only 12,800 entries (200 KiB), so a lookup's binary search
/// stays in cache.
pub const DEFAULT_VNODES_PER_NODE: u32 = 128;

/// Replica-set size up to which distinctness is checked by scanning the
/// output instead of a bitmap, because a linear scan over a few entries is
/// faster and needs no allocation.
const LINEAR_DISTINCT_CHECK_MAX: usize = 16;

/// One vnode: its ring position and the index of its node in `Ring::nodes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Vnode {
    position: u64,
    node_index: u32,
}

/// A consistent hashing ring over the committed member list.
#[derive(Clone, Debug)]
pub struct Ring {
    /// Distinct node ids in ascending order, so a node's index does not
    /// depend on the order the members were given in.
    nodes: Vec<NodeId>,
    /// Vnodes sorted by position, then by node index for equal positions.
    vnodes: Vec<Vnode>,
}

impl Ring {
    /// Builds the ring for a member set. Duplicate ids count once and the
    /// input order does not matter. A `vnodes_per_node` of 0 is treated as 1,
    /// because a member without a vnode could never be placed.
    pub fn new(nodes: impl IntoIterator<Item = NodeId>, vnodes_per_node: u32) -> Ring {
        let nodes: Vec<NodeId> = nodes
            .into_iter()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let vnodes_per_node = vnodes_per_node.max(1);

        let mut vnodes = Vec::with_capacity(nodes.len() * vnodes_per_node as usize);
        for (node_index, node_id) in nodes.iter().enumerate() {
            // A member list larger than u32::MAX cannot be held in memory, so
            // the conversion never saturates in practice.
            let node_index = u32::try_from(node_index).unwrap_or(u32::MAX);
            for vnode_index in 0..vnodes_per_node {
                vnodes.push(Vnode {
                    position: vnode_position(node_id, vnode_index),
                    node_index,
                });
            }
        }
        vnodes.sort_unstable();

        Ring { nodes, vnodes }
    }

    /// Returns the members in ascending id order. The indices written by
    /// [`Ring::replica_indices_into`] refer to this slice.
    pub fn nodes(&self) -> &[NodeId] {
        &self.nodes
    }

    /// Number of distinct members.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Returns whether the ring has no members.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Returns the replica set of `file_id`: the first `replication_factor`
    /// distinct nodes clockwise from the file's position, in ring order. With
    /// fewer members than `replication_factor`, every member is returned.
    pub fn replica_set(&self, file_id: &str, replication_factor: usize) -> Vec<NodeId> {
        let mut indices = Vec::with_capacity(replication_factor.min(self.nodes.len()));
        self.replica_indices_into(file_id, replication_factor, &mut indices);
        indices
            .into_iter()
            .map(|index| self.nodes[index].clone())
            .collect()
    }

    /// Writes the replica set of `file_id` into `out` as indices into
    /// [`Ring::nodes`], replacing what `out` held. This is the hot path: it
    /// allocates nothing once `out` has the capacity, unless the replica set
    /// is larger than a few nodes.
    pub fn replica_indices_into(
        &self,
        file_id: &str,
        replication_factor: usize,
        out: &mut Vec<usize>,
    ) {
        out.clear();
        let count = replication_factor.min(self.nodes.len());
        if count == 0 {
            return;
        }

        let start = self.first_vnode_at_or_after(key_position(file_id));
        if count <= LINEAR_DISTINCT_CHECK_MAX {
            self.walk_with_scan(start, count, out);
        } else {
            self.walk_with_bitmap(start, count, out);
        }
    }

    /// Fraction of the ring, between 0 and 1, whose keys have `node` as their
    /// first replica. A node that is not a member owns 0.
    pub fn share(&self, node: &str) -> f64 {
        let Ok(node_index) = self.nodes.binary_search_by(|id| id.as_str().cmp(node)) else {
            return 0.0;
        };
        if self.nodes.len() == 1 {
            return 1.0;
        }

        // A vnode owns the arc (previous vnode, this vnode], so the first
        // vnode's arc wraps around from the last one.
        let mut owned: u128 = 0;
        let mut previous = self.vnodes[self.vnodes.len() - 1].position;
        for vnode in &self.vnodes {
            if vnode.node_index as usize == node_index {
                owned += u128::from(vnode.position.wrapping_sub(previous));
            }
            previous = vnode.position;
        }
        owned as f64 / (u128::from(u64::MAX) + 1) as f64
    }

    fn first_vnode_at_or_after(&self, position: u64) -> usize {
        let index = self
            .vnodes
            .partition_point(|vnode| vnode.position < position);
        if index == self.vnodes.len() {
            0
        } else {
            index
        }
    }

    fn walk_with_scan(&self, start: usize, count: usize, out: &mut Vec<usize>) {
        let (after, before) = (&self.vnodes[start..], &self.vnodes[..start]);
        for vnode in after.iter().chain(before) {
            let index = vnode.node_index as usize;
            if !out.contains(&index) {
                out.push(index);
                if out.len() == count {
                    return;
                }
            }
        }
    }

    fn walk_with_bitmap(&self, start: usize, count: usize, out: &mut Vec<usize>) {
        let mut seen = vec![0u64; self.nodes.len().div_ceil(64)];
        let (after, before) = (&self.vnodes[start..], &self.vnodes[..start]);
        for vnode in after.iter().chain(before) {
            let index = vnode.node_index as usize;
            let (word, bit) = (index / 64, 1u64 << (index % 64));
            if seen[word] & bit == 0 {
                seen[word] |= bit;
                out.push(index);
                if out.len() == count {
                    return;
                }
            }
        }
    }
}

/// Ring position of vnode `vnode_index` of `node_id`.
fn vnode_position(node_id: &str, vnode_index: u32) -> u64 {
    let mut hasher = Md5::new();
    hasher.update(node_id.as_bytes());
    hasher.update(b"#");
    hasher.update(vnode_index.to_string().as_bytes());
    prefix_u64(&hasher.finalize())
}

/// Ring position of a file.
pub fn key_position(file_id: &str) -> u64 {
    prefix_u64(&Md5::digest(file_id.as_bytes()))
}

fn prefix_u64(digest: &[u8]) -> u64 {
    let mut prefix = [0u8; 8];
    prefix.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node_ids(count: usize) -> Vec<NodeId> {
        (0..count).map(|i| format!("node-{i:03}")).collect()
    }

    /// Synthetic file ids shaped like real ones: 64 lowercase hex characters.
    fn file_ids(count: usize) -> Vec<String> {
        (0..count)
            .map(|i| {
                use sha2::Digest as _;
                hex::encode(sha2::Sha256::digest(format!("synthetic file {i}")))
            })
            .collect()
    }

    /// Reference replica set computed from the definition with no shortcuts:
    /// every vnode's position recomputed, sorted, walked from the key.
    fn reference_replica_set(
        nodes: &[NodeId],
        vnodes: u32,
        file_id: &str,
        r: usize,
    ) -> Vec<NodeId> {
        let mut sorted_nodes = nodes.to_vec();
        sorted_nodes.sort();
        sorted_nodes.dedup();
        let mut points: Vec<(u64, NodeId)> = Vec::new();
        for node in &sorted_nodes {
            for v in 0..vnodes {
                let digest = Md5::digest(format!("{node}#{v}").as_bytes());
                let position = u64::from_be_bytes(digest[..8].try_into().unwrap());
                points.push((position, node.clone()));
            }
        }
        points.sort();
        let key = u64::from_be_bytes(Md5::digest(file_id.as_bytes())[..8].try_into().unwrap());
        let start = points.iter().position(|(p, _)| *p >= key).unwrap_or(0);
        let mut set = Vec::new();
        for i in 0..points.len() {
            let node = &points[(start + i) % points.len()].1;
            if !set.contains(node) && set.len() < r {
                set.push(node.clone());
            }
        }
        set
    }

    #[test]
    fn vnode_position_matches_md5_definition() {
        let digest = Md5::digest(b"node-a#7");
        let expected = u64::from_be_bytes(digest[..8].try_into().unwrap());
        assert_eq!(vnode_position("node-a", 7), expected);

        // MD5("") = d41d8cd98f00b204e9800998ecf8427e, a published test vector.
        assert_eq!(key_position(""), 0xd41d_8cd9_8f00_b204);
    }

    #[test]
    fn replica_set_matches_reference() {
        for node_count in [1, 2, 3, 5, 10] {
            let nodes = node_ids(node_count);
            let ring = Ring::new(nodes.clone(), 16);
            for file_id in file_ids(300) {
                for r in [1, 2, 3, 7] {
                    assert_eq!(
                        ring.replica_set(&file_id, r),
                        reference_replica_set(&nodes, 16, &file_id, r),
                        "nodes={node_count} r={r} file_id={file_id}"
                    );
                }
            }
        }
    }

    #[test]
    fn replica_set_is_deterministic() {
        let first = Ring::new(node_ids(10), DEFAULT_VNODES_PER_NODE);
        let second = Ring::new(node_ids(10), DEFAULT_VNODES_PER_NODE);
        for file_id in file_ids(1000) {
            let a = first.replica_set(&file_id, 3);
            assert_eq!(a, first.replica_set(&file_id, 3));
            assert_eq!(a, second.replica_set(&file_id, 3));
        }
    }

    #[test]
    fn input_order_and_duplicates_do_not_matter() {
        let nodes = node_ids(12);
        let mut reversed = nodes.clone();
        reversed.reverse();
        // A fixed permutation: stride 5 is coprime with 12.
        let shuffled: Vec<NodeId> = (0..12).map(|i| nodes[(i * 5) % 12].clone()).collect();
        let mut duplicated = nodes.clone();
        duplicated.extend(nodes.iter().take(4).cloned());

        let base = Ring::new(nodes, 32);
        let others = [
            Ring::new(reversed, 32),
            Ring::new(shuffled, 32),
            Ring::new(duplicated, 32),
        ];
        for other in &others {
            assert_eq!(other.nodes(), base.nodes());
            assert_eq!(other.len(), 12);
        }
        for file_id in file_ids(1000) {
            let expected = base.replica_set(&file_id, 3);
            for other in &others {
                assert_eq!(other.replica_set(&file_id, 3), expected);
            }
        }
    }

    #[test]
    fn replica_set_nodes_are_distinct() {
        let ring = Ring::new(node_ids(10), DEFAULT_VNODES_PER_NODE);
        for file_id in file_ids(2000) {
            for r in [1, 3, 5, 10] {
                let set = ring.replica_set(&file_id, r);
                assert_eq!(set.len(), r);
                let distinct: BTreeSet<_> = set.iter().collect();
                assert_eq!(distinct.len(), r, "duplicate node in {set:?}");
            }
        }
    }

    #[test]
    fn replication_factor_above_member_count_returns_all() {
        let ring = Ring::new(node_ids(2), DEFAULT_VNODES_PER_NODE);
        for file_id in file_ids(100) {
            let set = ring.replica_set(&file_id, 3);
            assert_eq!(set.len(), 2);
            let sorted: BTreeSet<_> = set.into_iter().collect();
            assert_eq!(sorted.into_iter().collect::<Vec<_>>(), node_ids(2));
        }
    }

    #[test]
    fn empty_ring_or_zero_factor_gives_empty_set() {
        let empty = Ring::new(Vec::<NodeId>::new(), DEFAULT_VNODES_PER_NODE);
        assert!(empty.is_empty());
        assert!(empty.replica_set("abc", 3).is_empty());
        assert_eq!(empty.share("node-000"), 0.0);

        let ring = Ring::new(node_ids(3), DEFAULT_VNODES_PER_NODE);
        assert!(ring.replica_set("abc", 0).is_empty());
    }

    #[test]
    fn zero_vnodes_is_treated_as_one() {
        let ring = Ring::new(node_ids(3), 0);
        assert_eq!(ring.vnodes.len(), 3);
        assert_eq!(ring.replica_set("abc", 3).len(), 3);
    }

    #[test]
    fn key_after_last_vnode_wraps_to_first() {
        let ring = Ring::new(node_ids(4), 4);
        let last = ring.vnodes.last().unwrap().position;
        let first = ring.vnodes[0];
        // Find file ids whose position lies after the last vnode; with 16
        // vnodes a few in a thousand land there.
        let wrapping: Vec<String> = file_ids(20_000)
            .into_iter()
            .filter(|id| key_position(id) > last)
            .collect();
        assert!(
            !wrapping.is_empty(),
            "no synthetic id lands past the last vnode"
        );
        for file_id in &wrapping {
            let set = ring.replica_set(file_id, 4);
            assert_eq!(set[0], ring.nodes()[first.node_index as usize]);
            assert_eq!(set.len(), 4);
        }

        assert_eq!(ring.first_vnode_at_or_after(last.wrapping_add(1)), 0);
        assert_eq!(ring.first_vnode_at_or_after(last), ring.vnodes.len() - 1);
        assert_eq!(ring.first_vnode_at_or_after(0), 0);
        assert_eq!(ring.first_vnode_at_or_after(first.position), 0);
    }

    #[test]
    fn large_replication_factor_uses_bitmap_walk() {
        let nodes = node_ids(40);
        let ring = Ring::new(nodes.clone(), 8);
        for file_id in file_ids(100) {
            for r in [LINEAR_DISTINCT_CHECK_MAX + 1, 30, 40, 100] {
                let set = ring.replica_set(&file_id, r);
                assert_eq!(set, reference_replica_set(&nodes, 8, &file_id, r));
                assert_eq!(set.len(), r.min(40));
            }
        }
    }

    #[test]
    fn replica_indices_into_reuses_buffer() {
        let ring = Ring::new(node_ids(10), DEFAULT_VNODES_PER_NODE);
        let mut out = vec![99, 98, 97, 96, 95];
        for file_id in file_ids(50) {
            ring.replica_indices_into(&file_id, 3, &mut out);
            let by_index: Vec<NodeId> = out.iter().map(|&i| ring.nodes()[i].clone()).collect();
            assert_eq!(by_index, ring.replica_set(&file_id, 3));
        }
    }

    #[test]
    fn adding_node_moves_about_one_nth() {
        let nodes = node_ids(10);
        let before = Ring::new(nodes.clone(), DEFAULT_VNODES_PER_NODE);
        let mut grown = nodes.clone();
        grown.push("node-new".to_string());
        let after = Ring::new(grown, DEFAULT_VNODES_PER_NODE);

        let ids = file_ids(10_000);
        let mut primaries_moved = 0usize;
        let mut sets_changed = 0usize;
        for file_id in &ids {
            let old = before.replica_set(file_id, 3);
            let new = after.replica_set(file_id, 3);
            if old[0] != new[0] {
                primaries_moved += 1;
                assert_eq!(new[0], "node-new", "a primary moved between old nodes");
            }
            if old != new {
                sets_changed += 1;
                assert!(
                    new.iter().any(|n| n == "node-new"),
                    "set changed without the new node"
                );
                // The old nodes that remain keep their relative order.
                let remaining: Vec<&NodeId> = new.iter().filter(|n| *n != "node-new").collect();
                let old_prefix: Vec<&NodeId> = old.iter().take(remaining.len()).collect();
                assert_eq!(remaining, old_prefix);
            }
        }

        // Expected: 1/11 of primaries (909 of 10,000) and about 3/11 of the
        // replica sets (2,727). The tolerance covers the new node's share
        // deviating by up to 30% from fair.
        let expected_primaries = ids.len() as f64 / 11.0;
        let primary_ratio = primaries_moved as f64 / expected_primaries;
        assert!(
            (0.7..=1.3).contains(&primary_ratio),
            "moved {primaries_moved} primaries"
        );
        let expected_sets = 3.0 * ids.len() as f64 / 11.0;
        let set_ratio = sets_changed as f64 / expected_sets;
        assert!(
            (0.7..=1.3).contains(&set_ratio),
            "changed {sets_changed} replica sets"
        );
    }

    #[test]
    fn removing_node_only_moves_its_files() {
        let nodes = node_ids(10);
        let before = Ring::new(nodes.clone(), DEFAULT_VNODES_PER_NODE);
        let after = Ring::new(
            nodes.into_iter().filter(|n| n != "node-004"),
            DEFAULT_VNODES_PER_NODE,
        );
        for file_id in file_ids(5_000) {
            let old = before.replica_set(&file_id, 3);
            let new = after.replica_set(&file_id, 3);
            if !old.iter().any(|n| n == "node-004") {
                assert_eq!(old, new);
            } else {
                let survivors: Vec<&NodeId> = old.iter().filter(|n| *n != "node-004").collect();
                assert_eq!(new.iter().take(2).collect::<Vec<_>>(), survivors);
            }
        }
    }

    #[test]
    fn shares_sum_to_one_and_are_balanced() {
        for node_count in [3, 10, 100] {
            let ring = Ring::new(node_ids(node_count), DEFAULT_VNODES_PER_NODE);
            let shares: Vec<f64> = ring.nodes().iter().map(|n| ring.share(n)).collect();
            let total: f64 = shares.iter().sum();
            assert!((total - 1.0).abs() < 1e-9, "shares sum to {total}");
            let fair = 1.0 / node_count as f64;
            for (node, share) in ring.nodes().iter().zip(&shares) {
                let ratio = share / fair;
                assert!(
                    (0.65..=1.35).contains(&ratio),
                    "{node} owns {share} with {node_count} nodes"
                );
            }
        }
        assert_eq!(Ring::new(node_ids(1), 4).share("node-000"), 1.0);
        assert_eq!(Ring::new(node_ids(3), 4).share("stranger"), 0.0);
    }

    #[test]
    fn file_counts_are_balanced() {
        let ring = Ring::new(node_ids(10), DEFAULT_VNODES_PER_NODE);
        let mut primaries = [0usize; 10];
        let mut replicas = [0usize; 10];
        let mut out = Vec::new();
        for file_id in file_ids(10_000) {
            ring.replica_indices_into(&file_id, 3, &mut out);
            primaries[out[0]] += 1;
            for &i in &out {
                replicas[i] += 1;
            }
        }
        for i in 0..10 {
            assert!(
                (650..=1350).contains(&primaries[i]),
                "node {i} is primary for {}",
                primaries[i]
            );
            assert!(
                (2100..=3900).contains(&replicas[i]),
                "node {i} holds {}",
                replicas[i]
            );
        }
    }
}
