//! Cached objects by a key of theirs (a requester, a request id label), kept
//! current by the watch that fills the cache: a lookup costs its matches, not
//! a scan of every object. The index holds names only; the objects are read
//! from the cache's store.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, PoisonError};

use kube::Resource;
use kube::runtime::reflector::{ObjectRef, Store};

/// Names of cached objects of kind `K` by one key of theirs.
///
/// Held compactly, as there is an entry for every cached object: keys by their hash (a
/// lookup re-checks the key of what it finds, so two keys that share a hash are told
/// apart), names without uid or resourceVersion (the store has those).
pub struct Index<K: Resource<DynamicType = ()>> {
    key: fn(&K) -> Option<String>,
    hasher: RandomState,
    state: Mutex<Relisting>,
}

impl<K: Resource<DynamicType = ()>> std::fmt::Debug for Index<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index").finish_non_exhaustive()
    }
}

/// An object's namespace (if any) and name.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Name {
    namespace: Option<Box<str>>,
    name: Box<str>,
}

impl Name {
    fn of(meta: &kube::core::ObjectMeta) -> Self {
        Self {
            namespace: meta.namespace.as_deref().map(Box::from),
            name: Box::from(meta.name.as_deref().unwrap_or_default()),
        }
    }

    fn reference<K: Resource<DynamicType = ()>>(&self) -> ObjectRef<K> {
        let reference = ObjectRef::new(&self.name);
        match &self.namespace {
            Some(namespace) => reference.within(namespace),
            None => reference,
        }
    }
}

/// The entries in use, and those a relist is gathering to replace them
/// (the store swaps its contents at the end of a relist too).
struct Relisting {
    live: Entries,
    next: Option<Entries>,
}

/// Most keys name one object (a request id) or a few (a requester's requests), so each key's
/// names are a plain list.
#[derive(Default)]
struct Entries {
    by_key: HashMap<u64, Vec<Name>>,
    key_of: HashMap<Name, u64>,
}

impl Entries {
    fn remove(&mut self, object: &Name) {
        if let Some(old) = self.key_of.remove(object)
            && let Some(names) = self.by_key.get_mut(&old)
        {
            names.retain(|name| name != object);
            if names.is_empty() {
                self.by_key.remove(&old);
            }
        }
    }

    fn insert(&mut self, object: Name, key: Option<u64>) {
        if self.key_of.get(&object) == key.as_ref() {
            return;
        }
        self.remove(&object);
        if let Some(key) = key {
            self.by_key
                .entry(key)
                .or_insert_with(|| Vec::with_capacity(1))
                .push(object.clone());
            self.key_of.insert(object, key);
        }
    }
}

impl<K> Index<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    /// An index of the objects by `key` (`None`: not indexed).
    pub fn new(key: fn(&K) -> Option<String>) -> Self {
        Self {
            key,
            hasher: RandomState::new(),
            state: Mutex::new(Relisting {
                live: Entries::default(),
                next: None,
            }),
        }
    }

    fn hashed_key(&self, object: &K) -> Option<u64> {
        (self.key)(object).map(|key| self.hasher.hash_one(key))
    }

    /// The cached objects whose key is `key`.
    pub fn get(&self, key: &str, store: &Store<K>) -> Vec<std::sync::Arc<K>> {
        let names: Vec<Name> = {
            let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            let hashed = self.hasher.hash_one(key);
            state.live.by_key.get(&hashed).cloned().unwrap_or_default()
        };
        // The store is written before the index: an object changed a moment
        // ago may be listed under its old key. Only what matches now counts
        // (and a key that shares the hash never does).
        names
            .iter()
            .filter_map(|name| store.get(&name.reference()))
            .filter(|object| (self.key)(object).as_deref() == Some(key))
            .collect()
    }

    /// An object was added or changed.
    pub fn applied(&self, object: &K) {
        let key = self.hashed_key(object);
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.live.insert(Name::of(object.meta()), key);
    }

    /// An object was deleted.
    pub fn deleted(&self, object: &K) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.live.remove(&Name::of(object.meta()));
    }

    /// A relist begins: what it lists replaces everything at its end.
    pub fn relist_started(&self) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.next = Some(Entries::default());
    }

    /// An object of the relist.
    pub fn relisted(&self, object: &K) {
        let key = self.hashed_key(object);
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(next) = state.next.as_mut() {
            next.insert(Name::of(object.meta()), key);
        }
    }

    /// The relist is complete.
    pub fn relist_done(&self) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(next) = state.next.take() {
            state.live = next;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::rbac::v1::RoleBinding;
    use kube::runtime::reflector;
    use kube::runtime::watcher::Event;

    fn binding(name: &str, id: Option<&str>) -> RoleBinding {
        let mut binding = RoleBinding::default();
        binding.metadata.name = Some(name.into());
        binding.metadata.namespace = Some("prod".into());
        binding.metadata.labels =
            id.map(|id| [("kubepam.io/request-id".to_owned(), id.to_owned())].into());
        binding
    }

    fn by_request(binding: &RoleBinding) -> Option<String> {
        binding
            .metadata
            .labels
            .as_ref()?
            .get("kubepam.io/request-id")
            .cloned()
    }

    fn names(found: &[std::sync::Arc<RoleBinding>]) -> Vec<String> {
        let mut names: Vec<String> = found
            .iter()
            .map(|b| b.metadata.name.clone().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn follows_changes_deletions_and_relists_like_the_store() {
        let (store, mut writer) = reflector::store::<RoleBinding>();
        let index = Index::new(by_request);
        let apply = |writer: &mut reflector::store::Writer<RoleBinding>, b: RoleBinding| {
            writer.apply_watcher_event(&Event::Apply(b.clone()));
            index.applied(&b);
        };
        apply(&mut writer, binding("a", Some("r1")));
        apply(&mut writer, binding("b", Some("r1")));
        apply(&mut writer, binding("c", Some("r2")));
        apply(&mut writer, binding("d", None));
        assert_eq!(names(&index.get("r1", &store)), ["a", "b"]);
        assert_eq!(names(&index.get("r2", &store)), ["c"]);
        // A key that changes moves the object.
        apply(&mut writer, binding("b", Some("r2")));
        assert_eq!(names(&index.get("r1", &store)), ["a"]);
        assert_eq!(names(&index.get("r2", &store)), ["b", "c"]);
        writer.apply_watcher_event(&Event::Delete(binding("a", Some("r1"))));
        index.deleted(&binding("a", Some("r1")));
        assert!(index.get("r1", &store).is_empty());
        // A relist replaces everything at its end: "c" was deleted while
        // the watch was down.
        index.relist_started();
        writer.apply_watcher_event(&Event::Init);
        for b in [binding("b", Some("r2")), binding("e", Some("r3"))] {
            writer.apply_watcher_event(&Event::InitApply(b.clone()));
            index.relisted(&b);
        }
        assert_eq!(names(&index.get("r2", &store)), ["b", "c"], "until the end");
        writer.apply_watcher_event(&Event::InitDone);
        index.relist_done();
        assert_eq!(names(&index.get("r2", &store)), ["b"]);
        assert_eq!(names(&index.get("r3", &store)), ["e"]);
    }
}
