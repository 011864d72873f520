//! Facts decoded from a kind's stored objects, kept across a controller's passes: each pass
//! scans the kind ([`Storage::scan`], from the watch cache on a server) and decodes again only
//! the objects whose `mod_revision` changed since the last pass. A pass over 5,000 Nodes then
//! parses the few written since, not all 5,000 (docs/scale.md).

use std::collections::BTreeMap;

use super::{ObjectError, Storage};
use crate::registry::ResourceInfo;

/// One object's facts: the revision they were decoded from, the pass that last saw the object,
/// and the facts (`None` when the object did not decode).
#[derive(Debug)]
struct Slot<T> {
    mod_revision: i64,
    pass: u64,
    facts: Option<T>,
}

/// Decoded facts by storage key, in key order.
#[derive(Debug)]
pub struct Decoded<T> {
    slots: BTreeMap<String, Slot<T>>,
    pass: u64,
}

impl<T> Default for Decoded<T> {
    fn default() -> Self {
        Decoded {
            slots: BTreeMap::new(),
            pass: 0,
        }
    }
}

impl<T> Decoded<T> {
    /// Brings the facts in line with the objects of `info` under `ns` (all namespaces when
    /// `None`): decodes new and changed objects with `decode`, forgets deleted ones. Returns
    /// the revision the scan reflects. On error the previous facts are kept.
    pub async fn refresh<D>(
        &mut self,
        store: &Storage,
        info: &ResourceInfo,
        ns: Option<&str>,
        decode: D,
    ) -> Result<i64, ObjectError>
    where
        D: Fn(&[u8]) -> Option<T>,
    {
        let pass = self.pass + 1;
        let slots = &mut self.slots;
        let revision = store
            .scan(info, ns, |kv| match slots.get_mut(&kv.key) {
                Some(slot) if slot.mod_revision == kv.mod_revision => slot.pass = pass,
                Some(slot) => {
                    *slot = Slot {
                        mod_revision: kv.mod_revision,
                        pass,
                        facts: decode(&kv.value),
                    }
                }
                None => {
                    slots.insert(
                        kv.key.clone(),
                        Slot {
                            mod_revision: kv.mod_revision,
                            pass,
                            facts: decode(&kv.value),
                        },
                    );
                }
            })
            .await?;
        self.pass = pass;
        self.slots.retain(|_, slot| slot.pass == pass);
        Ok(revision)
    }

    /// The facts of every object that decoded, in key order.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.slots.values().filter_map(|slot| slot.facts.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use serde_json::json;

    use super::*;
    use crate::datastore::Datastore;
    use crate::datastore::memory::MemoryStore;
    use crate::registry::NODES;

    fn node(name: &str, label: &str) -> serde_json::Value {
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {"l": label}}})
    }

    #[tokio::test]
    async fn only_new_and_changed_objects_are_decoded_and_deleted_ones_forgotten() {
        let store = Storage::new(Datastore::from_impl(MemoryStore::new()));
        for n in ["a", "b", "c"] {
            store.create(&NODES, None, node(n, "1")).await.unwrap();
        }
        let decodes = Arc::new(AtomicUsize::new(0));
        let label = |bytes: &[u8]| {
            decodes.fetch_add(1, Ordering::SeqCst);
            let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
            Some(format!(
                "{}={}",
                v["metadata"]["name"].as_str()?,
                v["metadata"]["labels"]["l"].as_str()?
            ))
        };
        let mut facts = Decoded::default();
        facts.refresh(&store, &NODES, None, label).await.unwrap();
        assert_eq!(decodes.load(Ordering::SeqCst), 3);
        assert_eq!(
            facts.iter().cloned().collect::<Vec<_>>(),
            ["a=1", "b=1", "c=1"]
        );

        // Unchanged: nothing is decoded again.
        facts.refresh(&store, &NODES, None, label).await.unwrap();
        assert_eq!(decodes.load(Ordering::SeqCst), 3);

        store
            .modify(&NODES, None, "b", None, |n| {
                n["metadata"]["labels"]["l"] = json!("2");
                Ok::<(), ObjectError>(())
            })
            .await
            .unwrap();
        store.delete(&NODES, None, "c", None, None).await.unwrap();
        store.create(&NODES, None, node("d", "1")).await.unwrap();
        facts.refresh(&store, &NODES, None, label).await.unwrap();
        assert_eq!(decodes.load(Ordering::SeqCst), 5, "b changed, d is new");
        assert_eq!(
            facts.iter().cloned().collect::<Vec<_>>(),
            ["a=1", "b=2", "d=1"]
        );
    }
}
