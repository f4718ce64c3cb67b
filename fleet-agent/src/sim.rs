//! A simulated cluster: an in-memory [`ClusterBackend`] for tests and the
//! fleet simulator. It is a test double of the *cluster* only; the agent that
//! runs over it is the real one.
//!
//! What it models:
//! - objects keyed by (apiVersion, kind, namespace, name), with a
//!   `resourceVersion` that is bumped on every change and a `generation` bumped
//!   on every change outside `metadata`;
//! - server-side apply for one field manager: fields the agent applied before
//!   and no longer applies are removed, everything else it applies is set, and
//!   fields set by others (see [`SimCluster::mutate`]) are kept unless the
//!   agent applies them (force);
//! - Deployments and DaemonSets that become ready `ready_after` their last
//!   spec change (a DaemonSet wants one pod per node), unless broken with
//!   [`SimCluster::break_workload`];
//! - the parts of istiod the agent waits for: a waypoint `Gateway` gets its
//!   Deployment (replicas from its parameters ConfigMap) when applied, and
//!   `Programmed=True` `ready_after` its last change; a validating webhook
//!   configuration gets its `caBundle` `ready_after` its last change — unless
//!   withheld with [`SimCluster::withhold_programmed`]. Deleting a waypoint
//!   `Gateway` deletes its Deployment (owner references);
//! - field managers as far as the ownership rules need them: objects
//!   [`SimCluster::insert`]ed by someone else carry that manager
//!   ([`SimCluster::insert_managed_by`]), and the agent's applies its own;
//! - injected apply failures with an API-style message
//!   ([`SimCluster::fail_apply`]);
//! - Secrets, so that a new agent over the same `SimCluster` is a restart that
//!   finds its credential.
//!
//! What it does not model: namespace existence (objects may be applied into a
//! namespace that was never created), admission, CRD schemas, conflicts of
//! non-forced applies, and garbage collection other than of waypoints.
//!
//! Cheap by design (one mutex, a few dozen small JSON values): the fleet
//! simulator runs thousands in one process. Clones share the same cluster.
//! Time is [`tokio::time::Instant`], so a paused Tokio clock drives it.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use meshfleet_model::{
    COMPONENT_LABEL, ClusterFacts, FIELD_MANAGER, MANAGED_BY_LABEL, MANAGED_BY_VALUE,
};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::backend::{
    Applied, ClusterBackend, MANAGED_KINDS, ObjectRef, OwnedObject, SecretData, WorkloadStatus,
};
use crate::error::{Error, Result};
use crate::ownership::{LiveCrd, NamespaceObject};
use crate::render::{CLUSTER_ID_LABEL, LabelledCrd, Object, VERSION_LABEL, WAYPOINT_CLASS};

/// Label istiod puts on what it builds for a Gateway.
const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";

/// How a simulated cluster behaves.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// How long a Deployment/DaemonSet takes to become ready after its spec changed.
    pub ready_after: Duration,
    /// Number of nodes (pods per DaemonSet).
    pub nodes: u32,
    /// Reported as the Kubernetes version fact, e.g. `v1.33.1`.
    pub kubernetes_version: String,
    /// Operations kept for [`SimCluster::ops`], oldest dropped first (0:
    /// none; the fleet simulators, which never read them, keep none).
    pub op_log: usize,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            ready_after: Duration::from_millis(20),
            nodes: 3,
            kubernetes_version: "v1.33.1".to_string(),
            op_log: 1024,
        }
    }
}

/// Something the agent did to the simulated cluster, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SimOp {
    Apply { reference: ObjectRef, changed: bool },
    Delete { reference: ObjectRef },
}

impl SimOp {
    pub fn reference(&self) -> &ObjectRef {
        match self {
            SimOp::Apply { reference, .. } | SimOp::Delete { reference } => reference,
        }
    }
}

/// One object. Kept as compact JSON text (serde_json sorts keys, so equal
/// objects have equal text) rather than as a `Value` tree, which is several
/// times larger, and that text shared between clusters (see [`Text`]):
/// thousands of simulated clusters share one process.
#[derive(Debug)]
struct SimObject {
    /// The live object, without `resourceVersion`/`generation` (kept below).
    /// Equal to `applied` in the steady state, and then the same allocation.
    live: Text,
    /// What the agent last applied (its "managed fields"), if it ever did.
    applied: Option<Text>,
    /// What is read of the live object without parsing it.
    ix: Indexed,
    /// The field manager of whoever else created or changed it.
    other_manager: Option<Box<str>>,
    resource_version: u64,
    generation: i64,
    spec_changed_at: Instant,
}

/// What the simulator reads of a live object often, kept beside its text so
/// that reading it parses nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Indexed {
    /// Carries the managed-by label; its component label.
    owned: bool,
    component: Option<Box<str>>,
    /// What a workload status reads: `spec.replicas` and the version label.
    replicas: Option<i64>,
    version: Option<Box<str>>,
    /// [`spec_hash`]: a change outside `metadata` and `status` bumps
    /// `generation`.
    spec_hash: u64,
}

impl Indexed {
    fn of(live: &Value) -> Self {
        Indexed {
            owned: label(live, MANAGED_BY_LABEL) == Some(MANAGED_BY_VALUE),
            component: label(live, COMPONENT_LABEL).map(Into::into),
            replicas: live.pointer("/spec/replicas").and_then(Value::as_i64),
            version: label(live, VERSION_LABEL).map(Into::into),
            spec_hash: spec_hash(live),
        }
    }
}

/// An object the agent applies, as the simulator stores it: its text, and
/// its `Value` and what is indexed of it once they were made (an apply of
/// an unchanged object, every pass's most common one, needs the text only).
struct Prepared {
    value: Option<Value>,
    text: Text,
    ix: Option<Indexed>,
}

impl Prepared {
    fn of(object: &Object) -> Result<Self> {
        if let Object::CustomResourceDefinition(crd) = object {
            return crd_prepared(crd);
        }
        let value = object.to_json()?;
        Ok(Prepared {
            text: Text::of(&value),
            ix: None,
            value: Some(value),
        })
    }

    /// The object as JSON (made now for a CRD taken from [`crd_prepared`]).
    fn value(&mut self, object: &Object) -> Result<&Value> {
        let value = match self.value.take() {
            Some(value) => value,
            None => object.to_json()?,
        };
        Ok(self.value.insert(value))
    }

    /// What is indexed of the object (made now unless prepared with it).
    fn ix(&mut self, object: &Object) -> Result<Indexed> {
        if let Some(ix) = &self.ix {
            return Ok(ix.clone());
        }
        let ix = Indexed::of(self.value(object)?);
        self.ix = Some(ix.clone());
        Ok(ix)
    }
}

/// A bundle CRD with the agent's labels, prepared once per CRD and set of
/// labels for every simulated cluster: the CRDs (their schemas are most of
/// an install's bytes) are the same for every cluster on a version but for
/// the cluster-id label, which a [`Text`] factors out anyway. Keyed by the
/// bundle CRD's allocation (see [`WeakMemo`]) and the labels with the id
/// marked.
fn crd_prepared(crd: &LabelledCrd) -> Result<Prepared> {
    type Crd = k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    static MEMO: WeakMemo<Crd, BTreeMap<String, String>, (Arc<str>, Indexed)> = WeakMemo::new();
    let id = crd
        .labels
        .get(CLUSTER_ID_LABEL)
        .filter(|id| !id.is_empty())
        .map(|id| intern(id));
    let mut marked = crd.labels.clone();
    if id.is_some()
        && let Some(v) = marked.get_mut(CLUSTER_ID_LABEL)
    {
        *v = ID_MARK.to_string();
    }
    if let Some((shape, ix)) = MEMO.get(&crd.crd, &marked) {
        return Ok(Prepared {
            value: None,
            text: Text { shape, id },
            ix: Some(ix),
        });
    }
    let value = crd.to_json()?;
    let text = Text::of(&value);
    let ix = Indexed::of(&value);
    MEMO.insert(&crd.crd, marked, (text.shape.clone(), ix.clone()));
    Ok(Prepared {
        value: Some(value),
        text,
        ix: Some(ix),
    })
}

/// A process-wide memo of what is derived from the contents of an `Arc`
/// (and a key `K`), shared by every simulated cluster. Entries are kept per
/// allocation, found by its address and held weakly: they are answered only
/// while that very allocation lives, so a dropped one's entries are never
/// taken for a new allocation at the same address. The entries of dropped
/// allocations are swept once 4,096 allocations have entries.
struct WeakMemo<T: ?Sized, K, V> {
    map: std::sync::OnceLock<Mutex<WeakMemoMap<T, K, V>>>,
}

type WeakMemoMap<T, K, V> = HashMap<usize, (std::sync::Weak<T>, HashMap<K, V>)>;

impl<T: ?Sized, K: std::hash::Hash + Eq, V: Clone> WeakMemo<T, K, V> {
    const fn new() -> Self {
        WeakMemo {
            map: std::sync::OnceLock::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, WeakMemoMap<T, K, V>> {
        self.map
            .get_or_init(Mutex::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn address(of: &Arc<T>) -> usize {
        Arc::as_ptr(of) as *const u8 as usize
    }

    /// Whether the entry's allocation is `of` itself, still alive.
    fn holds(weak: &std::sync::Weak<T>, of: &Arc<T>) -> bool {
        std::ptr::eq(weak.as_ptr() as *const u8, Arc::as_ptr(of) as *const u8)
            && weak.strong_count() > 0
    }

    fn get(&self, of: &Arc<T>, key: &K) -> Option<V> {
        let map = self.lock();
        let (weak, values) = map.get(&Self::address(of))?;
        Self::holds(weak, of).then(|| values.get(key).cloned())?
    }

    fn insert(&self, of: &Arc<T>, key: K, value: V) {
        let mut map = self.lock();
        if map.len() >= 4096 {
            map.retain(|_, (weak, _)| weak.strong_count() > 0);
        }
        let entry = map
            .entry(Self::address(of))
            .or_insert_with(|| (Arc::downgrade(of), HashMap::new()));
        if !Self::holds(&entry.0, of) {
            *entry = (Arc::downgrade(of), HashMap::new());
        }
        entry.1.insert(key, value);
    }
}

/// An object's compact JSON text, stored as its *shape* (the text with every
/// occurrence of the object's own cluster-id label value replaced by
/// [`ID_MARK`]) and that id. Every agent labels every object with its
/// cluster's id, so this is what makes the same object of two clusters the
/// same bytes: shapes and ids are interned process-wide, and ten thousand
/// clusters on one version hold one copy of each object's text.
///
/// The id is read off the text itself, so two texts are equal exactly when
/// their shapes and ids are; serde_json escapes control characters, so the
/// mark never occurs in a text and expanding the shape gives the text back.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Text {
    shape: Arc<str>,
    id: Option<Arc<str>>,
}

/// Stands for the cluster id in a [`Text`]'s shape.
const ID_MARK: &str = "\u{1}";

impl Text {
    fn of(v: &Value) -> Text {
        let text = v.to_string();
        match label(v, CLUSTER_ID_LABEL).filter(|id| !id.is_empty()) {
            Some(id) => Text {
                shape: intern(&text.replace(id, ID_MARK)),
                id: Some(intern(id)),
            },
            None => Text {
                shape: intern(&text),
                id: None,
            },
        }
    }

    /// The JSON text.
    fn expand(&self) -> std::borrow::Cow<'_, str> {
        match &self.id {
            Some(id) => self.shape.replace(ID_MARK, id).into(),
            None => (*self.shape).into(),
        }
    }

    fn value(&self) -> Value {
        serde_json::from_str(&self.expand()).unwrap_or(Value::Null)
    }

    /// Makes `self` share `other`'s allocations when the two are equal.
    fn share(&mut self, other: &Text) {
        if self == other {
            self.clone_from(other);
        }
    }
}

/// The process-wide set of [`Text`] parts. Parts no object holds any more
/// are dropped whenever the set has doubled since the last sweep.
fn intern(s: &str) -> Arc<str> {
    struct Interned {
        set: HashSet<Arc<str>>,
        sweep_at: usize,
    }
    static INTERNED: std::sync::OnceLock<Mutex<Interned>> = std::sync::OnceLock::new();
    let mut i = INTERNED
        .get_or_init(|| {
            Mutex::new(Interned {
                set: HashSet::new(),
                sweep_at: 1024,
            })
        })
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(a) = i.set.get(s) {
        return a.clone();
    }
    if i.set.len() >= i.sweep_at {
        i.set.retain(|a| Arc::strong_count(a) > 1);
        i.sweep_at = (i.set.len() * 2).max(1024);
    }
    let a: Arc<str> = Arc::from(s);
    i.set.insert(a.clone());
    a
}

/// What the CRD ownership rules read of a live CRD: no `Value` tree of the
/// schemas.
#[derive(serde::Deserialize, Default, Clone)]
#[serde(default)]
struct CrdHead {
    metadata: CrdMeta,
    spec: CrdSpec,
}

#[derive(serde::Deserialize, Default, Clone)]
#[serde(default)]
struct CrdMeta {
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
}

#[derive(serde::Deserialize, Default, Clone)]
#[serde(default)]
struct CrdSpec {
    group: String,
}

impl CrdHead {
    /// `from` → `to` in every label and annotation value.
    fn swap(mut self, from: &str, to: &str) -> CrdHead {
        let m = &mut self.metadata;
        for v in m.labels.values_mut().chain(m.annotations.values_mut()) {
            if v.contains(from) {
                *v = v.replace(from, to);
            }
        }
        self
    }
}

/// A live CRD's [`CrdHead`], parsed once per [`Text`] shape for every
/// simulated cluster (a CRD's text is mostly its schema, and every agent
/// lists its CRDs on every pass): remembered with the cluster id marked, as
/// the shape has it, and given back with this text's id. Keyed by the
/// shape's allocation (see [`WeakMemo`]).
fn crd_head(text: &Text) -> CrdHead {
    static MEMO: WeakMemo<str, (), CrdHead> = WeakMemo::new();
    let marked = match MEMO.get(&text.shape, &()) {
        Some(head) => head,
        None => {
            let head: CrdHead = serde_json::from_str(&text.expand()).unwrap_or_default();
            let marked = match &text.id {
                Some(id) => head.swap(id, ID_MARK),
                None => head,
            };
            MEMO.insert(&text.shape, (), marked.clone());
            marked
        }
    };
    match &text.id {
        Some(id) => marked.swap(ID_MARK, id),
        None => marked,
    }
}

impl SimObject {
    /// An object someone else created (`live`).
    fn new(live: &Value, rv: u64) -> Self {
        Self::applied(Text::of(live), Indexed::of(live), None, rv)
    }

    /// An object with the text `live` (what is indexed of it: `ix`), applied
    /// by the agent when `applied` is that text.
    fn applied(live: Text, ix: Indexed, applied: Option<Text>, rv: u64) -> Self {
        SimObject {
            live,
            applied,
            ix,
            other_manager: None,
            resource_version: rv,
            generation: 1,
            spec_changed_at: Instant::now(),
        }
    }

    fn value(&self) -> Value {
        self.live.value()
    }

    /// Replaces the live object with `after` (whose text is `text`); bumps
    /// `resourceVersion` (and `generation` when more than metadata changed).
    /// Returns whether it changed.
    fn replace(&mut self, after: &Value, text: Text, rv: u64) -> bool {
        self.replace_indexed(text, Indexed::of(after), rv)
    }

    /// [`SimObject::replace`] with what is indexed of the new object at hand.
    fn replace_indexed(&mut self, text: Text, ix: Indexed, rv: u64) -> bool {
        if text == self.live {
            return false;
        }
        self.live = text;
        self.resource_version = rv;
        if ix.spec_hash != self.ix.spec_hash {
            self.generation += 1;
            self.spec_changed_at = Instant::now();
        }
        self.ix = ix;
        true
    }
}

#[derive(Debug)]
struct Inner {
    opts: SimOptions,
    objects: BTreeMap<ObjectRef, SimObject>,
    secrets: BTreeMap<(String, String), SecretData>,
    apply_failures: Vec<(String, String, String)>,
    broken: HashMap<String, String>,
    withheld: HashSet<String>,
    next_rv: u64,
    ops: VecDeque<SimOp>,
    unreachable: Option<String>,
}

/// A simulated cluster. `Clone` shares it: hold a handle in the test while the
/// agent runs over another.
#[derive(Debug, Clone)]
pub struct SimCluster {
    inner: Arc<Mutex<Inner>>,
}

impl Default for SimCluster {
    fn default() -> Self {
        Self::new(SimOptions::default())
    }
}

impl SimCluster {
    pub fn new(opts: SimOptions) -> Self {
        SimCluster {
            inner: Arc::new(Mutex::new(Inner {
                opts,
                objects: BTreeMap::new(),
                secrets: BTreeMap::new(),
                apply_failures: Vec::new(),
                broken: HashMap::new(),
                withheld: HashSet::new(),
                next_rv: 1,
                ops: VecDeque::new(),
                unreachable: None,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps half-updated
        // in a way that matters to a test double; keep going.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every later apply of an object of `kind` named `name` fails with an
    /// API-style error (422, `message`) until [`SimCluster::clear_failures`].
    pub fn fail_apply(&self, kind: &str, name: &str, message: &str) {
        self.lock()
            .apply_failures
            .push((kind.to_string(), name.to_string(), message.to_string()));
    }

    pub fn clear_failures(&self) {
        self.lock().apply_failures.clear();
    }

    /// The Deployment or DaemonSet `name` (any namespace) never becomes ready;
    /// its status carries `message`.
    pub fn break_workload(&self, name: &str, message: &str) {
        self.lock()
            .broken
            .insert(name.to_string(), message.to_string());
    }

    pub fn heal_workload(&self, name: &str) {
        self.lock().broken.remove(name);
    }

    /// The Gateway or webhook configuration `name` (any namespace) is never
    /// programmed by the simulated istiod: no `Programmed=True`, no
    /// `caBundle`.
    pub fn withhold_programmed(&self, name: &str) {
        self.lock().withheld.insert(name.to_string());
    }

    pub fn grant_programmed(&self, name: &str) {
        self.lock().withheld.remove(name);
    }

    /// Every call fails as if the API server were down (`None` heals it).
    pub fn set_unreachable(&self, message: Option<&str>) {
        self.lock().unreachable = message.map(str::to_string);
    }

    pub fn set_nodes(&self, nodes: u32) {
        self.lock().opts.nodes = nodes;
    }

    /// Changes an object behind the agent's back (someone `kubectl edit`s it).
    /// Returns false if there is no such object.
    pub fn mutate(&self, reference: &ObjectRef, f: impl FnOnce(&mut Value)) -> bool {
        let mut inner = self.lock();
        let rv = inner.next_rv;
        let Some(obj) = inner.objects.get_mut(reference) else {
            return false;
        };
        let mut after = obj.value();
        f(&mut after);
        let text = Text::of(&after);
        if obj.replace(&after, text, rv) {
            inner.next_rv += 1;
        }
        true
    }

    /// The live object with `metadata.resourceVersion` and `metadata.generation`.
    pub fn get(&self, reference: &ObjectRef) -> Option<Value> {
        self.lock().objects.get(reference).map(render_live)
    }

    /// Finds an object by kind, namespace and name (any apiVersion).
    pub fn find(&self, kind: &str, namespace: Option<&str>, name: &str) -> Option<Value> {
        self.lock()
            .objects
            .iter()
            .find(|(r, _)| r.kind == kind && r.namespace.as_deref() == namespace && r.name == name)
            .map(|(_, o)| render_live(o))
    }

    /// Every object, sorted by reference.
    pub fn snapshot(&self) -> BTreeMap<ObjectRef, Value> {
        self.lock()
            .objects
            .iter()
            .map(|(r, o)| (r.clone(), render_live(o)))
            .collect()
    }

    /// Creates an object as someone else would (field manager `kubectl`;
    /// not owned by the agent unless it carries the managed-by label).
    pub fn insert(&self, reference: ObjectRef, object: Value) {
        self.insert_managed_by(reference, object, "kubectl");
    }

    /// Creates an object as the field manager `manager` would.
    pub fn insert_managed_by(&self, reference: ObjectRef, object: Value, manager: &str) {
        let mut inner = self.lock();
        let rv = inner.next_rv;
        inner.next_rv += 1;
        let mut o = SimObject::new(&object, rv);
        o.other_manager = Some(manager.into());
        inner.objects.insert(reference, o);
    }

    /// What the agent did, oldest first (the last [`SimOptions::op_log`] operations).
    pub fn ops(&self) -> Vec<SimOp> {
        self.lock().ops.iter().cloned().collect()
    }

    pub fn clear_ops(&self) {
        self.lock().ops.clear();
    }

    pub fn secret(&self, namespace: &str, name: &str) -> Option<SecretData> {
        self.lock()
            .secrets
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    pub fn set_secret(&self, namespace: &str, name: &str, data: SecretData) {
        self.lock()
            .secrets
            .insert((namespace.to_string(), name.to_string()), data);
    }

    pub fn delete_secret(&self, namespace: &str, name: &str) {
        self.lock()
            .secrets
            .remove(&(namespace.to_string(), name.to_string()));
    }

    /// Seeds the bootstrap Secret the install manifests create.
    pub fn set_bootstrap(&self, namespace: &str, name: &str, token: &str, url: Option<&str>) {
        let mut data = SecretData::new();
        data.insert("token".into(), token.into());
        if let Some(url) = url {
            data.insert("url".into(), url.into());
        }
        self.set_secret(namespace, name, data);
    }

    fn check_reachable(&self) -> Result<()> {
        match &self.lock().unreachable {
            Some(m) => Err(Error::Kube {
                code: None,
                message: m.clone(),
            }),
            None => Ok(()),
        }
    }
}

/// A hash of everything but `metadata` and `status`, equal for equal
/// objects whatever the order of their keys.
fn spec_hash(v: &Value) -> u64 {
    fn hash(v: &Value, skip: &[&str]) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::hash::DefaultHasher::new();
        match v {
            Value::Null => 0u8.hash(&mut h),
            Value::Bool(b) => (1u8, b).hash(&mut h),
            Value::Number(n) => (2u8, n).hash(&mut h),
            Value::String(s) => (3u8, s).hash(&mut h),
            Value::Array(items) => {
                (4u8, items.len()).hash(&mut h);
                for item in items {
                    hash(item, &[]).hash(&mut h);
                }
            }
            Value::Object(map) => {
                // entries combined without regard to their order
                let entries = map
                    .iter()
                    .filter(|(k, _)| !skip.contains(&k.as_str()))
                    .fold(0u64, |acc, (k, v)| {
                        let mut e = std::hash::DefaultHasher::new();
                        (k, hash(v, &[])).hash(&mut e);
                        acc.wrapping_add(e.finish())
                    });
                (5u8, entries).hash(&mut h);
            }
        }
        h.finish()
    }
    hash(v, &["metadata", "status"])
}

fn render_live(o: &SimObject) -> Value {
    let mut v = o.value();
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert(
            "resourceVersion".into(),
            o.resource_version.to_string().into(),
        );
        meta.insert("generation".into(), o.generation.into());
    }
    v
}

/// Server-side apply for one manager: remove what it owned and no longer
/// applies, set what it applies, keep the rest.
fn ssa_merge(live: &mut Value, old: &Value, new: &Value) {
    match (live.as_object_mut(), new.as_object()) {
        (Some(l), Some(n)) => {
            if let Some(o) = old.as_object() {
                for (k, ov) in o {
                    if !n.contains_key(k) {
                        release(l, k, ov);
                    }
                }
            }
            for (k, nv) in n {
                let ov = old.get(k).unwrap_or(&Value::Null);
                match l.get_mut(k) {
                    Some(lv) if lv.is_object() && nv.is_object() => ssa_merge(lv, ov, nv),
                    _ => {
                        l.insert(k.clone(), nv.clone());
                    }
                }
            }
        }
        _ => *live = new.clone(),
    }
}

/// Removes from `parent[key]` what the manager owned (`owned`), keeping
/// fields others set; drops maps that end up empty.
fn release(parent: &mut serde_json::Map<String, Value>, key: &str, owned: &Value) {
    let remove = match (parent.get_mut(key), owned.as_object()) {
        (Some(Value::Object(live)), Some(owned)) => {
            for (k, ov) in owned {
                release(live, k, ov);
            }
            live.is_empty()
        }
        (Some(_), _) => true,
        (None, _) => false,
    };
    if remove {
        parent.remove(key);
    }
}

fn label<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get("metadata")?.get("labels")?.get(key)?.as_str()
}

impl ClusterBackend for SimCluster {
    async fn apply(&self, object: &Object) -> Result<Applied> {
        self.check_reachable()?;
        let reference = object.reference();
        let mut new = Prepared::of(object)?;
        let mut inner = self.lock();
        if let Some((_, _, message)) = inner
            .apply_failures
            .iter()
            .find(|(k, n, _)| *k == reference.kind && *n == reference.name)
        {
            return Err(Error::Kube {
                code: Some(422),
                message: message.clone(),
            });
        }
        let rv = inner.next_rv;
        let applied = match inner.objects.get_mut(&reference) {
            None => {
                let text = new.text.clone();
                let live = SimObject::applied(text.clone(), new.ix(object)?, Some(text), rv);
                inner.objects.insert(reference.clone(), live);
                Applied {
                    created: true,
                    changed: true,
                }
            }
            Some(obj) => {
                let changed = if obj.live == new.text {
                    // Live is exactly what is applied: nothing to merge.
                    false
                } else if obj.applied.as_ref() == Some(&obj.live) {
                    // Every live field is the agent's (nobody else changed
                    // the object since its last apply): the merge gives
                    // exactly what is applied now, so nothing is parsed.
                    obj.replace_indexed(new.text.clone(), new.ix(object)?, rv)
                } else {
                    let mut after = obj.value();
                    let old = obj.applied.as_ref().map_or(Value::Null, Text::value);
                    let value = new.value(object)?;
                    ssa_merge(&mut after, &old, value);
                    let text = if after == *value {
                        new.text.clone()
                    } else {
                        Text::of(&after)
                    };
                    obj.replace(&after, text, rv)
                };
                obj.live.share(&new.text);
                obj.applied = Some(new.text.clone());
                Applied {
                    created: false,
                    changed,
                }
            }
        };
        if applied.changed {
            inner.next_rv += 1;
        }
        if reference.kind == "Gateway" {
            let value = new.value(object)?;
            if is_waypoint(&reference, value) {
                deploy_waypoint(&mut inner, &reference, value);
            }
        }
        push_op(
            &mut inner,
            SimOp::Apply {
                reference,
                changed: applied.changed,
            },
        );
        Ok(applied)
    }

    async fn delete(&self, reference: &ObjectRef) -> Result<()> {
        self.check_reachable()?;
        let mut inner = self.lock();
        if let Some(gone) = inner.objects.remove(reference)
            && is_gateway(reference)
            && is_waypoint(reference, &gone.value())
        {
            // Owner references: what istiod built for the Gateway goes too.
            let deployment = ObjectRef::deployment(
                reference.namespace.as_deref().unwrap_or_default(),
                &reference.name,
            );
            if inner.objects.get(&deployment).is_some_and(|d| {
                label(&d.value(), GATEWAY_NAME_LABEL) == Some(reference.name.as_str())
            }) {
                inner.objects.remove(&deployment);
            }
        }
        if reference.kind == "Namespace" {
            // Deleting a namespace deletes what is in it.
            inner
                .objects
                .retain(|r, _| r.namespace.as_deref() != Some(reference.name.as_str()));
        }
        push_op(
            &mut inner,
            SimOp::Delete {
                reference: reference.clone(),
            },
        );
        Ok(())
    }

    async fn list_owned(&self) -> Result<Vec<OwnedObject>> {
        self.check_reachable()?;
        let inner = self.lock();
        Ok(inner
            .objects
            .iter()
            .filter(|(r, o)| {
                o.ix.owned
                    && MANAGED_KINDS
                        .iter()
                        .any(|k| k.api_version == r.api_version && k.kind == r.kind)
            })
            .map(|(r, o)| OwnedObject {
                reference: r.clone(),
                component: o.ix.component.as_deref().map(str::to_string),
            })
            .collect())
    }

    async fn workload_status(&self, reference: &ObjectRef) -> Result<Option<WorkloadStatus>> {
        self.check_reachable()?;
        let inner = self.lock();
        let Some(obj) = inner.objects.get(reference) else {
            return Ok(None);
        };
        let desired = if reference.kind == "DaemonSet" {
            i32::try_from(inner.opts.nodes).unwrap_or(i32::MAX)
        } else {
            obj.ix
                .replicas
                .and_then(|r| i32::try_from(r).ok())
                .unwrap_or(1)
        };
        let version = obj.ix.version.as_deref().map(str::to_string);
        let mut status = WorkloadStatus {
            generation: obj.generation,
            observed_generation: obj.generation,
            desired,
            ready: 0,
            updated: 0,
            version,
            message: None,
        };
        if let Some(message) = inner.broken.get(&reference.name) {
            status.updated = desired;
            status.message = Some(message.clone());
        } else if obj.spec_changed_at.elapsed() >= inner.opts.ready_after {
            status.updated = desired;
            status.ready = desired;
        }
        Ok(Some(status))
    }

    async fn get_secret(&self, namespace: &str, name: &str) -> Result<Option<SecretData>> {
        self.check_reachable()?;
        Ok(self.secret(namespace, name))
    }

    async fn put_secret(&self, namespace: &str, name: &str, data: SecretData) -> Result<()> {
        self.check_reachable()?;
        self.set_secret(namespace, name, data);
        Ok(())
    }

    async fn get_object(&self, reference: &ObjectRef) -> Result<Option<Value>> {
        self.check_reachable()?;
        let inner = self.lock();
        let Some(obj) = inner.objects.get(reference) else {
            return Ok(None);
        };
        let mut live = render_live(obj);
        let programmed = !inner.withheld.contains(&reference.name)
            && obj.spec_changed_at.elapsed() >= inner.opts.ready_after;
        if is_waypoint(reference, &live) {
            let (status, reason) = if programmed {
                ("True", "Programmed")
            } else {
                ("False", "Pending")
            };
            live["status"] = json!({ "conditions": [
                { "type": "Accepted", "status": "True", "reason": "Accepted" },
                { "type": "Programmed", "status": status, "reason": reason,
                  "message": if programmed { "Resource programmed" } else { "Waiting for the waypoint deployment" } }
            ] });
        }
        if reference.kind == "ValidatingWebhookConfiguration"
            && programmed
            && let Some(hooks) = live.get_mut("webhooks").and_then(Value::as_array_mut)
        {
            for h in hooks {
                h["clientConfig"]["caBundle"] = "c2ltdWxhdGVkIENB".into();
            }
        }
        Ok(Some(live))
    }

    async fn list_crds(&self) -> Result<Vec<LiveCrd>> {
        self.check_reachable()?;
        let inner = self.lock();
        Ok(inner
            .objects
            .iter()
            .filter(|(r, _)| r.kind == "CustomResourceDefinition")
            .map(|(r, o)| {
                let head = crd_head(&o.live);
                let mut crd = LiveCrd::named(&r.name);
                if !head.spec.group.is_empty() {
                    crd.group = head.spec.group;
                }
                crd.labels = head.metadata.labels;
                crd.annotations = head.metadata.annotations;
                if o.applied.is_some() {
                    crd.managers.push(FIELD_MANAGER.to_string());
                }
                crd.managers
                    .extend(o.other_manager.as_deref().map(str::to_string));
                crd
            })
            .collect())
    }

    async fn foreign_custom_resources(&self, crd: &str, limit: u32) -> Result<Vec<ObjectRef>> {
        self.check_reachable()?;
        let inner = self.lock();
        let Some(definition) = inner
            .objects
            .iter()
            .find(|(r, _)| r.kind == "CustomResourceDefinition" && r.name == crd)
            .map(|(_, o)| o.value())
        else {
            return Ok(Vec::new());
        };
        let group = definition
            .pointer("/spec/group")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| LiveCrd::named(crd).group);
        // A CRD inserted by a test may carry no `names`: its plural is the
        // first label of its name, and objects are matched on plural or kind.
        let kind = definition
            .pointer("/spec/names/kind")
            .and_then(Value::as_str)
            .map(str::to_string);
        let plural = crd.split('.').next().unwrap_or_default();
        Ok(inner
            .objects
            .iter()
            .filter(|(r, _)| r.api_version.split_once('/').map(|(g, _)| g) == Some(group.as_str()))
            .filter(|(r, _)| match &kind {
                Some(k) => &r.kind == k,
                None => format!("{}s", r.kind.to_ascii_lowercase()) == plural,
            })
            .filter(|(_, o)| !o.ix.owned)
            .take(limit as usize)
            .map(|(r, _)| r.clone())
            .collect())
    }

    async fn namespace_contents(&self, namespace: &str) -> Result<Vec<NamespaceObject>> {
        self.check_reachable()?;
        let inner = self.lock();
        Ok(inner
            .objects
            .iter()
            .filter(|(r, _)| r.namespace.as_deref() == Some(namespace))
            .map(|(r, o)| NamespaceObject {
                reference: r.clone(),
                labels: string_map(o.value().pointer("/metadata/labels")),
            })
            .collect())
    }

    async fn facts(&self) -> Result<ClusterFacts> {
        self.check_reachable()?;
        let inner = self.lock();
        Ok(ClusterFacts {
            kubernetes_version: Some(inner.opts.kubernetes_version.clone()),
            node_count: Some(inner.opts.nodes),
            agent_version: None,
            platform: Some("simulated".to_string()),
        })
    }
}

fn string_map(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `reference` is a Gateway API Gateway (which may be a waypoint):
/// checked before an object is parsed to tell.
fn is_gateway(reference: &ObjectRef) -> bool {
    reference.kind == "Gateway"
        && reference
            .api_version
            .starts_with("gateway.networking.k8s.io/")
}

fn is_waypoint(reference: &ObjectRef, object: &Value) -> bool {
    is_gateway(reference)
        && object
            .pointer("/spec/gatewayClassName")
            .and_then(Value::as_str)
            == Some(WAYPOINT_CLASS)
}

/// What istiod's gateway deployment controller does for a waypoint: a
/// Deployment named after the Gateway, its replicas from the parameters
/// ConfigMap's `deployment` overlay.
fn deploy_waypoint(inner: &mut Inner, gateway: &ObjectRef, object: &Value) {
    let ns = gateway.namespace.clone().unwrap_or_default();
    let replicas = object
        .pointer("/spec/infrastructure/parametersRef/name")
        .and_then(Value::as_str)
        .and_then(|params| {
            let cm = inner
                .objects
                .get(&ObjectRef::new("v1", "ConfigMap", Some(&ns), params))?
                .value();
            let overlay: Value =
                serde_json::from_str(cm.pointer("/data/deployment")?.as_str()?).ok()?;
            overlay.pointer("/spec/replicas")?.as_i64()
        })
        .unwrap_or(1);
    let reference = ObjectRef::deployment(&ns, &gateway.name);
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": { "name": gateway.name, "namespace": ns,
                      "labels": { GATEWAY_NAME_LABEL: gateway.name, "gateway.istio.io/managed": "istio.io-mesh-controller" } },
        "spec": { "replicas": replicas, "selector": { "matchLabels": { GATEWAY_NAME_LABEL: gateway.name } } }
    });
    let rv = inner.next_rv;
    match inner.objects.get_mut(&reference) {
        Some(existing) => {
            if existing.replace(&deployment, Text::of(&deployment), rv) {
                inner.next_rv += 1;
            }
        }
        None => {
            inner.next_rv += 1;
            let mut o = SimObject::new(&deployment, rv);
            o.other_manager = Some("istiod".into());
            inner.objects.insert(reference, o);
        }
    }
}

fn push_op(inner: &mut Inner, op: SimOp) {
    if inner.opts.op_log == 0 {
        return;
    }
    if inner.ops.len() >= inner.opts.op_log {
        inner.ops.pop_front();
    }
    inner.ops.push_back(op);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::{bare_namespace, render};
    use crate::testing::desired;

    #[tokio::test]
    async fn apply_is_idempotent_and_mutations_are_reverted() {
        let sim = SimCluster::default();
        let steps = render(&desired("1.28.2")).unwrap();
        let dep = steps[1]
            .objects
            .iter()
            .find(|o| o.reference().kind == "Deployment")
            .unwrap();
        assert!(sim.apply(dep).await.unwrap().created);
        assert!(!sim.apply(dep).await.unwrap().changed);
        let r = dep.reference();
        sim.mutate(&r, |v| v["spec"]["replicas"] = 7.into());
        sim.mutate(&r, |v| {
            v["metadata"]["annotations"] = serde_json::json!({"someone": "else"})
        });
        assert!(sim.apply(dep).await.unwrap().changed);
        let live = sim.get(&r).unwrap();
        assert_eq!(live["spec"]["replicas"], 2);
        // Fields owned by others are kept.
        assert_eq!(live["metadata"]["annotations"]["someone"], "else");
        assert!(!sim.apply(dep).await.unwrap().changed);
    }

    #[tokio::test]
    async fn an_upgrade_replaces_an_untouched_object_whole_and_bumps_its_generation_once() {
        let sim = SimCluster::default();
        // ztunnel's DaemonSet: one object across versions (istiod's
        // Deployment is named after its revision)
        let ztunnel = |version: &str| {
            render(&desired(version))
                .unwrap()
                .into_iter()
                .flat_map(|step| step.objects)
                .find(|o| o.reference().kind == "DaemonSet" && o.reference().name == "ztunnel")
                .unwrap()
        };
        let (old, new) = (ztunnel("1.27.1"), ztunnel("1.28.2"));
        let r = old.reference();
        assert_eq!(r, new.reference());
        sim.apply(&old).await.unwrap();
        let generation = |sim: &SimCluster| sim.get(&r).unwrap()["metadata"]["generation"].clone();
        assert_eq!(generation(&sim), 1);
        assert!(sim.apply(&new).await.unwrap().changed);
        let mut live = sim.get(&r).unwrap();
        assert_eq!(live["metadata"]["generation"], 2);
        let meta = live["metadata"].as_object_mut().unwrap();
        meta.remove("resourceVersion");
        meta.remove("generation");
        assert_eq!(live, new.to_json().unwrap());
        let status = sim.workload_status(&r).await.unwrap().unwrap();
        assert_eq!(status.version.as_deref(), Some("1.28.2"));
        // a change of metadata only leaves the generation
        sim.mutate(&r, |v| v["metadata"]["annotations"] = json!({"note": "x"}));
        assert_eq!(generation(&sim), 2);
        sim.mutate(&r, |v| v["spec"]["minReadySeconds"] = 5.into());
        assert_eq!(generation(&sim), 3);
    }

    #[tokio::test]
    async fn two_clusters_share_the_text_of_an_object_and_each_reads_back_its_own_id() {
        let (a, b) = (SimCluster::default(), SimCluster::default());
        let (mut da, mut db) = (desired("1.28.2"), desired("1.28.2"));
        da.cluster_id = uuid::Uuid::new_v4();
        db.cluster_id = uuid::Uuid::new_v4();
        let (sa, sb) = (render(&da).unwrap(), render(&db).unwrap());
        let (oa, ob) = (&sa[1].objects[0], &sb[1].objects[0]);
        a.apply(oa).await.unwrap();
        b.apply(ob).await.unwrap();
        let r = oa.reference();
        assert_eq!(r, ob.reference());
        for (sim, object, d) in [(&a, oa, &da), (&b, ob, &db)] {
            let mut live = sim.get(&r).unwrap();
            let meta = live["metadata"].as_object_mut().unwrap();
            meta.remove("resourceVersion");
            meta.remove("generation");
            assert_eq!(live, object.to_json().unwrap());
            assert_eq!(
                live["metadata"]["labels"][CLUSTER_ID_LABEL],
                d.cluster_id.to_string()
            );
        }
        let shape = |sim: &SimCluster| sim.lock().objects[&r].live.shape.clone();
        assert!(Arc::ptr_eq(&shape(&a), &shape(&b)));
        assert!(!a.apply(oa).await.unwrap().changed);
    }

    #[tokio::test]
    async fn a_crd_prepared_once_reads_back_whole_with_each_clusters_id() {
        let (a, b) = (SimCluster::default(), SimCluster::default());
        let mut d = desired("1.28.2");
        d.cluster_id = uuid::Uuid::new_v4();
        let steps = render(&d).unwrap();
        let Object::CustomResourceDefinition(crd) = &steps[0].objects[0] else {
            panic!("the first step applies CRDs");
        };
        // the same bundle CRD for another cluster: the second apply is
        // prepared from the first's text
        let mut other = crd.clone();
        other
            .labels
            .insert(CLUSTER_ID_LABEL.into(), uuid::Uuid::new_v4().to_string());
        let (oa, ob) = (
            Object::CustomResourceDefinition(crd.clone()),
            Object::CustomResourceDefinition(other),
        );
        assert!(a.apply(&oa).await.unwrap().created);
        assert!(b.apply(&ob).await.unwrap().created);
        let r = oa.reference();
        for (sim, object) in [(&a, &oa), (&b, &ob)] {
            let mut live = sim.get(&r).unwrap();
            let meta = live["metadata"].as_object_mut().unwrap();
            meta.remove("resourceVersion");
            meta.remove("generation");
            assert_eq!(live, object.to_json().unwrap());
            assert!(!sim.apply(object).await.unwrap().changed);
        }
        let owned = b.list_owned().await.unwrap();
        assert!(owned.iter().any(|o| o.reference == r));
        // the CRDs as the ownership rules read them, each with its own
        // cluster's id (the second read is from the first's parse)
        for (sim, object) in [(&a, &oa), (&b, &ob), (&a, &oa)] {
            let listed = sim.list_crds().await.unwrap();
            let crd = listed.iter().find(|c| c.name == r.name).unwrap();
            let live = object.to_json().unwrap();
            let labels: BTreeMap<String, String> =
                serde_json::from_value(live["metadata"]["labels"].clone()).unwrap();
            assert_eq!(crd.labels, labels);
            assert_eq!(crd.group, live["spec"]["group"].as_str().unwrap());
        }
    }

    #[tokio::test]
    async fn a_bare_apply_releases_the_agents_labels() {
        let sim = SimCluster::default();
        let steps = render(&desired("1.28.2")).unwrap();
        let ns = &steps[5].objects[0];
        sim.apply(ns).await.unwrap();
        let r = ns.reference();
        sim.mutate(&r, |v| v["metadata"]["labels"]["team"] = "payments".into());
        sim.apply(&bare_namespace(&r.name)).await.unwrap();
        let live = sim.get(&r).unwrap();
        let labels = live["metadata"]["labels"].as_object().unwrap();
        assert_eq!(labels.len(), 1, "{labels:?}");
        assert_eq!(labels["team"], "payments");
        assert!(
            sim.list_owned()
                .await
                .unwrap()
                .iter()
                .all(|o| o.reference != r)
        );
    }

    #[tokio::test]
    async fn workloads_become_ready_after_the_delay_unless_broken() {
        let sim = SimCluster::new(SimOptions {
            ready_after: Duration::from_millis(30),
            nodes: 4,
            ..SimOptions::default()
        });
        let steps = render(&desired("1.28.2")).unwrap();
        let ds = steps[3]
            .objects
            .iter()
            .find(|o| o.reference().kind == "DaemonSet")
            .unwrap();
        sim.apply(ds).await.unwrap();
        let r = ds.reference();
        let s = sim.workload_status(&r).await.unwrap().unwrap();
        assert!(!s.is_ready());
        tokio::time::sleep(Duration::from_millis(40)).await;
        let s = sim.workload_status(&r).await.unwrap().unwrap();
        assert!(s.is_ready());
        assert_eq!(s.desired, 4);
        assert_eq!(s.version.as_deref(), Some("1.28.2"));
        sim.break_workload("ztunnel", "CrashLoopBackOff");
        let s = sim.workload_status(&r).await.unwrap().unwrap();
        assert!(!s.is_ready());
        assert_eq!(s.message.as_deref(), Some("CrashLoopBackOff"));
    }
}
