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

/// An object or array inside `root`, reached by `path`.
#[derive(Debug)]
pub(super) struct JsonView {
    root: Arc<Value>,
    path: Vec<Step>,
    /// A key of the root object replaced by another value (the secrets, which
    /// are kept apart from the context that plugins receive).
    overlay: Option<Arc<(String, Arc<Value>)>>,
}

impl JsonView {
    /// The template value of `root`; `overlay` sets one key of a root object.
    pub(super) fn root(root: Arc<Value>, overlay: Option<(String, Arc<Value>)>) -> JinjaValue {
        let overlay = overlay.map(Arc::new);
        match (&*root, overlay) {
            (Value::Object(_), overlay) => JinjaValue::from_object(Self {
                root,
                path: Vec::new(),
                overlay,
            }),
            (Value::Array(_), None) => JinjaValue::from_object(Self {
                root,
                path: Vec::new(),
                overlay: None,
            }),
            (other, _) => scalar(other),
        }
    }

    /// The JSON this view shows (the overlay aside).
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
                    overlay: None,
                })
            }
            other => scalar(other),
        }
    }

    /// The overlay, when this view is the root object it applies to.
    fn overlay(&self) -> Option<&(String, Arc<Value>)> {
        if self.path.is_empty() {
            self.overlay.as_deref()
        } else {
            None
        }
    }

    /// The keys of an object, sorted as a converted map's would be.
    fn keys(&self) -> Vec<String> {
        let Value::Object(m) = self.target() else {
            return Vec::new();
        };
        let mut keys: Vec<String> = m.keys().cloned().collect();
        if let Some((k, _)) = self.overlay()
            && !m.contains_key(k)
        {
            keys.push(k.clone());
        }
        keys.sort_unstable();
        keys
    }
}

impl JsonView {
    /// The scalar (null, bool, number or string) at `path` from this root
    /// view, the overlay honoured, when every step is a key of an object.
    /// `None` for anything else (a missing key, an array step, a container
    /// result): the caller then evaluates the full expression, whose errors
    /// and conversions stay minijinja's. A scalar reads the same either way.
    pub(super) fn scalar_at(&self, path: &[&str]) -> Option<Value> {
        let (first, rest) = path.split_first()?;
        let mut v = match self.overlay() {
            Some((k, extra)) if k == first => &**extra,
            _ => match self.target() {
                Value::Object(m) => m.get(*first)?,
                _ => return None,
            },
        };
        for key in rest {
            v = match v {
                Value::Object(m) => m.get(*key)?,
                _ => return None,
            };
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
        if let Some((k, extra)) = self.overlay()
            && k == key
        {
            return Some(Self::root(Arc::clone(extra), None));
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
            Value::Object(m) => {
                Some(m.len() + usize::from(self.overlay().is_some_and(|(k, _)| !m.contains_key(k))))
            }
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
