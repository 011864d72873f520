//! Node IPAM (upstream's range allocator): on the leading server, gives each Node without one a
//! `spec.podCIDR`/`podCIDRs` of `node-cidr-mask-size` bits carved out of `cluster-cidr`, the
//! lowest free range first. Ranges in use are learnt from the Nodes themselves (so a new leader
//! continues where the last one stopped) and a deleted Node's range becomes free again.
//! NodeRestriction keeps nodes from changing their own range.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use ipnet::IpNet;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::watch::{forward, store_when_ready, until_leader};
use crate::datastore::{Change, StoreCell};
use crate::registry::NODES;
use crate::storage::ObjectError;
use crate::storage::{ListOptions, Storage};

const COMPONENT: &str = "node-ipam-controller";

/// The ranges of one cluster CIDR and which of them are taken.
#[derive(Debug, Clone)]
pub struct CidrAllocator {
    cluster: IpNet,
    mask: u8,
    /// Taken ranges, truncated to their network address (so supernets can be looked up).
    used: BTreeSet<IpNet>,
    /// Index of the lowest range of `mask` bits that may be free: every one below it is taken.
    /// Allocation starts there, so allocating n ranges costs n lookups each, not n² (5,000
    /// Nodes registering at once made the old whole-list scan the leader's hottest code).
    hint: usize,
}

impl CidrAllocator {
    pub fn new(cluster: IpNet, mask: u8) -> CidrAllocator {
        CidrAllocator {
            cluster: cluster.trunc(),
            mask,
            used: BTreeSet::new(),
            hint: 0,
        }
    }

    /// Records `cidr` as taken (a Node already has it); ranges outside the cluster CIDR are
    /// ignored.
    pub fn occupy(&mut self, cidr: IpNet) {
        if self.cluster.contains(&cidr) {
            self.used.insert(cidr.trunc());
        }
    }

    /// Frees `cidr` (its Node was deleted).
    pub fn release(&mut self, cidr: &IpNet) {
        let cidr = cidr.trunc();
        if self.used.remove(&cidr) {
            // Ranges from the released one's first index on may be free again.
            if let Some(first) = self.index_of(&cidr) {
                self.hint = self.hint.min(first);
            }
        }
    }

    /// Host bits of one range of `mask` bits.
    fn range_bits(&self) -> u32 {
        u32::from(self.cluster.max_prefix_len().saturating_sub(self.mask))
    }

    /// Index of the first range of `mask` bits inside `cidr`, counted from the cluster CIDR's
    /// start.
    fn index_of(&self, cidr: &IpNet) -> Option<usize> {
        if cidr.max_prefix_len() != self.cluster.max_prefix_len() {
            return None;
        }
        let offset =
            address_bits(cidr.network()).checked_sub(address_bits(self.cluster.network()))?;
        usize::try_from(offset.checked_shr(self.range_bits()).unwrap_or(0)).ok()
    }

    /// Whether `c` overlaps a taken range: one inside it (its network address falls in `c`),
    /// or one containing it (a supernet of `c`).
    fn overlaps(&self, c: &IpNet) -> bool {
        let max = c.max_prefix_len();
        let (Ok(low), Ok(high)) = (IpNet::new(c.network(), 0), IpNet::new(c.broadcast(), max))
        else {
            return true;
        };
        if self.used.range(low..=high).next().is_some() {
            return true;
        }
        (0..c.prefix_len())
            .any(|p| IpNet::new(c.network(), p).is_ok_and(|s| self.used.contains(&s.trunc())))
    }

    /// The `i`-th range of `mask` bits of the cluster CIDR, if it has that many.
    fn nth_range(&self, i: usize) -> Option<IpNet> {
        let offset = u128::try_from(i).ok()?.checked_shl(self.range_bits())?;
        let addr = address_bits(self.cluster.network()).checked_add(offset)?;
        let addr = match self.cluster.network() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(u32::try_from(addr).ok()?)),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(addr)),
        };
        let range = IpNet::new(addr, self.mask).ok()?;
        // Past the cluster CIDR's end (or an index so large its shift wrapped): exhausted.
        (self.cluster.contains(&range) && self.index_of(&range) == Some(i)).then_some(range)
    }

    /// Takes the lowest free range; `None` when the cluster CIDR is exhausted.
    pub fn allocate(&mut self) -> Option<IpNet> {
        let mut i = self.hint;
        let free = loop {
            let c = self.nth_range(i)?;
            if !self.overlaps(&c) {
                break c;
            }
            i += 1;
        };
        self.used.insert(free);
        self.hint = i + 1;
        Some(free)
    }
}

/// An address as an integer (IPv4 in the low 32 bits), for range arithmetic.
fn address_bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// The pod CIDRs a Node object carries.
fn pod_cidrs(node: &Value) -> Vec<IpNet> {
    let mut out: Vec<IpNet> = node
        .pointer("/spec/podCIDRs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.as_str()?.parse().ok())
        .collect();
    if let Some(c) = node
        .pointer("/spec/podCIDR")
        .and_then(Value::as_str)
        .and_then(|c| c.parse().ok())
        && !out.contains(&c)
    {
        out.push(c);
    }
    out
}

/// Gives `name` a range when it has none; keeps the allocator in step with what was written.
async fn assign(store: &Storage, alloc: &mut CidrAllocator, name: &str) -> Result<(), ObjectError> {
    let Some(cidr) = alloc.allocate() else {
        tracing::warn!(component = COMPONENT, node = %name, "no pod CIDR left in cluster-cidr {}", alloc.cluster);
        return Ok(());
    };
    let mut taken = None;
    let result = store
        .modify(&NODES, None, name, None, |n| {
            let existing = pod_cidrs(n);
            if !existing.is_empty() {
                taken = Some(existing);
                return Ok(());
            }
            taken = None;
            n["spec"]["podCIDR"] = json!(cidr.to_string());
            n["spec"]["podCIDRs"] = json!([cidr.to_string()]);
            Ok(())
        })
        .await;
    match (&result, taken) {
        (Ok(_), None) => {
            tracing::info!(component = COMPONENT, node = %name, "allocated pod CIDR {cidr}");
        }
        (Ok(_), Some(existing)) => {
            alloc.release(&cidr);
            existing.into_iter().for_each(|c| alloc.occupy(c));
        }
        (Err(_), _) => alloc.release(&cidr),
    }
    result.map(|_| ())
}

/// Runs the allocator while leading, until `cancel`.
pub async fn run(
    cell: StoreCell,
    cluster: IpNet,
    mask: u8,
    mut is_leader: watch::Receiver<bool>,
    cancel: CancellationToken,
) {
    let Some(ds) = store_when_ready(&cell, &cancel).await else {
        return;
    };
    let store = Storage::new(ds.clone());
    loop {
        if !until_leader(&mut is_leader, &cancel).await {
            return;
        }
        let mut alloc = CidrAllocator::new(cluster, mask);
        let list = match store.list(&NODES, None, &ListOptions::default()).await {
            Ok(l) => l,
            Err(e) => {
                tracing::debug!(component = COMPONENT, "cannot list nodes: {e}");
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        let mut missing = Vec::new();
        for n in &list.items {
            let cidrs = pod_cidrs(n);
            if cidrs.is_empty() {
                missing.extend(
                    n.pointer("/metadata/name")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                );
            }
            cidrs.into_iter().for_each(|c| alloc.occupy(c));
        }
        for name in missing {
            if let Err(e) = assign(&store, &mut alloc, &name).await {
                tracing::debug!(component = COMPONENT, node = %name, "allocating a pod CIDR: {e}");
            }
        }
        let watches = cancel.child_token();
        let (tx, mut rx) = mpsc::unbounded_channel();
        forward(
            ds.clone(),
            NODES.list_prefix(None),
            list.resource_version + 1,
            (),
            tx,
            watches.clone(),
        );
        loop {
            let batch = tokio::select! {
                _ = cancel.cancelled() => return,
                r = is_leader.changed() => {
                    if r.is_err() || !*is_leader.borrow() { break }
                    continue;
                }
                b = rx.recv() => b,
            };
            let changes = match batch {
                Some((_, Ok(changes))) => changes,
                _ => break,
            };
            for change in changes {
                match change {
                    Change::Put { kv, .. } => {
                        let Ok(node) = serde_json::from_slice::<Value>(&kv.value) else {
                            continue;
                        };
                        let cidrs = pod_cidrs(&node);
                        if cidrs.is_empty() {
                            let name = node
                                .pointer("/metadata/name")
                                .and_then(Value::as_str)
                                .unwrap_or_default();
                            if let Err(e) = assign(&store, &mut alloc, name).await {
                                tracing::debug!(component = COMPONENT, node = %name, "allocating a pod CIDR: {e}");
                            }
                        } else {
                            cidrs.into_iter().for_each(|c| alloc.occupy(c));
                        }
                    }
                    Change::Delete { prev, .. } => {
                        let node =
                            prev.and_then(|p| serde_json::from_slice::<Value>(&p.value).ok());
                        for c in node.as_ref().map(pod_cidrs).unwrap_or_default() {
                            alloc.release(&c);
                        }
                    }
                }
            }
        }
        watches.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn allocates_lowest_free_ranges_and_reuses_released_ones() {
        let mut a = CidrAllocator::new("10.42.0.0/16".parse().unwrap(), 24);
        a.occupy("10.42.1.0/24".parse().unwrap());
        a.occupy("192.168.0.0/24".parse().unwrap());
        assert_eq!(a.allocate().unwrap().to_string(), "10.42.0.0/24");
        assert_eq!(a.allocate().unwrap().to_string(), "10.42.2.0/24");
        a.release(&"10.42.0.0/24".parse().unwrap());
        assert_eq!(a.allocate().unwrap().to_string(), "10.42.0.0/24");
        let mut tiny = CidrAllocator::new("198.18.0.0/23".parse().unwrap(), 24);
        assert!(tiny.allocate().is_some() && tiny.allocate().is_some());
        assert_eq!(tiny.allocate(), None, "exhausted");
        let mut v6 = CidrAllocator::new("fd00:42::/56".parse().unwrap(), 64);
        assert_eq!(v6.allocate().unwrap().to_string(), "fd00:42::/64");
        v6.occupy("fd00:42:0:1::/64".parse().unwrap());
        assert_eq!(v6.allocate().unwrap().to_string(), "fd00:42:0:2::/64");
    }

    #[test]
    fn ranges_of_other_sizes_block_what_they_overlap() {
        let mut a = CidrAllocator::new("10.42.0.0/16".parse().unwrap(), 24);
        // A bigger range (an older, wider node-cidr-mask-size) covers four /24s...
        a.occupy("10.42.0.0/22".parse().unwrap());
        // ...and a smaller one, not at its network address, blocks the /24 around it.
        a.occupy("10.42.4.128/25".parse().unwrap());
        assert_eq!(a.allocate().unwrap().to_string(), "10.42.5.0/24");
        a.release(&"10.42.0.0/22".parse().unwrap());
        assert_eq!(a.allocate().unwrap().to_string(), "10.42.0.0/24");
        assert_eq!(a.allocate().unwrap().to_string(), "10.42.1.0/24");
    }

    #[test]
    fn thousands_of_ranges_are_handed_out_in_order_without_overlap() {
        let mut a = CidrAllocator::new("10.0.0.0/8".parse().unwrap(), 24);
        let mut seen = BTreeSet::new();
        for i in 0..20_000u32 {
            let c = a.allocate().unwrap();
            assert_eq!(
                c.network(),
                std::net::Ipv4Addr::from(0x0a00_0000 + (i << 8))
            );
            assert!(seen.insert(c));
        }
        a.release(&"10.0.7.0/24".parse().unwrap());
        assert_eq!(a.allocate().unwrap().to_string(), "10.0.7.0/24");
        assert_eq!(a.allocate().unwrap().to_string(), "10.78.32.0/24");
    }

    #[tokio::test]
    async fn nodes_get_ranges_and_deleted_nodes_free_theirs() {
        let ds = crate::datastore::Datastore::from_impl(Arc::new(
            crate::datastore::memory::MemoryStore::default(),
        ));
        let store = Storage::new(ds.clone());
        let cell: StoreCell = Arc::new(tokio::sync::OnceCell::new());
        cell.set(ds).unwrap();
        let node =
            |name: &str| json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}});
        store.create(&NODES, None, node("a")).await.unwrap();
        let (_tx, rx) = watch::channel(true);
        let cancel = CancellationToken::new();
        let _guard = cancel.clone().drop_guard();
        tokio::spawn(run(cell, "198.18.0.0/16".parse().unwrap(), 24, rx, cancel));
        // Polls until `name` has a range (the controller runs concurrently).
        let cidr_of = |name: &'static str| {
            let store = store.clone();
            async move {
                for _ in 0..500 {
                    let node = store.get_opt(&NODES, None, name).await.unwrap();
                    if let Some(c) = node.as_ref().and_then(|n| n.pointer("/spec/podCIDR")) {
                        return c.as_str().map(str::to_string);
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                None
            }
        };
        assert_eq!(cidr_of("a").await.as_deref(), Some("198.18.0.0/24"));
        store.create(&NODES, None, node("b")).await.unwrap();
        assert_eq!(cidr_of("b").await.as_deref(), Some("198.18.1.0/24"));
        let n = store.get(&NODES, None, "b").await.unwrap();
        assert_eq!(n["spec"]["podCIDRs"], json!(["198.18.1.0/24"]));
        store.delete(&NODES, None, "a", None, None).await.unwrap();
        store.create(&NODES, None, node("c")).await.unwrap();
        let c = cidr_of("c").await;
        assert_eq!(
            c.as_deref(),
            Some("198.18.0.0/24"),
            "a's range is free again"
        );
    }
}
