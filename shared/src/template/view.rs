//! JSON data as templates see it, converted only where a template reads it.
//!
//! A node's context holds the whole trigger (body and headers) and the
//! output of every upstream node. Converting all of it into template values
//! for each node cost more than rendering the node's templates (callgrind at
//! webhook intake), while a template typically reads a few fields. A view
//! shares the JSON and turns into a template value only what is looked up,
//! iterated or serialized.

use std::sync::Arc;

use minijinja::value::{Enumerator, Object, ObjectRepr, Value as JinjaValue};
use serde_json::Value;

/// One step from the root of a view's JSON to the value it shows.
#[derive(Debug, Clone)]
enum Step {
    Key(Arc<str>),
    Index(usize),
}

/// A value set at a key of a root object, over whatever its JSON holds there:
/// shared JSON that is not copied into the object (the secrets, kept apart
/// from what plugins receive; a run's trigger, which can be large). Its own
/// layers set keys of `value` in turn (a trigger's `kind` and `user`).
#[derive(Debug, Clone)]
pub struct Layer {
    /// The key it sets.
    pub key: String,
    /// What the key holds (under `over`, anything not an object reads as an empty one).
    pub value: Arc<Value>,
    /// Keys of `value` set over it.
    pub over: Vec<Layer>,
}

impl Layer {
    /// `value` at `key`, with nothing over it.
    pub fn new(key: &str, value: Arc<Value>) -> Self {
        Self {
            key: key.to_owned(),
            value,
            over: Vec::new(),
        }
    }

    /// The layer as plain JSON: its own layers first, then the keys of its
    /// value they do not set (a trigger reads `kind`, `user`, then its details).
    pub(super) fn to_json(&self) -> Value {
        if self.over.is_empty() {
            return (*self.value).clone();
        }
        let mut m = serde_json::Map::new();
        for l in &self.over {
            m.insert(l.key.clone(), l.to_json());
        }
        if let Value::Object(own) = &*self.value {
            for (k, v) in own {
                m.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        Value::Object(m)
    }
}

/// `value` with `layers` set over it, leaving out the key `without`.
pub(super) fn merged(value: &Value, layers: &[Layer], without: Option<&str>) -> Value {
    if layers.is_empty() && without.is_none_or(|k| value.get(k).is_none()) {
        return value.clone();
    }
    let mut m = match value {
        Value::Object(m) => m.clone(),
        _ => serde_json::Map::new(),
    };
    if let Some(k) = without {
        m.shift_remove(k);
    }
    for l in layers {
        if Some(l.key.as_str()) != without {
            m.insert(l.key.clone(), l.to_json());
        }
    }
    Value::Object(m)
}

/// An object or array inside `root`, reached by `path`.
#[derive(Debug)]
pub(super) struct JsonView {
    root: Arc<Value>,
    path: Vec<Step>,
    /// Keys of the root object set over it (see [`Layer`]).
    layers: Option<Arc<[Layer]>>,
}

impl JsonView {
    /// The template value of `root`; `layers` set keys of a root object (a
    /// root that is not an object is then an empty one under them).
    pub(super) fn root(root: Arc<Value>, layers: Vec<Layer>) -> JinjaValue {
        let layers: Option<Arc<[Layer]>> = (!layers.is_empty()).then(|| layers.into());
        let root = match (&*root, &layers) {
            (Value::Object(_) | Value::Array(_), None) | (Value::Object(_), Some(_)) => root,
            (_, Some(_)) => Arc::new(Value::Object(serde_json::Map::new())),
            (other, None) => return scalar(other),
        };
        JinjaValue::from_object(Self {
            root,
            path: Vec::new(),
            layers,
        })
    }

    /// The JSON this view shows (its layers aside).
    fn target(&self) -> &Value {
        let mut v = &*self.root;
        for step in &self.path {
            v = match (step, v) {
                (Step::Key(k), Value::Object(m)) => m.get(&**k).unwrap_or(&Value::Null),
                (Step::Index(i), Value::Array(a)) => a.get(*i).unwrap_or(&Value::Null),
                _ => &Value::Null,
            };
        }
        v
    }

    /// The template value of the child at `step`, which holds `value`.
    fn child(&self, step: Step, value: &Value) -> JinjaValue {
        match value {
            Value::Object(_) | Value::Array(_) => {
                let mut path = Vec::with_capacity(self.path.len() + 1);
                path.extend(self.path.iter().cloned());
                path.push(step);
                JinjaValue::from_object(Self {
                    root: Arc::clone(&self.root),
                    path,
                    layers: None,
                })
            }
            other => scalar(other),
        }
    }

    /// The layers, when this view is the root object they apply to.
    fn layers(&self) -> &[Layer] {
        match &self.layers {
            Some(l) if self.path.is_empty() => l,
            _ => &[],
        }
    }

    /// The layer at `key`, if one is set there.
    fn layer(&self, key: &str) -> Option<&Layer> {
        self.layers().iter().find(|l| l.key == key)
    }

    /// The keys of an object, sorted as a converted map's would be.
    fn keys(&self) -> Vec<String> {
        let Value::Object(m) = self.target() else {
            return Vec::new();
        };
        let mut keys: Vec<String> = m.keys().cloned().collect();
        for l in self.layers() {
            if !m.contains_key(&l.key) {
                keys.push(l.key.clone());
            }
        }
        keys.sort_unstable();
        keys
    }

    /// The JSON this root view shows, its layers merged in, without the layer at `without`.
    pub(super) fn to_json_without(&self, without: &str) -> Value {
        merged(self.target(), self.layers(), Some(without))
    }
}

impl JsonView {
    /// The scalar (null, bool, number or string) at `path` from this root
    /// view, its layers honoured, when every step is a key of an object.
    /// `None` for anything else (a missing key, an array step, a container
    /// result): the caller then evaluates the full expression, whose errors
    /// and conversions stay minijinja's. A scalar reads the same either way.
    pub(super) fn scalar_at(&self, path: &[&str]) -> Option<Value> {
        if path.is_empty() {
            return None;
        }
        let mut layers = self.layers();
        let mut v = self.target();
        for key in path {
            if let Some(layer) = layers.iter().find(|l| l.key == *key) {
                layers = &layer.over;
                v = &layer.value;
                continue;
            }
            // Layers set keys of one object only; below it is plain JSON.
            layers = &[];
            v = match v {
                Value::Object(m) => m.get(*key)?,
                _ => return None,
            };
        }
        if !layers.is_empty() {
            // An object with layers over it: a container.
            return None;
        }
        match v {
            Value::Array(_) | Value::Object(_) => None,
            scalar => Some(scalar.clone()),
        }
    }
}

impl Object for JsonView {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        match self.target() {
            Value::Array(_) => ObjectRepr::Seq,
            _ => ObjectRepr::Map,
        }
    }

    fn get_value(self: &Arc<Self>, key: &JinjaValue) -> Option<JinjaValue> {
        match self.target() {
            Value::Object(_) => self.get_value_by_str(key.as_str()?),
            Value::Array(a) => {
                let i = usize::try_from(key.as_i64()?).ok()?;
                Some(self.child(Step::Index(i), a.get(i)?))
            }
            _ => None,
        }
    }

    fn get_value_by_str(self: &Arc<Self>, key: &str) -> Option<JinjaValue> {
        if let Some(layer) = self.layer(key) {
            return Some(Self::root(Arc::clone(&layer.value), layer.over.clone()));
        }
        let Value::Object(m) = self.target() else {
            return None;
        };
        let value = m.get(key)?;
        Some(self.child(Step::Key(Arc::from(key)), value))
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        match self.target() {
            Value::Array(a) => Enumerator::Seq(a.len()),
            Value::Object(_) => {
                Enumerator::Values(self.keys().into_iter().map(JinjaValue::from).collect())
            }
            _ => Enumerator::Empty,
        }
    }

    fn enumerator_len(self: &Arc<Self>) -> Option<usize> {
        match self.target() {
            Value::Array(a) => Some(a.len()),
            Value::Object(m) => Some(
                m.len()
                    + self
                        .layers()
                        .iter()
                        .filter(|l| !m.contains_key(&l.key))
                        .count(),
            ),
            _ => Some(0),
        }
    }
}

/// The template value of a JSON scalar, as converting it with `Serde` makes it.
fn scalar(value: &Value) -> JinjaValue {
    match value {
        Value::Null => JinjaValue::from(()),
        Value::Bool(b) => JinjaValue::from(*b),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                JinjaValue::from(u)
            } else if let Some(i) = n.as_i64() {
                JinjaValue::from(i)
            } else {
                JinjaValue::from(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Value::String(s) => JinjaValue::from(s.as_str()),
        // Containers are views (see `JsonView::child`); never reached.
        Value::Array(_) | Value::Object(_) => JinjaValue::from(minijinja::value::Serde(value)),
    }
}
